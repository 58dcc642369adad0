//! The `logcollect` binary against the real RabbitMQ on 127.0.0.1:5672.
//!
//! Every test uses its own exchange (`cli-test-<pid>-<nanos>-<n>`), deleted
//! at the end, so tests run in parallel without seeing each other's records.
//! They synchronise on `tail`'s "listening on exchange" line on stderr; the
//! only waits are bounded ones that fail the test.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_logcollect");
/// Generous bound on anything that should take well under a second; only
/// reached when the test fails.
const WAIT: Duration = Duration::from_secs(30);
const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672//";
/// A password that must never show up in any output.
const SECRET: &str = "pw-s3cret-xyz";

/// An exchange name no other test (or run) uses; deleted on drop.
struct Exchange(String);

impl Exchange {
    fn new() -> Exchange {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let n = N.fetch_add(1, Ordering::Relaxed);
        Exchange(format!("cli-test-{}-{nanos}-{n}", std::process::id()))
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // Best effort: a leftover exchange only costs the broker a name.
        let name = self.0.clone();
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let connect =
                lapin::Connection::connect(BROKER, lapin::ConnectionProperties::default());
            let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connect).await else {
                return;
            };
            if let Ok(channel) = conn.create_channel().await {
                let _ = channel
                    .exchange_delete(
                        name.as_str().into(),
                        lapin::options::ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
            let _ = conn.close(200, "done".into()).await;
        });
    }
}

/// The binary with a clean `LOGCOLLECT_*` environment.
fn logcollect(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("LOGCOLLECT_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args);
    cmd
}

/// Waits for `child` to exit, killing it and failing the test after `limit`.
fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        // Polling interval of the bounded wait, not a synchronisation.
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_all(mut r: impl std::io::Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs a command to the end with `stdin` as its input.
fn run(mut cmd: Command, stdin: &str) -> Finished {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
        // Dropping `input` closes it: end of input.
    });
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let status = wait_exit(&mut child, WAIT, "logcollect");
    let elapsed = start.elapsed();
    writer.join().unwrap();
    Finished {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        elapsed,
    }
}

/// A running `logcollect tail`, bound and consuming.
struct Tail {
    child: Child,
    stdout: Option<ChildStdout>,
    /// Every stderr line, as it comes.
    stderr: mpsc::Receiver<String>,
    /// Stderr lines seen so far.
    seen: Vec<String>,
}

impl Tail {
    /// Starts tail and waits until its queue is bound.
    fn start(args: &[&str]) -> Tail {
        let mut all = vec!["tail"];
        all.extend_from_slice(args);
        let mut child = logcollect(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut tail = Tail {
            stdout: child.stdout.take(),
            child,
            stderr: rx,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tail.stderr.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.contains("listening on exchange");
                    tail.seen.push(line);
                    if ready {
                        return tail;
                    }
                }
                Err(_) => {
                    let _ = tail.child.kill();
                    panic!("tail never said it was listening; stderr: {:?}", tail.seen);
                }
            }
        }
    }

    /// Waits for the exit; returns the status, stdout and the stderr lines
    /// after the "listening" line.
    fn finish(mut self) -> (ExitStatus, String, Vec<String>) {
        let stdout = self.stdout.take().map(read_all);
        let status = wait_exit(&mut self.child, WAIT, "tail");
        let stdout = stdout.map(|h| h.join().unwrap()).unwrap_or_default();
        // The sender side closes when the process's stderr does.
        let rest: Vec<String> = self.stderr.iter().collect();
        (status, stdout, rest)
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Only matters when a test fails half-way: don't leave tail running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn json_lines(stdout: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    stdout
        .lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(obj)) => obj,
            other => panic!("not a JSON object: {line:?} ({other:?})"),
        })
        .collect()
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
    for sub in ["send", "tail"] {
        let help = run(logcollect(&[sub, "--help"]), "");
        assert!(help.status.success());
        assert!(help.stdout.contains("Examples:"), "{sub}: {}", help.stdout);
        assert!(
            help.stdout.contains(&format!("logcollect {sub}")),
            "{}",
            help.stdout
        );
    }
}
