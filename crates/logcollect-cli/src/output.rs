//! What `tail` prints, and the broken-pipe rule.

use std::borrow::Cow;
use std::io;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::select::{level_of, text_of};
use crate::style::{self, Paint, Style};

/// Fields every record carries, left out of the readable line's
/// `key=value` tail (the line shows timestamp, level, logger and message).
use logcollect::RECORD_FIELDS as STANDARD_FIELDS;

/// The fields of an ECS record's frame (what the library's ECS profile
/// writes of its own), left out of the readable line as [`STANDARD_FIELDS`]
/// are for flat records; dotted paths into the nested objects.
const ECS_FRAME_FIELDS: &[&str] = &[
    "@timestamp",
    "message",
    "log.level",
    "log.logger",
    "log.origin.file.name",
    "log.origin.file.line",
    "ecs.version",
    "host.hostname",
    "host.name",
    "tags",
    "event.sequence",
    "event.id",
    "event.dataset",
    "data_stream.dataset",
    "process.pid",
    "process.thread.name",
];

/// Marks a message body that is not JSON, printed as it is.
pub(crate) const NOT_JSON_MARKER: &str = "[not JSON]";
/// Marks a JSON value that is not an object, printed as it is.
const NOT_OBJECT_MARKER: &str = "[not a JSON object]";
/// `LEVELNAME` column width: `CRITICAL`.
const LEVEL_WIDTH: usize = 8;
/// The identity and logger columns grow to the widest value seen so far, up
/// to this: one very long logger name should not push every later line far
/// to the right (a longer value still prints whole, unaligned).
const MAX_COLUMN: usize = 40;

/// Whether `err` comes from writing to a closed pipe: the reader has seen
/// enough (`tail | head -1`), which is success.
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// One record (or what stands for one) out of a message body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// A JSON object, and its text on one line: as the sender wrote it when
    /// that fits on one line, else compacted.
    Record {
        record: Map<String, Value>,
        raw: String,
    },
    /// JSON that is not an object (a number, a string…), compacted.
    NotObject(String),
    /// A body that is neither JSON nor JSON lines, as (lossy UTF-8) text.
    NotJson(String),
}

/// Splits a message body into records: one JSON value; a batch as a JSON
/// array (one item per element); or a batch as JSON lines (one per
/// non-empty line, for the `json_lines` batch format).
pub(crate) fn split(body: &[u8]) -> Vec<Item> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(values)) => {
            // Parsed again as raw elements, so each prints as it was sent.
            let raws: Vec<&RawValue> = serde_json::from_slice(body).unwrap_or_default();
            let raws = raws.iter().map(|r| Some(r.get()));
            values
                .into_iter()
                .zip(raws.chain(std::iter::repeat(None)))
                .map(|(v, raw)| item(v, raw))
                .collect()
        }
        Ok(v) => vec![item(v, std::str::from_utf8(body).ok())],
        Err(_) => json_lines(body).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            vec![Item::NotJson(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            )]
        }),
    }
}

/// Every non-empty line a JSON value, at least one; else `None`.
fn json_lines(body: &[u8]) -> Option<Vec<Item>> {
    let text = std::str::from_utf8(body).ok()?;
    let items: Option<Vec<Item>> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).ok().map(|v| item(v, Some(line))))
        .collect();
    items.filter(|items| !items.is_empty())
}

fn item(v: Value, raw: Option<&str>) -> Item {
    let raw = raw
        .map(str::trim)
        .filter(|r| !r.contains(['\n', '\r']))
        .map_or_else(|| v.to_string(), str::to_owned);
    match v {
        Value::Object(record) => Item::Record { record, raw },
        _ => Item::NotObject(raw),
    }
}

/// Readable lines, aligned:
/// `<@timestamp> <LEVEL> [<identity>] <logger>: <message> key=value…`
///
/// The identity column (the values of the identity keys, `/`-separated)
/// appears once a record has one; identity and logger columns widen to the
/// widest value seen so far.
#[derive(Debug)]
pub(crate) struct Layout {
    style: Style,
    identity_keys: Vec<String>,
    identity_width: usize,
    logger_width: usize,
}

impl Layout {
    pub(crate) fn new(style: Style, identity_keys: Vec<String>) -> Layout {
        Layout {
            style,
            identity_keys,
            identity_width: 0,
            logger_width: 0,
        }
    }

