//! The `logcollect` binary against the real RabbitMQ on 127.0.0.1:5672:
//! `send` and `tail`.
//!
//! Every test uses its own exchange (`cli-test-<pid>-<nanos>-<n>`), deleted
//! at the end, so tests run in parallel without seeing each other's records.
//! They synchronise on `tail`'s "listening on exchange" line on stderr and on
//! the lines it prints; the only waits are bounded ones that fail the test.

mod support;

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::process::Command;
use std::time::Duration;

use support::*;

/// An exchange name no other test (or run) uses; deleted on drop.
struct Exchange(String, #[allow(dead_code)] Cleanup);

impl Exchange {
    /// Declared as the applications declare it (tail waits for it).
    fn new() -> Exchange {
        let mut cleanup = Cleanup::default();
        let name = cleanup.exchange("cli-test");
        declare_exchange(&name, lapin::ExchangeKind::Topic, false);
        Exchange(name, cleanup)
    }
}

#[test]
fn tail_waits_for_a_missing_exchange_without_creating_it() {
    let mut names = Cleanup::default();
    let ex = names.exchange("cli-missing");
    let mut tail = Tail::spawn_with(&["--exchange", &ex, "--json", "--count", "1"], |_| {});
    let waiting = tail.wait_stderr("does not exist yet");
    assert!(
        waiting.contains(&format!("exchange {ex} does not exist yet; waiting")),
        "{waiting}"
    );
    assert!(!exchange_exists(&ex), "tail must not create the exchange");
    declare_exchange(&ex, lapin::ExchangeKind::Topic, false);
    tail.wait_stderr(&format!("exchange {ex} exists now"));
    tail.wait_stderr("listening on exchange");
    send(&ex, "logstash", &["after the wait"]);
    let (status, stdout, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
    assert_eq!(messages(&stdout), ["after the wait"]);
}

#[test]
fn a_tail_that_reads_nothing_keeps_its_queue_at_the_cap() {
    const RECORDS: u64 = 3000;
    const CAP: u64 = 50;
    // What the broker hands tail before waiting for acknowledgements.
    const PREFETCH: u64 = 100;
    let ex = Exchange::new();
    let mut tail = Tail::start(&[
        "--exchange",
        &ex.0,
        "--routing-key",
        "rk",
        "--json",
        "--max-length",
        &CAP.to_string(),
    ]);
    let listening = tail.seen.last().unwrap().clone();
    let queue = listening
        .split("; queue ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no queue name in {listening:?}"))
        .to_owned();
    assert!(
        listening.contains(&format!("keeps at most {CAP} records")),
        "{listening}"
    );
    // Nobody reads tail's standard output yet: its pipe and its print
    // buffer fill up, then tail stops acknowledging.
    let input: String = (1..=RECORDS).map(|i| format!("record {i}\n")).collect();
    let sent = run(
        logcollect(&["send", "--exchange", &ex.0, "--routing-key", "rk"]),
        &input,
    );
    assert!(sent.status.success(), "send: {}", sent.stderr);
    let (ready, unacked) = queue_counts(&queue);
    assert!(
        ready <= CAP,
        "{ready} records ready in tail's queue, cap {CAP}"
    );
    assert!(
        unacked <= PREFETCH,
        "{unacked} unacknowledged records in tail's queue"
    );
    // Now read: every record is printed or counted as skipped, once.
    let lines = tail.stdout_lines();
    let (mut printed, mut skipped) = (0u64, 0u64);
    let deadline = std::time::Instant::now() + WAIT;
    while printed + skipped < RECORDS {
        assert!(
            std::time::Instant::now() < deadline,
            "{printed} printed + {skipped} skipped of {RECORDS}; stderr {:?}",
            tail.seen
        );
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(50)) {
            assert!(line.contains("record "), "{line}");
            printed += 1;
        }
        while let Ok(note) = tail.stderr.try_recv() {
            if let Some(rest) = note.strip_prefix("logcollect tail: skipped ") {
                skipped += rest.split(' ').next().unwrap().parse::<u64>().unwrap();
            }
            tail.seen.push(note);
        }
    }
    eprintln!(
        "queue while blocked: {ready} ready, {unacked} unacknowledged; then {printed} printed, \
         {skipped} skipped"
    );
    assert_eq!(printed + skipped, RECORDS);
    assert!(skipped > 0, "nothing was skipped: {:?}", tail.seen);
}

