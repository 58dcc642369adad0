//! Running the `logcollect` binary against the real RabbitMQ on
//! 127.0.0.1:5672, shared by the test files.
//!
//! Every test uses its own exchange and queue names (`unique`), deleted at
//! the end, so tests run in parallel without seeing each other's records.
//! They synchronise on lines the binary prints (tail's "listening on
//! exchange" on stderr, records on stdout) and on channels; the only waits
//! are bounded ones that fail the test.
// Each test file uses its own part of this module, as its own crate.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

pub use logcollect_tests::unique;

pub const BIN: &str = env!("CARGO_BIN_EXE_logcollect");
/// Generous bound on anything that should take well under a second; only
/// reached when the test fails.
pub const WAIT: Duration = Duration::from_secs(30);
pub const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672//";
/// A password that must never show up in any output.
pub const SECRET: &str = "pw-s3cret-xyz";

/// Runs `work` on a channel of a fresh connection to the local broker.
pub fn with_channel<T>(work: impl AsyncFnOnce(&lapin::Channel) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let conn = lapin::Connection::connect(BROKER, lapin::ConnectionProperties::default())
            .await
            .expect("connect to the local broker");
        let channel = conn.create_channel().await.unwrap();
        let out = work(&channel).await;
        let _ = conn.close(200, "done".into()).await;
        out
    })
}

/// Whether exchange `name` exists (a passive declaration).
pub fn exchange_exists(name: &str) -> bool {
    with_channel(async |ch| {
        ch.exchange_declare(
            name.into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .is_ok()
    })
}

/// `(messages_ready, messages_unacknowledged)` of queue `name`, as
/// `rabbitmqctl` reports them (it sees exclusive queues too).
pub fn queue_counts(name: &str) -> (u64, u64) {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() == 3 && cols[0] == name {
            return (cols[1].parse().unwrap(), cols[2].parse().unwrap());
        }
    }
    panic!("queue {name} not listed by rabbitmqctl: {text}");
}

/// Declares an exchange of any kind up front.
pub fn declare_exchange(name: &str, kind: lapin::ExchangeKind, durable: bool) {
    with_channel(async |ch| {
        ch.exchange_declare(
            name.into(),
            kind,
            lapin::options::ExchangeDeclareOptions {
                durable,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    });
}

/// Declares a queue up front; its message count if it exists (passive).
pub fn declare_queue(name: &str, durable: bool, passive: bool) -> Option<u32> {
    with_channel(async |ch| {
        ch.queue_declare(
            name.into(),
            lapin::options::QueueDeclareOptions {
                durable,
                passive,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .ok()
        .map(|q| q.message_count())
    })
}

/// Exchanges and queues a test made; deleted on drop, even when the test
/// fails half-way.
#[derive(Default)]
pub struct Cleanup {
    pub exchanges: Vec<String>,
    pub queues: Vec<String>,
}

impl Cleanup {
    /// A new exchange name, deleted on drop.
    pub fn exchange(&mut self, prefix: &str) -> String {
        let name = unique(prefix);
        self.exchanges.push(name.clone());
        name
    }

    /// A new queue name, deleted on drop.
    pub fn queue(&mut self, prefix: &str) -> String {
        let name = unique(prefix);
        self.queues.push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Best effort: a leftover only costs the broker a name.
        let (exchanges, queues) = (self.exchanges.clone(), self.queues.clone());
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
            for q in queues {
                // A failed delete closes the channel: one channel each.
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
                }
            }
            for ex in exchanges {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .exchange_delete(ex.as_str().into(), Default::default())
                        .await;
                }
            }
            let _ = conn.close(200, "done".into()).await;
        });
    }
}

