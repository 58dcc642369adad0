//! Breaking and restoring the shared broker, and counting numbered records
//! at a durable queue: the fault tests' tools. Only for tests that run one
//! at a time (hold [`serial`]).

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

use crate::{delete_exchange_at, AMQP_URL};

pub const WAIT: Duration = Duration::from_secs(90);
static SERIAL: Mutex<()> = Mutex::new(());

/// Where test processes that break the shared broker take turns: the
/// in-process mutex orders the tests of one binary, this file lock orders
/// test binaries and checkouts running at the same time on one machine.
const SERIAL_LOCK_FILE: &str = "/tmp/logcollect-broker-faults.lock";

/// Held while a test breaks the shared broker: no other fault test, in this
/// process or another, runs meanwhile.
#[derive(Debug)]
pub struct Serial {
    _file: std::fs::File,
    _guard: std::sync::MutexGuard<'static, ()>,
}

/// Waits for this test's turn to break the broker.
pub fn serial() -> Serial {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(SERIAL_LOCK_FILE)
        .expect("open the fault-test lock file");
    file.lock().expect("take the fault-test lock");
    Serial {
        _file: file,
        _guard: guard,
    }
}

pub fn ctl(args: &[&str]) {
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

pub fn broker_up() -> bool {
    std::net::TcpStream::connect("127.0.0.1:5672").is_ok()
}

pub fn wait_broker_up() {
    let t0 = Instant::now();
    while !broker_up() {
        assert!(t0.elapsed() < WAIT, "broker did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Puts the broker back the way the other tests expect it, whatever happens.
pub struct Restore;
impl Restore {
    /// Starts the app and clears the alarm now, and again when dropped.
    pub fn ensure() -> Restore {
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

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A durable queue bound to a durable topic exchange: it keeps what arrives
/// while the broker restarts and nobody consumes.
pub fn durable_capture(exchange: &str, queue: &str) {
    durable_capture_at(AMQP_URL, exchange, queue, FieldTable::default());
}

/// [`durable_capture`] on the broker at `url` (a lapin URL), the queue
/// declared with `arguments` (`x-queue-type` for a quorum queue…).
pub fn durable_capture_at(url: &str, exchange: &str, queue: &str, arguments: FieldTable) {
    rt().block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default())
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
            arguments,
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

/// Logs `n` numbered records (field `i`) at a steady pace, `pace` after
/// every 100, on another thread while `fault` runs on this one; returns
/// what `fault` returned once both are done.
pub fn stream_with<T>(shipper: &Shipper, n: u64, pace: Duration, fault: impl FnOnce() -> T) -> T {
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
        let out = fault();
        producer.join().unwrap();
        out
    })
}

/// Counts of each record number (field `i`) and of each record id in the
/// queue, read until `n` distinct numbers have arrived or the queue stays
/// quiet; the queue and exchange are deleted.
pub fn drain_counts(
    exchange: &str,
    queue: &str,
    n: u64,
) -> (HashMap<u64, u32>, HashMap<String, u32>) {
    let number = |v: &serde_json::Value| v["i"].as_u64();
    drain_keyed(exchange, queue, n, number)
}

/// [`drain_counts`] with the record number read by `number` (records it
/// gives `None` for, such as probes, are counted by id only).
pub fn drain_keyed(
    exchange: &str,
    queue: &str,
    n: u64,
    number: impl Fn(&serde_json::Value) -> Option<u64>,
) -> (HashMap<u64, u32>, HashMap<String, u32>) {
    drain_keyed_at(AMQP_URL, exchange, queue, n, number)
}

/// [`drain_keyed`] on the broker at `url` (a lapin URL).
pub fn drain_keyed_at(
    url: &str,
    exchange: &str,
    queue: &str,
    n: u64,
    number: impl Fn(&serde_json::Value) -> Option<u64>,
) -> (HashMap<u64, u32>, HashMap<String, u32>) {
    let counts = rt().block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default())
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
            if let Some(i) = number(&v) {
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
    delete_exchange_at(url, exchange);
    counts
}