#[test]
fn tail_json_receives_each_stdin_line_as_a_record() {
    let ex = Exchange::new();
    // An exact binding: a record arrives only with routing key rk.mylogger.
    let tail = Tail::start(&[
        "--exchange",
        &ex.0,
        "--routing-key",
        "rk",
        "--bind",
        "rk.mylogger",
        "--json",
        "--count",
        "3",
    ]);
    let send = run(
        logcollect(&[
            "send",
            "--exchange",
            &ex.0,
            "--routing-key",
            "rk",
            "--logger",
            "mylogger",
            "--field",
            "k=v",
        ]),
        "one\ntwo\n\nthree\n",
    );
    assert!(send.status.success(), "send failed: {}", send.stderr);
    assert_eq!(send.stderr, "", "send should be quiet on success");

    let (status, stdout, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
    assert_eq!(
        stdout.lines().count(),
        3,
        "the empty line is not a record: {stdout}"
    );
    let records = json_lines(&stdout);
    let messages: Vec<&str> = records
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["one", "two", "three"]);
    for r in &records {
        assert_eq!(r["levelname"], "INFO", "{r:?}");
        assert_eq!(r["logger"], "mylogger", "{r:?}");
        assert_eq!(r["k"], "v", "{r:?}");
    }
}

#[test]
fn send_message_argument_at_level_warning() {
    let ex = Exchange::new();
    let tail = Tail::start(&["--exchange", &ex.0, "--routing-key", "rk", "--count", "1"]);
    let send = run(
        logcollect(&[
            "send",
            "--exchange",
            &ex.0,
            "--routing-key",
            "rk",
            "--level",
            "warning",
            "--field",
            "n=3",
            "disk almost full",
        ]),
        "this input is ignored when MESSAGE is given\n",
    );
    assert!(send.status.success(), "send failed: {}", send.stderr);

    let (status, stdout, _) = tail.finish();
    assert!(status.success(), "tail: {status}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    // `<@timestamp> <LEVELNAME padded to 8> <logger>: <message> key=value`
    let (timestamp, rest) = lines[0].split_once(' ').unwrap();
    assert!(timestamp.ends_with('Z'), "{timestamp}");
    assert!(rest.starts_with("WARNING  cli: disk almost full"), "{rest}");
    assert!(rest.contains(" n=3"), "{rest}");
}

#[test]
fn send_debug_is_not_filtered_by_the_default_level() {
    let ex = Exchange::new();
    let tail = Tail::start(&["--exchange", &ex.0, "--json", "--count", "1"]);
    let send = run(
        logcollect(&[
            "send",
            "--exchange",
            &ex.0,
            "--level",
            "debug",
            "fine detail",
        ]),
        "",
    );
    assert!(send.status.success(), "send failed: {}", send.stderr);
    let (status, stdout, _) = tail.finish();
    assert!(status.success());
    let records = json_lines(&stdout);
    assert_eq!(records[0]["levelname"], "DEBUG");
    assert_eq!(records[0]["message"], "fine detail");
}

#[test]
fn send_waits_instead_of_dropping_when_the_queue_is_full() {
    const LINES: usize = 200;
    let ex = Exchange::new();
    let count = LINES.to_string();
    let tail = Tail::start(&["--exchange", &ex.0, "--json", "--count", &count]);
    let input: String = (1..=LINES).map(|i| format!("line {i}\n")).collect();
    let mut cmd = logcollect(&["send", "--exchange", &ex.0]);
    // A queue far smaller than the input: send must wait for confirms.
    cmd.env("LOGCOLLECT_QUEUE_CAPACITY", "4");
    let send = run(cmd, &input);
    assert!(send.status.success(), "send failed: {}", send.stderr);
    let (status, stdout, _) = tail.finish();
    assert!(status.success());
    let records = json_lines(&stdout);
    assert_eq!(records.len(), LINES);
    assert_eq!(records[LINES - 1]["message"], format!("line {LINES}"));
}

#[test]
fn send_to_exchange_without_queue_fails_as_unroutable() {
    let ex = Exchange::new();
    let send = run(
        logcollect(&["send", "--exchange", &ex.0, "--routing-key", "rk", "hello"]),
        "",
    );
    assert_eq!(send.status.code(), Some(1), "{}", send.stderr);
    assert!(send.stderr.contains("unroutable"), "{}", send.stderr);
    assert!(
        send.stderr
            .contains(&format!("bind a queue to exchange {} with key rk.#", ex.0)),
        "{}",
        send.stderr
    );
}

#[test]
fn send_with_broker_down_fails_within_timeout_without_password() {
    let mut cmd = logcollect(&["send", "hello"]);
    cmd.env(
        "LOGCOLLECT_BROKER_URI",
        format!("amqp://guest:{SECRET}@127.0.0.1:1//"),
    )
    .env("LOGCOLLECT_SHUTDOWN_TIMEOUT", "1");
    let send = run(cmd, "");
    assert_eq!(send.status.code(), Some(1), "{}", send.stderr);
    assert!(
        send.stderr
            .contains("logcollect send: 1 of 1 records not confirmed within 1s"),
        "{}",
        send.stderr
    );
    assert!(send.stderr.contains("127.0.0.1:1"), "{}", send.stderr);
    assert!(
        !send.stderr.contains(SECRET),
        "password leaked: {}",
        send.stderr
    );
    assert!(!send.stdout.contains(SECRET));
    // 1 s of shutdown timeout plus start-up and the core's 2 s grace.
    assert!(
        send.elapsed < Duration::from_secs(5),
        "took {:?}",
        send.elapsed
    );
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let bad_field = run(logcollect(&["send", "--field", "novalue", "hello"]), "");
    assert_eq!(bad_field.status.code(), Some(2));
    assert!(
        bad_field.stderr.contains("KEY=VALUE"),
        "{}",
        bad_field.stderr
    );

    let bad_level = run(logcollect(&["send", "--level", "loud", "hello"]), "");
    assert_eq!(bad_level.status.code(), Some(2));
    assert!(
        bad_level.stderr.contains("unknown level"),
        "{}",
        bad_level.stderr
    );

    let empty = run(logcollect(&["send", ""]), "");
    assert_eq!(empty.status.code(), Some(2));
    assert!(
        empty.stderr.contains("MESSAGE is empty"),
        "{}",
        empty.stderr
    );

    for args in [&["send", "hello"][..], &["tail"]] {
        let sub = args[0];
        let mut cmd = logcollect(args);
        cmd.env(
            "LOGCOLLECT_BROKER_URI",
            format!("http://guest:{SECRET}@127.0.0.1//"),
        );
        let bad_uri = run(cmd, "");
        assert_eq!(bad_uri.status.code(), Some(2), "{sub}: {}", bad_uri.stderr);
        assert!(
            bad_uri.stderr.contains("invalid broker URI"),
            "{}",
            bad_uri.stderr
        );
        assert!(
            !bad_uri.stderr.contains(SECRET),
            "password leaked: {}",
            bad_uri.stderr
        );

        let mut cmd = logcollect(args);
        cmd.env("LOGCOLLECT_DURABLE", "maybe");
        let bad_env = run(cmd, "");
        assert_eq!(bad_env.status.code(), Some(2), "{sub}: {}", bad_env.stderr);
        assert!(
            bad_env.stderr.contains("LOGCOLLECT_DURABLE"),
            "{}",
            bad_env.stderr
        );
    }

    let mut filtered = logcollect(&["send", "--level", "debug", "hello"]);
    filtered.env("LOGCOLLECT_LEVEL", "warning");
    let filtered = run(filtered, "");
    assert_eq!(filtered.status.code(), Some(2));
    assert!(
        filtered.stderr.contains("filtered out by LOGCOLLECT_LEVEL"),
        "{}",
        filtered.stderr
    );
}

#[test]
fn tail_exits_0_when_its_reader_goes_away() {
    let ex = Exchange::new();
    let mut tail = Tail::start(&["--exchange", &ex.0]);
    // `tail | head -1` after head has exited: nobody reads stdout any more.
    drop(tail.stdout.take());
    let send = run(logcollect(&["send", "--exchange", &ex.0, "hello"]), "");
    assert!(send.status.success(), "send failed: {}", send.stderr);
    let (status, _, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
    assert!(stderr.is_empty(), "a closed pipe is quiet: {stderr:?}");
}

#[test]
fn tail_timeout_before_count_fails_saying_how_many_arrived() {
    let ex = Exchange::new();
    // Long enough for `send` to start and deliver on a busy machine: the
    // test waits for the whole timeout either way.
    let tail = Tail::start(&[
        "--exchange",
        &ex.0,
        "--json",
        "--count",
        "2",
        "--timeout",
        "8",
    ]);
    send(&ex.0, "logstash", &["only one"]);
    let (status, stdout, stderr) = tail.finish();
    assert_eq!(status.code(), Some(1), "tail: {status}, stderr {stderr:?}");
    assert_eq!(messages(&stdout), ["only one"], "{stdout}");
    assert_eq!(
        stderr,
        ["logcollect tail: --timeout 8 s ran out with 1 of 2 records printed (--count 2)"]
    );
}

#[test]
fn tail_timeout_without_count_ends_quietly() {
    let ex = Exchange::new();
    let tail = Tail::start(&["--exchange", &ex.0, "--timeout", "1"]);
    let (status, stdout, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
    assert_eq!(stdout, "");
    assert!(stderr.is_empty(), "{stderr:?}");
}

#[test]
fn tail_exits_0_quietly_on_ctrl_c() {
    let ex = Exchange::new();
    let tail = Tail::start(&["--exchange", &ex.0]);
    let kill = Command::new("kill")
        .args(["-INT", &tail.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (status, stdout, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
    assert_eq!(stdout, "");
    assert!(stderr.is_empty(), "Ctrl-C is quiet: {stderr:?}");
}

#[test]
fn tail_with_broker_down_fails_without_password() {
    let mut cmd = logcollect(&["tail"]);
    cmd.env(
        "LOGCOLLECT_BROKER_URI",
        format!("amqp://guest:{SECRET}@127.0.0.1:1//"),
    );
    let tail = run(cmd, "");
    assert_eq!(tail.status.code(), Some(1), "{}", tail.stderr);
    assert!(
        tail.stderr.contains("connection refused at 127.0.0.1:1"),
        "{}",
        tail.stderr
    );
    assert!(
        !tail.stderr.contains(SECRET),
        "password leaked: {}",
        tail.stderr
    );
}

#[test]
fn help_shows_examples() {
    for sub in ["send", "tail", "doctor", "setup"] {
        let help = run(logcollect(&[sub, "--help"]), "");
        assert!(help.status.success());
        assert!(help.stdout.contains("Examples:"), "{sub}: {}", help.stdout);
        assert!(
            help.stdout.contains(&format!("logcollect {sub}")),
            "{}",
            help.stdout
        );
    }
    let top = run(logcollect(&["--help"]), "");
    assert!(top.status.success());
    for want in [
        "Exit codes:",
        "doctor",
        "setup",
        "LOGCOLLECT_QUEUE",
        "126",
        "127",
    ] {
        assert!(top.stdout.contains(want), "{want}: {}", top.stdout);
    }
}

/// `send --level L MESSAGE` with logger `logger` and extra arguments.
fn send_at(ex: &str, level: &str, logger: &str, message: &str, extra: &[&str]) {
    let mut args = vec!["--level", level, "--logger", logger];
    args.extend_from_slice(extra);
    args.push(message);
    send(ex, "rk", &args);
}

fn messages(stdout: &str) -> Vec<String> {
    json_lines(stdout)
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn tail_filters_by_level() {
    let ex = Exchange::new();
    let tail = Tail::start(&[
        "--exchange",
        &ex.0,
        "--routing-key",
        "rk",
        "--level",
        "warning",
        "--json",
        "--count",
        "2",
    ]);
    // Sent one after the other, each confirmed: they arrive in this order,
    // so the two printed are the first two that pass.
    send_at(&ex.0, "info", "app", "too low", &[]);
    send_at(&ex.0, "debug", "app", "lower", &[]);
    send_at(&ex.0, "warning", "app", "warned", &[]);
    send_at(&ex.0, "error", "app", "failed", &[]);
    let (status, stdout, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
    assert_eq!(messages(&stdout), ["warned", "failed"]);
}

#[test]
fn tail_filters_by_logger_glob_and_narrows_the_binding() {
    let ex = Exchange::new();
    let tail = Tail::start(&[
        "--exchange",
        &ex.0,
        "--routing-key",
        "rk",
        "--logger",
        "app::db*",
        "--json",
        "--count",
        "2",
    ]);
    assert!(
        tail.seen.last().unwrap().contains("with binding rk.app.#"),
        "{:?}",
        tail.seen
    );
    // Routed to the queue (rk.app.web matches rk.app.#) but not the glob.
    send_at(&ex.0, "info", "app::web", "web", &[]);
    // Not even routed to tail's queue: rk.other is unroutable.
    let other = run(
        logcollect(&[
            "send",
            "--exchange",
            &ex.0,
            "--routing-key",
            "rk",
            "--logger",
            "other",
            "x",
        ]),
        "",
    );
    assert_eq!(other.status.code(), Some(1), "{}", other.stderr);
    assert!(other.stderr.contains("unroutable"), "{}", other.stderr);
    send_at(&ex.0, "info", "app::db::pool", "pool", &[]);
    send_at(&ex.0, "info", "app.dbx", "python style", &[]);
    let (status, stdout, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
    assert_eq!(messages(&stdout), ["pool", "python style"]);
}

#[test]
fn tail_filters_by_field() {
    let ex = Exchange::new();
    let tail = Tail::start(&[
        "--exchange",
        &ex.0,
        "--routing-key",
        "rk",
        "--where",
        "user=ann",
        "--where",
        "n=3",
        "--json",
        "--count",
        "1",
    ]);
    send_at(
        &ex.0,
        "info",
        "app",
        "bob",
        &["--field", "user=bob", "--field", "n=3"],
    );
    send_at(
        &ex.0,
        "info",
        "app",
        "ann 4",
        &["--field", "user=ann", "--field", "n=4"],
    );
    send_at(&ex.0, "info", "app", "nobody", &[]);
    send_at(
        &ex.0,
        "info",
        "app",
        "ann 3",
        &["--field", "user=ann", "--field", "n=3"],
    );
    let (status, stdout, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
    assert_eq!(messages(&stdout), ["ann 3"]);
}

#[test]
fn tail_readable_lines_show_identity_and_align() {
    let ex = Exchange::new();
    let tail = Tail::start(&["--exchange", &ex.0, "--routing-key", "rk", "--count", "2"]);
    send_at(
        &ex.0,
        "info",
        "app",
        "first",
        &[
            "--field",
            "project=gh",
            "--field",
            "application=api",
            "--field",
            "k=v",
        ],
    );
    send_at(&ex.0, "error", "app::db", "second", &[]);
    let (status, stdout, _) = tail.finish();
    assert!(status.success(), "tail: {status}");
    // Not a terminal: no colour.
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let rest = |line: &str| line.split_once(' ').unwrap().1.to_owned();
    assert_eq!(rest(lines[0]), "INFO     gh/api app: first k=v");
    assert_eq!(rest(lines[1]), "ERROR    -      app::db: second");
}

#[test]
fn tail_colours_on_demand() {
    let ex = Exchange::new();
    let tail = Tail::start(&[
        "--exchange",
        &ex.0,
        "--routing-key",
        "rk",
        "--count",
        "1",
        "--color",
        "always",
    ]);
    send_at(&ex.0, "warning", "app", "careful", &[]);
    let (status, stdout, _) = tail.finish();
    assert!(status.success(), "tail: {status}");
    assert!(stdout.contains("\x1b[33mWARNING\x1b[0m"), "{stdout:?}");
}

#[test]
fn tail_exits_0_when_its_reader_goes_away_after_a_line() {
    let ex = Exchange::new();
    let mut tail = Tail::start(&["--exchange", &ex.0, "--routing-key", "rk"]);
    // `tail | head -1`: read one line, then close the pipe.
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send((line, reader));
    });
    send_at(&ex.0, "info", "app", "one", &[]);
    let (line, reader) = rx
        .recv_timeout(WAIT)
        .expect("tail printed the first record");
    assert!(line.contains("one"), "{line}");
    drop(reader);
    // Writing the next record fails with EPIPE: tail ends, quietly.
    send_at(&ex.0, "info", "app", "two", &[]);
    let (status, _, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
    assert!(stderr.is_empty(), "a closed pipe is quiet: {stderr:?}");
}

#[test]
fn tail_reconnects_after_losing_its_connection() {
    let ex = Exchange::new();
    let proxy = logcollect_tests::Proxy::closed();
    proxy.open();
    let mut tail = Tail::start(&[
        "--broker-uri",
        &proxy.uri(),
        "--exchange",
        &ex.0,
        "--routing-key",
        "rk",
        "--json",
        "--count",
        "2",
    ]);
    let lines = tail.stdout_lines();
    send_at(&ex.0, "info", "app", "before", &[]);
    assert!(next_line(&lines, "first record").contains("before"));
    // Every connection through the proxy is dropped; new ones are accepted.
    proxy.cut();
    let lost = tail.wait_stderr("lost the subscription");
    assert!(lost.contains("reconnecting"), "{lost}");
    tail.wait_stderr("reconnected; listening on exchange");
    send_at(&ex.0, "info", "app", "after", &[]);
    assert!(next_line(&lines, "record after the reconnection").contains("after"));
    let (status, _, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
}

#[test]
fn tail_prints_one_line_per_record_of_a_batch() {
    let ex = Exchange::new();
    let tail = Tail::start(&[
        "--exchange",
        &ex.0,
        "--routing-key",
        "rk",
        "--json",
        "--count",
        "4",
    ]);
    let batch = r#"[{"message":"a","levelname":"INFO","logger":"b"},{"message":"b","levelname":"INFO","logger":"b"}]"#;
    let lines = "{\"message\":\"c\",\"logger\":\"b\"}\n{\"message\":\"d\",\"logger\":\"b\"}\n";
    for body in [batch, lines] {
        let ex = ex.0.clone();
        with_channel(async move |ch| {
            ch.basic_publish(
                ex.as_str().into(),
                "rk.b".into(),
                Default::default(),
                body.as_bytes(),
                Default::default(),
            )
            .await
            .unwrap();
        });
    }
    let (status, stdout, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
    assert_eq!(messages(&stdout), ["a", "b", "c", "d"]);
}

/// Tail's records of one `send -- COMMAND` run: (level, message), sorted
/// (the two streams of a command interleave freely).
fn command_records(stdout: &str) -> BTreeSet<(String, String)> {
    json_lines(stdout)
        .iter()
        .map(|r| {
            assert_eq!(r["logger"], "job", "{r:?}");
            assert_eq!(r["run"], "nightly", "{r:?}");
            (
                r["levelname"].as_str().unwrap().to_owned(),
                r["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn send_command_ships_its_lines_and_returns_its_status() {
    let ex = Exchange::new();
    let tail = Tail::start(&[
        "--exchange",
        &ex.0,
        "--routing-key",
        "rk",
        "--json",
        "--count",
        "2",
    ]);
    let sent = run(
        logcollect(&[
            "send",
            "--exchange",
            &ex.0,
            "--routing-key",
            "rk",
            "--logger",
            "job",
            "--field",
            "run=nightly",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ]),
        "",
    );
    assert_eq!(sent.status.code(), Some(3), "{}", sent.stderr);
    // Passed through, and nothing of ours on success.
    assert_eq!(sent.stdout, "out\n");
    assert_eq!(sent.stderr, "err\n");
    let (status, stdout, _) = tail.finish();
    assert!(status.success(), "tail: {status}");
    let want: BTreeSet<(String, String)> = [("INFO", "out"), ("WARNING", "err")]
        .iter()
        .map(|(l, m)| (l.to_string(), m.to_string()))
        .collect();
    assert_eq!(command_records(&stdout), want);
}

#[test]
fn send_command_levels_and_stdin() {
    let ex = Exchange::new();
    let tail = Tail::start(&[
        "--exchange",
        &ex.0,
        "--routing-key",
        "rk",
        "--json",
        "--count",
        "3",
    ]);
    let sent = run(
        logcollect(&[
            "send",
            "--exchange",
            &ex.0,
            "--routing-key",
            "rk",
            "--logger",
            "job",
            "--field",
            "run=nightly",
            "--level",
            "debug",
            "--stderr-level",
            "error",
            "--",
            "sh",
            "-c",
            "cat; echo oops >&2",
        ]),
        "from stdin\n\nsecond\n",
    );
    assert_eq!(sent.status.code(), Some(0), "{}", sent.stderr);
    assert_eq!(sent.stdout, "from stdin\n\nsecond\n");
    let (status, stdout, _) = tail.finish();
    assert!(status.success(), "tail: {status}");
    let want: BTreeSet<(String, String)> = [
        ("DEBUG", "from stdin"),
        ("DEBUG", "second"),
        ("ERROR", "oops"),
    ]
    .iter()
    .map(|(l, m)| (l.to_string(), m.to_string()))
    .collect();
    assert_eq!(command_records(&stdout), want);
}

#[test]
fn send_command_status_wins_over_unconfirmed_records() {
    // No queue bound: every record is unroutable.
    let ex = Exchange::new();
    let ok = run(
        logcollect(&["send", "--exchange", &ex.0, "--", "sh", "-c", "echo hi"]),
        "",
    );
    assert_eq!(
        ok.status.code(),
        Some(1),
        "command fine, records lost: {}",
        ok.stderr
    );
    assert!(ok.stderr.contains("unroutable"), "{}", ok.stderr);
    assert_eq!(ok.stdout, "hi\n");
    let failed = run(
        logcollect(&[
            "send",
            "--exchange",
            &ex.0,
            "--",
            "sh",
            "-c",
            "echo hi; exit 4",
        ]),
        "",
    );
    assert_eq!(failed.status.code(), Some(4), "{}", failed.stderr);
    assert!(failed.stderr.contains("unroutable"), "{}", failed.stderr);
}

#[test]
fn send_command_that_cannot_run() {
    let missing = run(
        logcollect(&["send", "--", "logcollect-test-no-such-command"]),
        "",
    );
    assert_eq!(missing.status.code(), Some(127), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("logcollect-test-no-such-command"),
        "{}",
        missing.stderr
    );
    let both = run(logcollect(&["send", "hello", "--", "true"]), "");
    assert_eq!(
        both.status.code(),
        Some(2),
        "MESSAGE and COMMAND: {}",
        both.stderr
    );
}

#[test]
fn tail_usage_errors() {
    let bad = run(logcollect(&["tail", "--where", "novalue"]), "");
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stderr.contains("KEY=VALUE"), "{}", bad.stderr);
    let mut cmd: Command = logcollect(&["tail"]);
    cmd.env("LOGCOLLECT_COLOR", "sometimes");
    let bad = run(cmd, "");
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("LOGCOLLECT_COLOR"), "{}", bad.stderr);
}

#[test]
fn tail_reads_ecs_records_like_flat_ones() {
    let ex = Exchange::new();
    let tail = Tail::start(&["--exchange", &ex.0, "--count", "2"]);
    for profile in ["ecs", "logcollect"] {
        let mut cmd = logcollect(&[
            "send",
            "--exchange",
            &ex.0,
            "--level",
            "warning",
            "--logger",
            "app::db",
            "--field",
            "user=ann",
            "--field",
            "n=3",
            "disk full",
        ]);
        cmd.env("LOGCOLLECT_PROFILE", profile)
            .env("LOGCOLLECT_ACTIVITY_IDENTITY", "project=gh,application=api");
        let sent = run(cmd, "");
        assert!(sent.status.success(), "send ({profile}): {}", sent.stderr);
    }
    let (status, stdout, stderr) = tail.finish();
    assert!(status.success(), "tail: {status}, stderr {stderr:?}");
    let rest: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_once(' ').unwrap().1)
        .collect();
    // ECS puts a user field named like one of its roots under `extra`.
    assert_eq!(
        rest,
        [
            "WARNING  gh/api app::db: disk full extra.user=ann n=3",
            "WARNING  gh/api app::db: disk full n=3 user=ann",
        ],
        "{stdout}"
    );
}
