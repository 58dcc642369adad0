//! Fault suite against the real broker: connections cut, the broker app
//! stopped mid-stream or at start, a memory alarm. Numbered records are
//! counted at a durable capture queue: none may be missing; duplicates can
//! only be republished records (same `record_id`).
//!
//! These tests stop and cut the shared broker, so they run one at a time
//! (a lock in this file; cargo runs test binaries one after another) and
//! always restore it, even when they fail.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use logcollect::{Level, Record, Shipper};
use logcollect_tests::{config, delete_exchange, unique, AMQP_URL};

const WAIT: Duration = Duration::from_secs(90);
static SERIAL: Mutex<()> = Mutex::new(());

fn ctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn broker_up() -> bool {
    std::net::TcpStream::connect("127.0.0.1:5672").is_ok()
}

fn wait_broker_up() {
    let t0 = Instant::now();
    while !broker_up() {
        assert!(t0.elapsed() < WAIT, "broker did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Puts the broker back the way the other tests expect it, whatever happens.
struct Restore;
impl Restore {
    fn new() -> Restore {
        // A previous run that died mid-fault must not leave it broken.
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "start_app"])
            .output();
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "set_vm_memory_high_watermark", "0.4"])
            .output();
        wait_broker_up();
        Restore
    }
}
impl Drop for Restore {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "start_app"])
            .output();
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "set_vm_memory_high_watermark", "0.4"])
            .output();
        wait_broker_up();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A durable queue bound to a durable topic exchange: it keeps what arrives
/// while the broker restarts and nobody consumes.
fn durable_capture(exchange: &str, queue: &str) {
    rt().block_on(async {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            "logstash.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
    });
}

/// Counts of each record number in the queue, read until `n` distinct have
/// arrived or the queue stays quiet; the queue and exchange are deleted.
fn drain_counts(exchange: &str, queue: &str, n: u64) -> (HashMap<u64, u32>, HashMap<String, u32>) {
    let counts = rt().block_on(async {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.basic_qos(2000, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "drain".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut by_i: HashMap<u64, u32> = HashMap::new();
        let mut by_id: HashMap<String, u32> = HashMap::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while (by_i.len() as u64) < n {
            let next = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_secs(15)),
                consumer.next(),
            )
            .await;
            let Ok(Some(Ok(d))) = next else { break };
            let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
            // Records without a number are the memory-alarm test's probes.
            if let Some(i) = v["i"].as_u64() {
                *by_i.entry(i).or_default() += 1;
            }
            *by_id
                .entry(v["record_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        }
        let _ = ch
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = conn.close(200, "bye".into()).await;
        (by_i, by_id)
    });
    delete_exchange(exchange);
    counts
}

/// Checks and prints one scenario's figures (the README quotes them).
fn report(
    name: &'static str,
    sent: u64,
    by_i: &HashMap<u64, u32>,
    by_id: &HashMap<String, u32>,
    stats: &logcollect::Stats,
) {
    let missing = (0..sent).filter(|i| !by_i.contains_key(i)).count() as u64;
    let duplicates: u64 = by_i.values().map(|c| u64::from(c - 1)).sum();
    let dup_ids: u64 = by_id.values().map(|c| u64::from(c - 1)).sum();
    println!(
        "fault {name}: sent {sent}, received {} distinct, missing {missing}, duplicates {duplicates} \
         (republished {}, reconnects {}, spooled {})",
        by_i.len(),
        stats.republished,
        stats.connects.saturating_sub(1),
        stats.spooled
    );
    assert_eq!(missing, 0, "{name}: records lost; stats {stats:?}");
    // A duplicate is the same record delivered twice: the same record id.
    assert_eq!(
        duplicates, dup_ids,
        "{name}: a duplicate with a new record id"
    );
    assert!(
        duplicates <= stats.republished + stats.replayed,
        "{name}: more duplicates than republishes"
    );
}

fn shipper(exchange: &str, spool: Option<&std::path::Path>) -> Shipper {
    let mut b = config(exchange)
        .durable(true)
        .reconnect_min(Duration::from_millis(100))
        .reconnect_max(Duration::from_secs(1))
        .shutdown_timeout(WAIT);
    if let Some(dir) = spool {
        b = b.spool_dir(dir);
    }
    Shipper::new(b.build().unwrap()).unwrap()
}

/// Logs `n` numbered records at a steady pace on another thread while
/// `fault` runs on this one; returns when both are done.
fn stream_with(shipper: &Shipper, n: u64, pace: Duration, fault: impl FnOnce()) {
    std::thread::scope(|s| {
        let producer = s.spawn(|| {
            for i in 0..n {
                assert!(
                    shipper.submit(&Record::new(Level::Info, "fault", "numbered").field("i", i)),
                    "record {i} refused"
                );
                if i % 100 == 0 {
                    std::thread::sleep(pace);
                }
            }
        });
        fault();
        producer.join().unwrap();
    });
}

#[test]
fn connections_cut_five_times_mid_stream() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _restore = Restore::new();
    let (ex, q) = (unique("fault-cut"), unique("fault-cut-q"));
    durable_capture(&ex, &q);
    let shipper = shipper(&ex, None);
    const N: u64 = 20_000;
    stream_with(&shipper, N, Duration::from_millis(5), || {
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(150));
            ctl(&["-q", "close_all_connections", "logcollect fault test"]);
        }
    });
    shipper.flush(WAIT).expect("flush after the cuts");
    let stats = shipper.stats();
    assert!(stats.connects >= 2, "the cuts caused reconnects: {stats:?}");
    let (by_i, by_id) = drain_counts(&ex, &q, N);
    report("connections cut 5 times", N, &by_i, &by_id, &stats);
    shipper.shutdown(WAIT).unwrap();
}

