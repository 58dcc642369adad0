//! A process of the scenarios in `tests/liveness.rs` whose standard error
//! the test reads (the shipper writes its `[logcollect]` lines straight to
//! descriptor 2, past the test harness). Configured from `LOGCOLLECT_*`
//! plus:
//!
//! - `LC_CHILD_RECORDS`: numbered records to log (field `i`);
//! - `LC_CHILD_PACE_MS`: pause after each record (default 0);
//! - `LC_CHILD_BURST`: records logged first without a pause (default 0);
//! - `LC_CHILD_PAD_BYTES`: length of a padding field (default 0);
//! - `LC_CHILD_SHUTDOWN_MS`: the shutdown deadline (default 2,000).
//!
//! It logs the records, shuts down, and prints on standard output one
//! `name value` line per counter, the log calls refused, and its resident
//! memory (`rss_start_kb` once the shipper started, `rss_peak_kb` at the
//! end) and CPU time (`cpu_ms`).

use std::time::Duration;

use logcollect::{Config, Level, Record, Shipper};

fn var(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}")))
        .unwrap_or(default)
}

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time used so far (user and system), from `/proc/self/stat`, in
/// clock ticks taken as 100 a second (Linux's `USER_HZ` on every common
/// platform).
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum::<u64>() * 10
}

fn main() {
    let config = Config::builder()
        .env()
        .and_then(|b| b.build())
        .unwrap_or_else(|e| panic!("scenario child configuration: {e}"));
    let shipper = Shipper::new(config).expect("start the shipper");
    let rss_start_kb = status_kb("VmRSS");
    let records = var("LC_CHILD_RECORDS", 0);
    let pace = Duration::from_millis(var("LC_CHILD_PACE_MS", 0));
    let burst = var("LC_CHILD_BURST", 0);
    let pad = "x".repeat(var("LC_CHILD_PAD_BYTES", 0) as usize);
    let mut refused_calls = 0u64;
    for i in 0..records {
        let record = Record::new(Level::Info, "scenario", "numbered")
            .field("i", i)
            .field("pad", pad.as_str());
        if !shipper.submit(&record) {
            refused_calls += 1;
        }
        if i >= burst && !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    let deadline = Duration::from_millis(var("LC_CHILD_SHUTDOWN_MS", 2000));
    let _ = shipper.shutdown(deadline);
    let s = shipper.stats();
    for (name, value) in [
        ("accepted", s.accepted),
        ("confirmed", s.confirmed),
        ("pending", s.pending()),
        ("on_disk", s.on_disk),
        ("rejected", s.rejected),
        ("unroutable", s.unroutable),
        ("spool_dropped", s.spool_dropped),
        ("spool_corrupt", s.spool_corrupt),
        ("undelivered_at_shutdown", s.undelivered_at_shutdown),
        ("kept_in_spool_at_shutdown", s.kept_in_spool_at_shutdown),
        ("dropped_queue_full", s.dropped_queue_full),
        ("dropped_memory_full", s.dropped_memory_full),
        ("refused", s.refused()),
        ("spooled", s.spooled),
        ("spool_bytes", s.spool_bytes),
        ("connects", s.connects),
        ("connect_failures", s.connect_failures),
        ("connection_losses", s.connection_losses),
        ("balanced", u64::from(s.balanced())),
        ("refused_calls", refused_calls),
        ("rss_start_kb", rss_start_kb),
        ("rss_peak_kb", status_kb("VmHWM")),
        ("cpu_ms", cpu_ms()),
    ] {
        println!("{name} {value}");
    }
}
