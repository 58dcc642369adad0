//! What `tail` prints, and the broken-pipe rule.

use std::io;

use serde_json::{Map, Value};

/// Fields every record carries, left out of the readable line's
/// `key=value` tail (the line shows timestamp, level, logger and message).
const STANDARD_FIELDS: &[&str] = &[
    "@timestamp",
    "@version",
    "message",
    "host",
    "tags",
    "type",
    "seq",
    "levelname",
    "logger",
    "stack_info",
    "process",
    "threadName",
    "pathname",
    "lineno",
    "module",
    "record_id",
];

/// Marks a message body that is not JSON, printed as it is.
pub(crate) const NOT_JSON_MARKER: &str = "[not JSON]";
/// Marks a JSON value that is not an object, printed as it is.
const NOT_OBJECT_MARKER: &str = "[not a JSON object]";

/// Whether `err` comes from writing to a closed pipe: the reader has seen
/// enough (`tail | head -1`), which is success.
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// One piece of output made from a message body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rendered {
    /// A record's line for standard output; counts towards `--count`.
    Record(String),
    /// A note for standard error (a body `--json` cannot print as JSON).
    Note(String),
}

/// Turns one message body into output lines: one per record, so a batch (a
/// JSON array of records) gives several. With `json`, each record is its
/// JSON text on one line; otherwise a readable line.
pub(crate) fn render(body: &[u8], json: bool) -> Vec<Rendered> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim_end_matches(['\r', '\n']);
            return vec![if json {
                // Standard output stays one JSON value per line.
                Rendered::Note(format!(
                    "skipped a message that is not JSON ({} bytes): {text}",
                    body.len()
                ))
            } else {
                Rendered::Record(format!("{NOT_JSON_MARKER} {text}"))
            }];
        }
    };
    match value {
        Value::Array(items) => items.iter().map(|v| render_value(v, None, json)).collect(),
        v => vec![render_value(&v, Some(body), json)],
    }
}

/// `raw` is the body `v` was parsed from, printed as it is with `--json`
/// when it fits on one line (keeping the sender's field order).
fn render_value(v: &Value, raw: Option<&[u8]>, json: bool) -> Rendered {
    if json {
        let raw = raw
            .and_then(|r| std::str::from_utf8(r).ok())
            .map(str::trim)
            .filter(|r| !r.contains(['\n', '\r']));
        return Rendered::Record(match raw {
            Some(r) => r.to_owned(),
            None => v.to_string(),
        });
    }
    Rendered::Record(match v {
        Value::Object(obj) => readable(obj),
        other => format!("{NOT_OBJECT_MARKER} {other}"),
    })
}

/// `<@timestamp> <LEVELNAME padded to 8> <logger>: <message> key=value…`,
/// with every non-standard field as `key=value` (keys in sorted order).
pub(crate) fn readable(obj: &Map<String, Value>) -> String {
    let text = |key: &str| match obj.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(v) => v.to_string(),
    };
    let message = match obj.get("message") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    let mut line = format!(
        "{} {:<8} {}: {message}",
        text("@timestamp"),
        text("levelname"),
        text("logger"),
    );
    for (key, value) in obj {
        if STANDARD_FIELDS.contains(&key.as_str()) {
            continue;
        }
        line.push(' ');
        line.push_str(key);
        line.push('=');
        line.push_str(&field_value(value));
    }
    line
}

/// A string as it is when that reads back unambiguously, else JSON-quoted
/// (so spaces, quotes and newlines cannot break the line); other values as
/// compact JSON.
fn field_value(value: &Value) -> String {
    match value {
        Value::String(s)
            if !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=') =>
        {
            s.clone()
        }
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    fn record(line: &str) -> Rendered {
        Rendered::Record(line.to_owned())
    }

    #[test]
    fn broken_pipe_is_found_through_context() {
        let pipe = io::Error::new(io::ErrorKind::BrokenPipe, "closed");
        let err = anyhow::Error::new(pipe).context("writing a record");
        assert!(is_broken_pipe(&err));
        let wrapped: anyhow::Result<()> =
            Err(io::Error::from(io::ErrorKind::BrokenPipe)).context("outer");
        assert!(is_broken_pipe(&wrapped.unwrap_err()));
        let other = anyhow::Error::new(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!is_broken_pipe(&other));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe")));
    }

    #[test]
    fn broken_pipe_from_a_real_pipe() {
        use std::io::Write as _;
        // A child whose stdin we hold; once it exits, writing gets EPIPE
        // (Rust ignores SIGPIPE, so the write returns an error).
        let mut child = std::process::Command::new("true")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        child.wait().unwrap();
        let err = stdin
            .write_all(b"line\n")
            .and_then(|()| stdin.flush())
            .unwrap_err();
        assert!(is_broken_pipe(&anyhow::Error::new(err).context("printing")));
    }

    #[test]
    fn readable_line() {
        let body = br#"{"@timestamp":"2024-05-01T12:00:00.000001Z","@version":"1","message":"disk full",
            "host":"h","tags":[],"type":"Logstash","seq":0,"levelname":"WARNING","logger":"app.db",
            "stack_info":null,"process":12,"threadName":"main","pathname":"a.rs","lineno":3,
            "module":"app::db","record_id":"0190","user":"ann","n":42,"ok":true,"why":"no space left",
            "list":[1,2]}"#;
        assert_eq!(
            render(body, false),
            [record(
                "2024-05-01T12:00:00.000001Z WARNING  app.db: disk full \
                 list=[1,2] n=42 ok=true user=ann why=\"no space left\""
            )]
        );
    }

    #[test]
    fn readable_with_missing_fields() {
        let body = br#"{"message":"hi"}"#;
        assert_eq!(render(body, false), [record("- -        -: hi")]);
        let body = br#"{"levelname":"INFO","logger":"x","message":"a\nb","k":""}"#;
        assert_eq!(render(body, false), [record("- INFO     x: a\nb k=\"\"")]);
    }

    #[test]
    fn json_keeps_the_raw_body() {
        let body = b"{\"message\":\"hi\",\"a\":1}\n";
        assert_eq!(render(body, true), [record("{\"message\":\"hi\",\"a\":1}")]);
        // A body on several lines is written compactly, so one record stays one line.
        let body = b"{\n \"message\": \"hi\"\n}";
        assert_eq!(render(body, true), [record("{\"message\":\"hi\"}")]);
    }

    #[test]
    fn batches_give_one_line_per_record() {
        let body = br#"[{"message":"a","levelname":"INFO","logger":"l"},{"message":"b","levelname":"INFO","logger":"l"}]"#;
        assert_eq!(
            render(body, true),
            [
                record(r#"{"levelname":"INFO","logger":"l","message":"a"}"#),
                record(r#"{"levelname":"INFO","logger":"l","message":"b"}"#)
            ]
        );
        assert_eq!(
            render(body, false),
            [record("- INFO     l: a"), record("- INFO     l: b")]
        );
    }

    #[test]
    fn non_json_bodies() {
        assert_eq!(
            render(b"plain text\n", false),
            [record("[not JSON] plain text")]
        );
        assert_eq!(
            render(b"plain\xfftext", false),
            [record("[not JSON] plain\u{fffd}text")]
        );
        assert_eq!(
            render(b"plain text", true),
            [Rendered::Note(
                "skipped a message that is not JSON (10 bytes): plain text".to_owned()
            )]
        );
        assert_eq!(render(b"42", false), [record("[not a JSON object] 42")]);
        assert_eq!(render(b"42", true), [record("42")]);
    }
}
