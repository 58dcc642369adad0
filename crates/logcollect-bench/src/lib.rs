//! Shared pieces of the benchmarks (see `BENCHMARKS.md` at the repository
//! root): broker addresses, unique names, an admin connection that declares
//! and inspects the benchmark's own exchanges and queues, memory readings from
//! `/proc/self/status`, the parser for the Python peer's result line, and the
//! peers a log call is compared with (tracing-appender's JSON path,
//! OpenTelemetry's logs SDK).
//!
//! The measurements themselves live in `benches/{caller,spans}.rs` (criterion)
//! and `src/bin/{throughput,outage_memory,shards,caller_threads,latency}.rs`.
#![warn(missing_docs)]

mod peers;
pub mod shapes;

pub use peers::{appender_json, logcollect_dispatch, NoopLogExporter, OtelPeer};

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

/// The local broker, in logcollect's (Celery) URI syntax, vhost `/`.
pub const BROKER_URI: &str = "amqp://guest:guest@127.0.0.1:5672//";

/// A broker address where nothing listens: every connect is refused at once,
/// so the shipper sits in its reconnect loop. The real broker is never stopped
/// (other tests share it).
pub const DEAD_BROKER_URI: &str = "amqp://guest:guest@127.0.0.1:1//";

/// The Python peer's URI: logcollect 0.14's own default has no password and
/// cannot log in with amqp 1.4.9 (tests/fixtures/python-0.14/README.md, quirk 2).
pub const PYTHON_BROKER_URI: &str = "amqp://guest:guest@127.0.0.1:5672/";

/// lapin URL of the admin connection. Heartbeats are off because its runtime
/// is only driven between measurements: a missed heartbeat would make the
/// broker close it.
const ADMIN_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=0";

/// A name no other run (or test sharing the broker) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`, …).
pub fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kib(&text, field)
}

fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User + system CPU time of a process, in seconds, from `/proc/<pid>/stat`
/// (`pid` may be `self`): its own, and that of its children it has waited
/// for. Resolution: one clock tick (10 ms).
pub fn process_cpu_s(pid: &str) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_s(&text)
}

fn parse_stat_cpu_s(text: &str) -> Option<(f64, f64)> {
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. utime, stime, cutime, cstime are fields 14 to 17
    // (1-based), i.e. the 12th to 15th after it.
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let mut next = || f.next()?.parse::<u64>().ok();
    let own = next()? + next()?;
    let children = next()? + next()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((own as f64 / 100.0, children as f64 / 100.0))
}

/// The pid of the local RabbitMQ node (the `beam.smp` process), to charge
/// the broker's CPU time to each round.
pub fn broker_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let name = e.file_name().into_string().ok()?;
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "beam.smp").then_some(name)
    })
}

/// KiB to MiB, for printing.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The median of `v` (sorted in place); NaN when empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Polls `cond` every millisecond until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A logcollect config for the benchmarks: `uri`, `exchange`, level `info`,
/// the activity identity of the reference samples, and a short shutdown
/// deadline (a benchmark shipper is thrown away, not drained).
pub fn bench_config(uri: &str, exchange: &str) -> logcollect::ConfigBuilder {
    logcollect::Config::builder()
        .broker_uri(uri)
        .exchange(exchange)
        .level("info")
        .activity_identity([("project", "demo"), ("application", "backend")])
        .shutdown_timeout(Duration::from_millis(200))
}

/// One message taken from a queue.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The exact body bytes.
    pub body: Vec<u8>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Its AMQP properties.
    pub properties: BasicProperties,
}

/// A plain lapin connection on a private current-thread runtime, used to
/// set up and inspect the benchmark's own exchanges and queues.
///
/// Other test suites on this machine run fault tests against the shared
/// broker (they restart it or force-close every connection), so the
/// connection is reopened whenever it is found closed, and the queues are
/// not exclusive (an exclusive queue would vanish with a killed connection,
/// in the middle of a round): they have unique names, are deleted at the end
/// and expire after ten idle minutes if this process dies first.
#[derive(Debug)]
pub struct Admin {
    rt: tokio::runtime::Runtime,
    link: RefCell<Option<(Connection, Channel)>>,
}

