//! Fault suite against the real broker: connections cut, the broker app
//! stopped mid-stream or at start, a memory alarm. Numbered records are
//! counted at a durable capture queue: none may be missing; duplicates can
//! only be republished records (same `record_id`).
//!
//! These tests stop and cut the shared broker, so they run one at a time
//! (a lock in this file; cargo runs test binaries one after another) and
//! always restore it, even when they fail.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use logcollect::{Level, Record, Shipper};
use logcollect_tests::faults::{
    ctl, drain_counts, durable_capture, serial, stream_with, wait_broker_up, Restore, WAIT,
};
use logcollect_tests::{config, unique};

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

#[test]
fn connections_cut_five_times_mid_stream() {
    let _serial = serial();
    let _restore = Restore::ensure();
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
    let _serial = serial();
    let _restore = Restore::ensure();
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
    let _serial = serial();
    let _restore = Restore::ensure();
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
    let _serial = serial();
    let _restore = Restore::ensure();
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