    /// The readable line of one item (never more than one line: control
    /// characters in the text are escaped).
    pub(crate) fn line(&mut self, item: &Item) -> String {
        match item {
            Item::Record { record, .. } => self.record(record),
            Item::NotObject(text) => {
                format!(
                    "{} {text}",
                    self.style.paint(style::YELLOW, NOT_OBJECT_MARKER)
                )
            }
            Item::NotJson(text) => format!(
                "{} {}",
                self.style.paint(style::YELLOW, NOT_JSON_MARKER),
                one_line(text)
            ),
        }
    }

    fn record(&mut self, record: &Map<String, Value>) -> String {
        let style = self.style;
        let ecs = is_ecs(record);
        let timestamp = text_of(record, &["@timestamp"]).unwrap_or_else(|| "-".to_owned());
        let level = match (ecs, level_of(record)) {
            // ECS says `warn` where Python says `WARNING`: one spelling, so
            // that a mixed stream reads (and aligns) alike.
            (true, Some(level)) => level.to_string(),
            _ => text_of(record, &["levelname", "log.level"])
                .map_or_else(|| "-".to_owned(), |l| one_line(&l).to_uppercase()),
        };
        let logger = text_of(record, &["logger", "log.logger"])
            .map_or_else(|| "-".to_owned(), |l| one_line(&l).into_owned());
        let message = match record.get("message") {
            Some(Value::String(s)) => one_line(s).into_owned(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        };
        // Which fields the identity column shows: for ECS, where the
        // library puts the identity (`labels.<key>`, the service key as
        // `service.name`).
        let mut shown: Vec<String> = Vec::new();
        let identity: Vec<String> = self
            .identity_keys
            .iter()
            .filter_map(|k| {
                let (path, value) = identity_value(record, k, ecs)?;
                shown.push(path);
                Some(value)
            })
            .map(|v| one_line(&crate::select::value_text(v)).into_owned())
            .collect();

        let mut line = style.paint(style::DIM, &timestamp);
        line.push(' ');
        line.push_str(&style.paint(level_paint(record), &level));
        line.push_str(&pad(&level, LEVEL_WIDTH));
        if !identity.is_empty() || self.identity_width > 0 {
            let identity = if identity.is_empty() {
                "-".to_owned()
            } else {
                identity.join("/")
            };
            self.identity_width = grow(self.identity_width, &identity);
            line.push(' ');
            line.push_str(&style.paint(style::CYAN, &identity));
            line.push_str(&pad(&identity, self.identity_width));
        }
        self.logger_width = grow(self.logger_width, &logger);
        line.push(' ');
        line.push_str(&style.paint(style::BOLD, &logger));
        line.push(':');
        line.push_str(&pad(&logger, self.logger_width));
        line.push(' ');
        line.push_str(&message);
        let mut fields = Vec::new();
        if ecs {
            // Nested objects as dotted keys (`http.request.method=GET`),
            // the frame and the identity left out.
            flatten("", record, &mut fields);
            fields.retain(|(key, _)| {
                !ECS_FRAME_FIELDS.contains(&key.as_str()) && !shown.contains(key)
            });
        } else {
            fields.extend(
                record
                    .iter()
                    .filter(|(key, _)| {
                        !STANDARD_FIELDS.contains(&key.as_str())
                            && !self.identity_keys.contains(*key)
                    })
                    .map(|(key, value)| (key.clone(), value)),
            );
        }
        for (key, value) in fields {
            line.push(' ');
            line.push_str(&style.paint(style::DIM, &format!("{}=", one_line(&key))));
            line.push_str(&field_value(value));
        }
        line
    }
}

/// Whether `record` is in the ECS layout (the library's ECS profile, or
/// any ECS logger): it declares `ecs.version`.
fn is_ecs(record: &Map<String, Value>) -> bool {
    matches!(record.get("ecs"), Some(Value::Object(ecs)) if ecs.contains_key("version"))
}

/// The identity value of `key` and the field path it came from: the
/// top-level key; in an ECS record also `labels.<key>`, and `service.name`
/// for the key the library makes the service (`application` by default).
fn identity_value<'a>(
    record: &'a Map<String, Value>,
    key: &str,
    ecs: bool,
) -> Option<(String, &'a Value)> {
    if let Some(v) = record.get(key) {
        return Some((key.to_owned(), v));
    }
    if !ecs {
        return None;
    }
    let label = format!("labels.{key}");
    if let Some(v) = crate::select::lookup(record, &label) {
        return Some((label, v));
    }
    if key == logcollect::DEFAULT_ECS_SERVICE_KEY {
        if let Some(v) = crate::select::lookup(record, "service.name") {
            return Some(("service.name".to_owned(), v));
        }
    }
    None
}

