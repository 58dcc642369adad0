//! The two calls of `benches/caller.rs`, alone, for `bench/caller_callgrind.sh`:
//! instruction counts under callgrind are repeatable on a shared, noisy
//! machine where wall time is not.
//!
//! `caller_callgrind <tracing|log> <calls>` builds a shipper whose broker URI
//! is dead (`DEAD_BROKER_URI`) and whose queue holds more than `calls`
//! records, waits for its first failed connect (so the shipper sits in its
//! reconnect loop and never pulls from the queue), then makes the calls
//! inside one `measured` function, the only one callgrind collects in. It
//! checks that every call was accepted: a refused call would measure the
//! drop path instead.

use std::hint::black_box;
use std::time::Duration;

use logcollect::{LogcollectLayer, LogcollectLogger, Shipper};
use logcollect_bench::shapes::{log_info_fmt_arg as log_one, tracing_info_3_fields as tracing_one};
use logcollect_bench::{bench_config, unique, wait_for, DEAD_BROKER_URI};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt as _;

/// The `tracing` calls callgrind counts (`--toggle-collect='*::measured_*'`).
#[inline(never)]
fn measured_tracing(dispatch: &Dispatch, calls: u64) {
    tracing::dispatcher::with_default(dispatch, || {
        for i in 0..calls {
            tracing_one(black_box(i));
        }
    });
}

/// The `log` calls callgrind counts.
#[inline(never)]
fn measured_log(logger: &LogcollectLogger, calls: u64) {
    for i in 0..calls {
        log_one(logger, black_box(i));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let shape = args.next().unwrap_or_else(|| "tracing".to_owned());
    let calls: u64 = args
        .next()
        .map_or(10_000, |n| n.parse().expect("a number of calls"));
    let config = bench_config(DEAD_BROKER_URI, &unique("logcollect-bench-callgrind"))
        .queue_capacity(calls as usize + 1024)
        .build()
        .expect("config");
    let shipper = Shipper::new(config).expect("shipper");
    // Under valgrind everything runs ~50x slower: be patient.
    let down = wait_for(Duration::from_secs(120), || {
        shipper.stats().connect_failures > 0
    });
    assert!(down, "no failed connect yet: {:?}", shipper.stats());
    let before = shipper.stats().accepted;
    // One call outside the count first: call-site registration and
    // thread-local set-up happen once per process, not per call.
    match shape.as_str() {
        "tracing" => {
            let dispatch = Dispatch::new(
                tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone())),
            );
            tracing::dispatcher::with_default(&dispatch, || tracing_one(0));
            measured_tracing(&dispatch, calls);
        }
        "log" => {
            let logger = LogcollectLogger::new(shipper.clone());
            log_one(&logger, 0);
            measured_log(&logger, calls);
        }
        other => panic!("unknown shape {other:?} (tracing or log)"),
    }
    let accepted = shipper.stats().accepted - before;
    assert_eq!(
        accepted,
        calls + 1,
        "not every call was accepted: {:?}",
        shipper.stats()
    );
    println!("{shape}: {calls} calls accepted");
    let _ = shipper.shutdown(Duration::from_millis(50));
}
