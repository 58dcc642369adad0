//! `logcollect send`'s inputs against the real RabbitMQ on 127.0.0.1:5672:
//! typed and untyped `--field`s, `--json` lines (a bad line skipped or
//! fatal), and `--file --follow` across rotation, truncation and a restart.
//!
//! Each test binds its own queue to its own exchange (Logstash's part) and
//! reads what arrives there, in order: one publisher's records arrive in the
//! order they were sent, so a resent or missing line shows in the sequence.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

/// An exchange with a queue bound to `rk.#`, consumed.
struct Bound {
    exchange: String,
    consumer: Consumer,
    _names: Cleanup,
}

impl Bound {
    fn new(prefix: &str) -> Bound {
        let mut names = Cleanup::default();
        let exchange = names.exchange(prefix);
        let queue = names.queue(&format!("{prefix}-q"));
        declare_exchange(&exchange, lapin::ExchangeKind::Topic, false);
        declare_queue(&queue, true, false);
        with_channel(async |ch| {
            ch.queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "rk.#".into(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        });
        Bound {
            exchange,
            consumer: Consumer::start(&queue),
            _names: names,
        }
    }

    /// The next record, or a failed test after `WAIT`.
    fn next(&self, what: &str) -> serde_json::Value {
        self.consumer
            .bodies
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no record ({what}) within {WAIT:?}"))
    }

    /// The messages of the next `n` records.
    fn messages(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.next(&format!("{i} of {n}"))["message"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// `send` to this exchange with `args` and `stdin`.
    fn send(&self, args: &[&str], stdin: &str) -> Finished {
        let mut all = vec!["send", "--exchange", &self.exchange, "--routing-key", "rk"];
        all.extend_from_slice(args);
        run(logcollect(&all), stdin)
    }
}

#[test]
fn field_values_are_strings_unless_typed() {
    let bound = Bound::new("send-fields");
    let sent = bound.send(
        &[
            "--field",
            "version=1.10",
            "--field",
            "zip=01234",
            "--field",
            "flag=true",
            "--field",
            "n:=3",
            "--field",
            "ratio:=1.10",
            "--field",
            r#"list:=[1,"a",null]"#,
            "--field",
            r#"obj:={"k":false}"#,
            "typed",
        ],
        "",
    );
    assert!(sent.status.success(), "send: {}", sent.stderr);
    let r = bound.next("the record");
    assert_eq!(r["version"], "1.10", "{r}");
    assert_eq!(r["zip"], "01234", "{r}");
    assert_eq!(r["flag"], "true", "{r}");
    assert_eq!(r["n"], 3, "{r}");
    assert_eq!(r["ratio"], 1.1, "{r}");
    assert_eq!(r["list"], serde_json::json!([1, "a", null]), "{r}");
    assert_eq!(r["obj"], serde_json::json!({"k": false}), "{r}");

    let bad = bound.send(&["--field", "n:=three", "x"], "");
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("is not JSON"), "{}", bad.stderr);
}

const JSON_INPUT: &str = r#"{"message":"one","level":"warning","logger":"app::db","n":1}

not json
{"message":"three","user":{"id":7},"tags2":["x"]}
"#;

#[test]
fn json_lines_with_a_bad_line_skipped() {
    let bound = Bound::new("send-json-skip");
    let sent = bound.send(
        &["--json", "--bad-lines", "skip", "--field", "job=nightly"],
        JSON_INPUT,
    );
    assert!(sent.status.success(), "send: {}", sent.stderr);
    assert!(
        sent.stderr.contains("logcollect send: line 3: not JSON (")
            && sent.stderr.contains("); skipped: not json\n"),
        "{}",
        sent.stderr
    );
    let one = bound.next("one");
    assert_eq!(one["message"], "one");
    assert_eq!(one["levelname"], "WARNING");
    assert_eq!(one["logger"], "app::db");
    assert_eq!(one["n"], 1);
    assert_eq!(one["job"], "nightly");
    let three = bound.next("three");
    assert_eq!(three["message"], "three");
    assert_eq!(three["levelname"], "INFO");
    assert_eq!(three["logger"], "cli");
    assert_eq!(three["user"], serde_json::json!({"id": 7}));
    assert_eq!(three["tags2"], serde_json::json!(["x"]));
}

#[test]
fn json_lines_stop_at_a_bad_line_by_default() {
    let bound = Bound::new("send-json-fail");
    let sent = bound.send(&["--json"], JSON_INPUT);
    assert_eq!(sent.status.code(), Some(1), "{}", sent.stderr);
    assert!(sent.stderr.contains("line 3: not JSON"), "{}", sent.stderr);
    assert!(
        sent.stderr.contains("lines before it were sent"),
        "{}",
        sent.stderr
    );
    // The line before it arrived; the one after it never did: the next
    // record is the marker sent afterwards.
    let marker = bound.send(&["marker"], "");
    assert!(marker.status.success(), "{}", marker.stderr);
    assert_eq!(bound.messages(2), ["one", "marker"]);
}

/// A fresh directory for one test's files, under the system's temporary
/// directory (nothing outside it is touched).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// `send --file PATH --follow --position-file POS` to `bound`, running.
fn follow(bound: &Bound, path: &Path, pos: &Path) -> Child {
    logcollect(&[
        "send",
        "--exchange",
        &bound.exchange,
        "--routing-key",
        "rk",
        "--file",
        path.to_str().unwrap(),
        "--follow",
        "--position-file",
        pos.to_str().unwrap(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

/// Stops a following send the way a service manager does (SIGTERM) and
/// returns its standard error once it has exited 0.
fn stop(mut child: Child) -> String {
    let stderr = read_all(child.stderr.take().unwrap());
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_exit(&mut child, WAIT, "send --follow");
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "send --follow: {status}; stderr {stderr}");
    stderr
}

#[test]
fn follow_across_rotation_truncation_and_a_restart_sends_each_line_once() {
    let bound = Bound::new("send-follow");
    let dir = scratch("send-follow");
    let (log, pos) = (dir.join("app.log"), dir.join("app.log.pos"));
    append(&log, "1\n2\n3\n");
    let send = follow(&bound, &log, &pos);
    assert_eq!(bound.messages(3), ["1", "2", "3"]);
    // Rotation: renamed away, written to once more by its writer, then a
    // new file under the name.
    std::fs::rename(&log, dir.join("app.log.1")).unwrap();
    append(&dir.join("app.log.1"), "4\n");
    append(&log, "5\n6\n");
    assert_eq!(bound.messages(3), ["4", "5", "6"]);
    let notes = stop(send);
    assert!(
        notes.contains("was rotated; reading the new file"),
        "{notes}"
    );
    // Written while send is stopped.
    append(&log, "7\n8\n");
    let send = follow(&bound, &log, &pos);
    assert_eq!(
        bound.messages(2),
        ["7", "8"],
        "nothing resent, nothing skipped"
    );
    // One send per position file (the running one has it: it shipped).
    let second = run(
        logcollect(&[
            "send",
            "--file",
            log.to_str().unwrap(),
            "--position-file",
            pos.to_str().unwrap(),
        ]),
        "",
    );
    assert_eq!(second.status.code(), Some(1), "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("is in use by another logcollect send"),
        "{}",
        second.stderr
    );
    // Truncation (copytruncate), then new lines from the top.
    std::fs::write(&log, "").unwrap();
    append(&log, "9\n");
    assert_eq!(bound.messages(1), ["9"]);
    let notes = stop(send);
    assert!(notes.contains("was truncated"), "{notes}");
    assert!(
        bound
            .consumer
            .bodies
            .recv_timeout(Duration::from_millis(500))
            .is_err(),
        "a record too many"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn file_without_follow_reads_it_once() {
    let bound = Bound::new("send-file");
    let dir = scratch("send-file");
    let log = dir.join("batch.jsonl");
    append(&log, "{\"message\":\"a\"}\n{\"message\":\"b\"}");
    let sent = bound.send(&["--json", "--file", log.to_str().unwrap()], "ignored\n");
    assert!(sent.status.success(), "send: {}", sent.stderr);
    assert_eq!(bound.messages(2), ["a", "b"]);
    let missing = bound.send(&["--file", dir.join("nope").to_str().unwrap()], "");
    assert_eq!(missing.status.code(), Some(1), "{}", missing.stderr);
    assert!(missing.stderr.contains("cannot read"), "{}", missing.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