impl Admin {
    /// Connects to the local broker (waiting up to a minute for it).
    pub fn connect() -> Result<Admin> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("admin runtime")?;
        let admin = Admin {
            rt,
            link: RefCell::new(None),
        };
        admin.ch()?;
        Ok(admin)
    }

    /// The channel, reopened (within a minute) if the connection was lost.
    fn ch(&self) -> Result<Channel> {
        let mut link = self.link.borrow_mut();
        if let Some((_, ch)) = link.as_ref() {
            if ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.rt.block_on(async {
                let conn =
                    Connection::connect(ADMIN_AMQP_URL, ConnectionProperties::default()).await?;
                let ch = conn.create_channel().await?;
                Ok::<_, lapin::Error>((conn, ch))
            });
            match r {
                Ok((conn, ch)) => {
                    *link = Some((conn, ch.clone()));
                    return Ok(ch);
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    return Err(e).context(
                        "cannot connect to RabbitMQ at 127.0.0.1:5672 (guest/guest) within 60 s",
                    )
                }
            }
        }
    }

    /// Runs `op` on the channel; after a failure (a connection killed by a
    /// fault test, say) reconnects and tries again, three times in all.
    fn run<T>(&self, what: &str, op: impl AsyncFn(Channel) -> lapin::Result<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            let ch = self.ch()?;
            match self.rt.block_on(op(ch)) {
                Ok(v) => return Ok(v),
                Err(_) if tries < 2 => {
                    tries += 1;
                    *self.link.borrow_mut() = None;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e).context(what.to_owned()),
            }
        }
    }

    /// Declares `exchange` as logcollect does by default (topic, not durable,
    /// not auto-delete) and binds a new queue to it with `#`; returns the
    /// queue's name. `max_length`: the broker keeps only the newest messages
    /// (so a benchmark that sends millions does not fill its memory).
    pub fn topic_with_queue(&self, exchange: &str, max_length: Option<u32>) -> Result<String> {
        let name = format!("{exchange}-q");
        let mut args = FieldTable::default();
        if let Some(n) = max_length {
            args.insert("x-max-length".into(), AMQPValue::LongUInt(n));
        }
        args.insert("x-expires".into(), AMQPValue::LongUInt(600_000));
        self.run(&format!("declare {exchange} and {name}"), async |ch| {
            ch.exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
            ch.queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::default(),
                args.clone(),
            )
            .await?;
            ch.queue_bind(
                name.as_str().into(),
                exchange.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        })?;
        Ok(name)
    }

    /// Messages ready in `queue` right now.
    pub fn message_count(&self, queue: &str) -> Result<u32> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.run(&format!("passive declare of {queue}"), async |ch| {
            let q = ch
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await?;
            Ok(q.message_count())
        })
    }

    /// Waits until `queue` holds at least `n` messages (unconfirmed publishers
    /// may still have some on the wire) or `timeout` passes; returns the count.
    pub fn wait_count(&self, queue: &str, n: u32, timeout: Duration) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.message_count(queue)?;
            if c >= n || Instant::now() >= deadline {
                return Ok(c);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Takes one message from `queue` (auto-acked).
    pub fn get_one(&self, queue: &str) -> Result<Option<Captured>> {
        self.run("basic.get", async |ch| {
            let m = ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await?;
            Ok(m.map(|m| Captured {
                body: m.delivery.data.clone(),
                routing_key: m.delivery.routing_key.to_string(),
                properties: m.delivery.properties.clone(),
            }))
        })
    }

    /// Empties `queue`.
    pub fn purge(&self, queue: &str) -> Result<u32> {
        self.run(&format!("purge {queue}"), async |ch| {
            ch.queue_purge(queue.into(), QueuePurgeOptions::default())
                .await
        })
    }

    /// Deletes `queue` and `exchange` (errors ignored: this is clean-up).
    pub fn delete(&self, exchange: &str, queue: &str) {
        let Ok(ch) = self.ch() else { return };
        self.rt.block_on(async {
            let _ = ch
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
            let _ = ch
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await;
        });
    }

    /// Closes the connection.
    pub fn close(self) {
        if let Some((conn, _)) = self.link.into_inner() {
            let _ = self.rt.block_on(conn.close(200, "bench done".into()));
        }
    }
}

/// The result line of `bench/python_peer.sh`.
#[derive(Debug, Clone, PartialEq)]
pub struct PythonPeer {
    /// Records logged in the timed loop.
    pub n: u64,
    /// Logging calls per second over the loop.
    pub calls_per_s: f64,
    /// Median time of one `logger.info` call, µs (timer overhead included).
    pub median_us: f64,
    /// 99th percentile of one call, µs.
    pub p99_us: f64,
}

impl PythonPeer {
    /// Parses a `python_peer: n=… calls_per_s=… median_us=… p99_us=…` line.
    pub fn parse(line: &str) -> Option<PythonPeer> {
        let rest = line.trim().strip_prefix("python_peer:")?;
        let get = |key: &str| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        Some(PythonPeer {
            n: get("n")?.parse().ok()?,
            calls_per_s: get("calls_per_s")?.parse().ok()?,
            median_us: get("median_us")?.parse().ok()?,
            p99_us: get("p99_us")?.parse().ok()?,
        })
    }
}

/// `bench/python_peer.sh` in this source tree.
pub fn python_peer_script() -> PathBuf {
    workspace_root().join("bench").join("python_peer.sh")
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(|p| p.parent())
        .map_or_else(|| here.clone(), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let text = "Name:\tx\nVmHWM:\t  12345 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(parse_status_kib(text, "VmHWM"), Some(12345));
        assert_eq!(parse_status_kib(text, "VmRSS"), Some(2048));
        assert_eq!(parse_status_kib(text, "VmSwap"), None);
    }

    #[test]
    fn parses_stat() {
        let text = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 7 3 20 0";
        assert_eq!(parse_stat_cpu_s(text), Some((3.0, 0.1)));
    }

    #[test]
    fn parses_python_line() {
        let p = PythonPeer::parse(
            "python_peer: n=20000 calls_per_s=10948.2 median_us=76.00 p99_us=335.1 first_call_ms=11.8",
        )
        .unwrap();
        assert_eq!(p.n, 20000);
        assert_eq!(p.median_us, 76.0);
        assert!(PythonPeer::parse("something else").is_none());
    }

    #[test]
    fn median_odd_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