/// A consumer on an existing queue (Logstash's part), running until
/// dropped; what it receives arrives on `bodies`.
pub struct Consumer {
    pub bodies: mpsc::Receiver<serde_json::Value>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Consumer {
    /// Starts consuming `queue` and returns once the broker counts it.
    pub fn start(queue: &str) -> Consumer {
        let (tx, bodies) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let queue = queue.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let conn =
                    lapin::Connection::connect(BROKER, lapin::ConnectionProperties::default())
                        .await
                        .unwrap();
                let ch = conn.create_channel().await.unwrap();
                let mut consumer = ch
                    .basic_consume(
                        queue.as_str().into(),
                        "".into(),
                        lapin::options::BasicConsumeOptions {
                            no_ack: true,
                            ..Default::default()
                        },
                        lapin::types::FieldTable::default(),
                    )
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                let deliveries = async {
                    while let Some(Ok(d)) = consumer.next().await {
                        if let Ok(v) = serde_json::from_slice(&d.data) {
                            let _ = tx.send(v);
                        }
                    }
                };
                tokio::select! {
                    () = deliveries => {}
                    _ = stopped => {}
                }
                let _ = conn.close(200, "done".into()).await;
            });
        });
        ready_rx.recv_timeout(WAIT).expect("consumer ready");
        Consumer {
            bodies,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The binary with a clean `LOGCOLLECT_*` environment (and no `NO_COLOR`).
pub fn logcollect(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("LOGCOLLECT_") || key == "NO_COLOR" {
            cmd.env_remove(key);
        }
    }
    cmd.args(args);
    cmd
}

/// Waits for `child` to exit, killing it and failing the test after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
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

pub fn read_all(mut r: impl std::io::Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Every line of `r`, as it comes.
pub fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs a command to the end with `stdin` as its input.
pub fn run(mut cmd: Command, stdin: &str) -> Finished {
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
pub struct Tail {
    pub child: Child,
    pub stdout: Option<ChildStdout>,
    /// Every stderr line, as it comes.
    pub stderr: mpsc::Receiver<String>,
    /// Stderr lines seen so far.
    pub seen: Vec<String>,
}

impl Tail {
    /// Starts tail and waits until its queue is bound.
    pub fn start(args: &[&str]) -> Tail {
        Tail::start_with(args, |_| {})
    }

    /// Same, with a chance to change the command (its environment) first.
    pub fn start_with(args: &[&str], adjust: impl FnOnce(&mut Command)) -> Tail {
        let mut tail = Tail::spawn_with(args, adjust);
        tail.wait_stderr("listening on exchange");
        tail
    }

    /// Starts tail without waiting for anything.
    pub fn spawn_with(args: &[&str], adjust: impl FnOnce(&mut Command)) -> Tail {
        let mut all = vec!["tail"];
        all.extend_from_slice(args);
        let mut cmd = logcollect(&all);
        adjust(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = lines_of(child.stderr.take().unwrap());
        Tail {
            stdout: child.stdout.take(),
            child,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `text`; returns it.
    pub fn wait_stderr(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("tail never said {text:?}; stderr: {:?}", self.seen);
                }
            }
        }
    }

    /// Standard output, line by line, from now on.
    pub fn stdout_lines(&mut self) -> mpsc::Receiver<String> {
        lines_of(self.stdout.take().expect("stdout already taken"))
    }

    /// Waits for the exit; returns the status, stdout (what is left of it)
    /// and the stderr lines not seen yet.
    pub fn finish(mut self) -> (ExitStatus, String, Vec<String>) {
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

/// Each line of `stdout` as a JSON object.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    stdout
        .lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(obj)) => obj,
            other => panic!("not a JSON object: {line:?} ({other:?})"),
        })
        .collect()
}

/// `send` to `exchange` with routing-key prefix `rk`, plus `args`; asserts
/// success.
pub fn send(exchange: &str, rk: &str, args: &[&str]) {
    let mut all = vec!["send", "--exchange", exchange, "--routing-key", rk];
    all.extend_from_slice(args);
    let sent = run(logcollect(&all), "");
    assert!(
        sent.status.success(),
        "send {args:?} failed: {}",
        sent.stderr
    );
}

/// Receives one line within `WAIT`, or fails the test.
pub fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("no {what} within {WAIT:?}: {e}"))
}