/// Every leaf of `map` with its dotted path, in order; an empty object is
/// a leaf of its own (`{}`), arrays are leaves.
fn flatten<'a>(prefix: &str, map: &'a Map<String, Value>, out: &mut Vec<(String, &'a Value)>) {
    for (key, value) in map {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten(&path, inner, out),
            _ => out.push((path, value)),
        }
    }
}

fn level_paint(record: &Map<String, Value>) -> Paint {
    use logcollect::Level;
    match level_of(record) {
        Some(Level::Trace) => style::DIM,
        Some(Level::Debug) => style::BLUE,
        Some(Level::Info) => style::GREEN,
        Some(Level::Warning) => style::YELLOW,
        Some(Level::Error) => style::RED,
        Some(Level::Critical) => style::BOLD_RED,
        None => style::BOLD,
    }
}

/// The new width of a column that just showed `text`.
fn grow(width: usize, text: &str) -> usize {
    width.max(text.chars().count().min(MAX_COLUMN))
}

/// Spaces that bring `text` to `width` characters.
fn pad(text: &str, width: usize) -> String {
    " ".repeat(width.saturating_sub(text.chars().count()))
}

/// `text` with line breaks and other control characters (a tab excepted)
/// escaped, so one record stays one line and cannot drive the terminal.
fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
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

    fn lines(body: &[u8]) -> Vec<String> {
        let mut layout = Layout::new(Style::new(false), vec![]);
        split(body).iter().map(|i| layout.line(i)).collect()
    }

    fn raws(body: &[u8]) -> Vec<String> {
        split(body)
            .into_iter()
            .map(|i| match i {
                Item::Record { raw, .. } | Item::NotObject(raw) => raw,
                Item::NotJson(text) => format!("NOT JSON {text}"),
            })
            .collect()
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
            lines(body),
            ["2024-05-01T12:00:00.000001Z WARNING  app.db: disk full \
              list=[1,2] n=42 ok=true user=ann why=\"no space left\""]
        );
    }

    #[test]
    fn readable_with_missing_fields_and_control_characters() {
        assert_eq!(lines(br#"{"message":"hi"}"#), ["- -        -: hi"]);
        let body = br#"{"levelname":"INFO","logger":"x","message":"a\nb\u001b[31m","k":""}"#;
        assert_eq!(lines(body), ["- INFO     x: a\\nb\\u{1b}[31m k=\"\""]);
    }

    #[test]
    fn columns_align_and_identity_shows() {
        let mut layout = Layout::new(
            Style::new(false),
            vec!["project".into(), "application".into()],
        );
        let mut line = |body: &[u8]| layout.line(&split(body)[0]);
        assert_eq!(
            line(br#"{"levelname":"INFO","logger":"a","message":"one"}"#),
            "- INFO     a: one"
        );
        assert_eq!(
            line(br#"{"levelname":"ERROR","logger":"abc","message":"two"}"#),
            "- ERROR    abc: two"
        );
        assert_eq!(
            line(br#"{"levelname":"INFO","logger":"a","message":"three"}"#),
            "- INFO     a:   three"
        );
        assert_eq!(
            line(
                br#"{"levelname":"INFO","logger":"a","message":"four","project":"gh","application":"api","x":1}"#
            ),
            "- INFO     gh/api a:   four x=1"
        );
        assert_eq!(
            line(br#"{"levelname":"INFO","logger":"abcd","message":"five"}"#),
            "- INFO     -      abcd: five"
        );
    }

    #[test]
    fn colours() {
        let mut layout = Layout::new(Style::new(true), vec![]);
        let line =
            layout.line(&split(br#"{"levelname":"ERROR","logger":"l","message":"m","k":1}"#)[0]);
        assert_eq!(
            line,
            "\x1b[2m-\x1b[0m \x1b[31mERROR\x1b[0m    \x1b[1ml\x1b[0m: m \x1b[2mk=\x1b[0m1"
        );
    }

    #[test]
    fn ecs_level_and_logger() {
        let body = br#"{"@timestamp":"t","log":{"level":"warn","logger":"app"},"message":"m"}"#;
        assert_eq!(
            lines(body),
            [r#"t WARN     app: m log={"level":"warn","logger":"app"}"#]
        );
    }

    #[test]
    fn ecs_records_read_like_flat_ones() {
        let body = br#"{"@timestamp":"2024-05-01T12:00:00.000001Z",
            "log":{"level":"warn","logger":"app.db","origin":{"file":{"name":"a.rs","line":3}}},
            "ecs":{"version":"8.11.0"},"host":{"hostname":"h","name":"h"},
            "service":{"name":"api"},"labels":{"project":"gh","team":"ops"},
            "data_stream":{"dataset":"api.log"},"tags":[],
            "event":{"dataset":"api.log","sequence":1,"id":"0190"},
            "process":{"pid":12,"thread":{"name":"main"}},"message":"disk full",
            "http":{"request":{"method":"GET"}},"extra":{"user":"ann"},"n":1}"#;
        let mut layout = Layout::new(
            Style::new(false),
            vec!["project".into(), "application".into()],
        );
        assert_eq!(
            layout.line(&split(body)[0]),
            "2024-05-01T12:00:00.000001Z WARNING  gh/api app.db: disk full \
             extra.user=ann http.request.method=GET labels.team=ops n=1"
        );
        // The same record in the flat profile reads the same way.
        let flat = br#"{"@timestamp":"2024-05-01T12:00:00.000001Z","@version":1,
            "message":"disk full","host":"h","tags":[],"type":"Logstash","seq":1,
            "levelname":"WARNING","logger":"app.db","stack_info":null,"process":12,
            "threadName":"main","pathname":"a.rs","lineno":3,"module":null,"record_id":"0190",
            "project":"gh","application":"api","team":"ops","http":"GET","user":"ann","n":1}"#;
        assert_eq!(
            layout.line(&split(flat)[0]),
            "2024-05-01T12:00:00.000001Z WARNING  gh/api app.db: disk full \
             http=GET n=1 team=ops user=ann"
        );
    }

    #[test]
    fn raw_text_is_kept() {
        assert_eq!(
            raws(b"{\"message\":\"hi\",\"a\":1}\n"),
            ["{\"message\":\"hi\",\"a\":1}"]
        );
        // A body on several lines is written compactly, so one record stays one line.
        assert_eq!(
            raws(b"{\n \"message\": \"hi\"\n}"),
            ["{\"message\":\"hi\"}"]
        );
    }

    #[test]
    fn batches_give_one_item_per_record() {
        let body = br#"[{"message":"a","levelname":"INFO","logger":"l"},
                        {"message":"b","levelname":"INFO","logger":"l"}]"#;
        assert_eq!(
            raws(body),
            [
                r#"{"message":"a","levelname":"INFO","logger":"l"}"#,
                r#"{"message":"b","levelname":"INFO","logger":"l"}"#
            ]
        );
        assert_eq!(lines(body), ["- INFO     l: a", "- INFO     l: b"]);
        let lines_body =
            b"{\"message\":\"a\",\"logger\":\"l\"}\n{\"message\":\"b\",\"logger\":\"l\"}\n";
        assert_eq!(
            raws(lines_body),
            [
                r#"{"message":"a","logger":"l"}"#,
                r#"{"message":"b","logger":"l"}"#
            ]
        );
        assert_eq!(lines(lines_body), ["- -        l: a", "- -        l: b"]);
    }

    #[test]
    fn non_json_bodies() {
        assert_eq!(lines(b"plain text\n"), ["[not JSON] plain text"]);
        assert_eq!(lines(b"plain\xfftext"), ["[not JSON] plain\u{fffd}text"]);
        assert_eq!(lines(b"two\nlines"), ["[not JSON] two\\nlines"]);
        assert_eq!(
            lines(b"{\"a\":1}\nnot json\n"),
            ["[not JSON] {\"a\":1}\\nnot json"]
        );
        assert_eq!(lines(b"42"), ["[not a JSON object] 42"]);
        assert_eq!(raws(b"42"), ["42"]);
        assert_eq!(raws(b"plain"), ["NOT JSON plain"]);
    }
}