#[test]
fn broker_app_stopped_for_8_seconds_mid_stream() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _restore = Restore::new();
    let (ex, q) = (unique("fault-stop"), unique("fault-stop-q"));
    durable_capture(&ex, &q);
    let dir = std::env::temp_dir().join(unique("lc-fault-spool"));
    let shipper = shipper(&ex, Some(&dir));
    const N: u64 = 20_000;
    stream_with(&shipper, N, Duration::from_millis(10), || {
        std::thread::sleep(Duration::from_millis(300));
        ctl(&["-q", "stop_app"]);
        std::thread::sleep(Duration::from_secs(8));
        ctl(&["-q", "start_app"]);
    });
    wait_broker_up();
    shipper.flush(WAIT).expect("flush after the restart");
    let stats = shipper.stats();
    let (by_i, by_id) = drain_counts(&ex, &q, N);
    report("broker app stopped 8 s", N, &by_i, &by_id, &stats);
    shipper.shutdown(WAIT).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn broker_down_for_the_first_seconds() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _restore = Restore::new();
    let (ex, q) = (unique("fault-late"), unique("fault-late-q"));
    durable_capture(&ex, &q);
    ctl(&["-q", "stop_app"]);
    let shipper = shipper(&ex, None);
    const N: u64 = 5_000;
    for i in 0..N {
        assert!(shipper.submit(&Record::new(Level::Info, "fault", "early").field("i", i)));
    }
    assert!(!shipper.stats().connected);
    std::thread::sleep(Duration::from_secs(3));
    ctl(&["-q", "start_app"]);
    wait_broker_up();
    shipper.flush(WAIT).expect("flush once the broker is up");
    let stats = shipper.stats();
    assert!(stats.connect_failures >= 1, "{stats:?}");
    let (by_i, by_id) = drain_counts(&ex, &q, N);
    report("broker down at start", N, &by_i, &by_id, &stats);
    shipper.shutdown(WAIT).unwrap();
}

#[test]
fn memory_alarm_blocks_publishing_without_blocking_callers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _restore = Restore::new();
    let (ex, q) = (unique("fault-alarm"), unique("fault-alarm-q"));
    durable_capture(&ex, &q);
    let shipper = shipper(&ex, None);
    // Connected first, so the block arrives on a live connection.
    shipper.submit(&Record::new(Level::Info, "fault", "before").field("i", 0u64));
    shipper.flush(WAIT).unwrap();
    ctl(&["-q", "set_vm_memory_high_watermark", "0"]);
    let t0 = Instant::now();
    while !shipper.stats().blocked {
        assert!(t0.elapsed() < WAIT, "never saw connection.blocked");
        shipper.submit(&Record::new(Level::Info, "fault", "probe").field("probe", true));
        std::thread::sleep(Duration::from_millis(50));
    }
    const N: u64 = 5_000;
    // Every call returns while the broker blocks publishers.
    for i in 1..N {
        assert!(shipper.submit(&Record::new(Level::Info, "fault", "during").field("i", i)));
    }
    assert!(shipper.stats().blocked);
    ctl(&["-q", "set_vm_memory_high_watermark", "0.4"]);
    shipper.flush(WAIT).expect("flush after the alarm clears");
    let stats = shipper.stats();
    let (by_i, by_id) = drain_counts(&ex, &q, N);
    report("memory alarm", N, &by_i, &by_id, &stats);
    shipper.shutdown(WAIT).unwrap();
}
