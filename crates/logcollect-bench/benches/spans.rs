//! What a span costs the application (issue 18, item 0), our layer beside
//! `tracing_subscriber::fmt` with `EnvFilter::new("info")`, all at level
//! `info`:
//!
//! | case | per iteration |
//! |---|---|
//! | `disabled_trace_span` | `trace_span!(…, i)` created, entered and exited |
//! | `enabled_info_span` | `info_span!(…, request_id = "r-1", i)` created, entered and exited, no event |
//! | `event_in_span` | `info!(user, order, latency_ms, "request done")` inside an entered info span |
//!
//! and the peers:
//!
//! - `logcollect_boot`: [`logcollect::boot::filtered_layer`] on a registry,
//!   the layer as `boot::default_config` installs it;
//! - `logcollect_layer`: [`logcollect::LogcollectLayer`] alone on a registry,
//!   what `boot::layer` returns (no filter in front, so every call site stays
//!   enabled and the layer checks the level itself);
//! - `fmt_envfilter`: `tracing_subscriber::fmt()` with `EnvFilter::new("info")`,
//!   writing to `std::io::sink()`.
//!
//! The logcollect shipper has a broker URI where nothing listens and, as in
//! `benches/caller.rs`, a fresh queue per sample with room for every call of
//! it, so `event_in_span` times encoding the record and queueing it (with the
//! broker down the shipper thread pulls nothing and no call wakes it; the
//! broker-up path is timed by `benches/caller.rs`).
//!
//! Nothing is installed globally. Each peer's dispatcher lives only while
//! its own case runs, and each peer has its own call sites (the cases are
//! expanded once per peer), because `tracing` combines the interest of
//! every live dispatcher in a call site's cache and in the global maximum
//! level: a peer that enables everything would otherwise make the others
//! look slow.
//!
//! ```text
//! cargo bench -p logcollect-bench --bench spans -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! **Instruction counts.** Wall time on a shared machine is noisy; `callgrind`
//! counts are not. With `SPANS_CALLGRIND=<peer>:<case>:<iterations>` the
//! binary skips criterion, runs that case that many times in one
//! `measured` function and exits; `bench/spans_callgrind.sh` runs every
//! pair under `valgrind --tool=callgrind` with collection on inside
//! `measured` only, on the main thread, and prints instructions per iteration.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use logcollect::{LogcollectLayer, Shipper};
use logcollect_bench::{bench_config, DEAD_BROKER_URI};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::EnvFilter;

const PEERS: [&str; 3] = ["logcollect_boot", "logcollect_layer", "fmt_envfilter"];
const CASES: [&str; 3] = ["disabled_trace_span", "enabled_info_span", "event_in_span"];

/// The three cases, with call sites of their own for each peer.
macro_rules! peer_cases {
    ($name:ident) => {
        mod $name {
            use super::*;

            fn disabled_span(i: u64) {
                let span = tracing::trace_span!(target: "app::poll", "poll", i);
                let _entered = span.enter();
                black_box(&span);
            }

            fn enabled_span(i: u64) {
                let span =
                    tracing::info_span!(target: "app::web", "request", request_id = "r-1", i);
                let _entered = span.enter();
                black_box(&span);
            }

            fn request_span() -> tracing::Span {
                tracing::info_span!(target: "app::web", "request", request_id = "r-1")
            }

            fn event(i: u64) {
                tracing::info!(
                    target: "app::web",
                    user = "ann",
                    order = i,
                    latency_ms = 1.5,
                    "request done"
                );
            }

            /// A few calls of each case before timing (call site
            /// registration, first allocations).
            pub(super) fn warm_up() {
                for case in CASES {
                    looped(case, WARM_UP);
                }
            }

            /// Runs `case` `iters` times and times it (the function
            /// callgrind counts in).
            #[inline(never)]
            pub(super) fn measured(case: &str, iters: u64) -> Duration {
                let start = Instant::now();
                looped(case, iters);
                start.elapsed()
            }

            fn looped(case: &str, iters: u64) {
                match case {
                    "disabled_trace_span" => {
                        for i in 0..iters {
                            disabled_span(black_box(i));
                        }
                    }
                    "enabled_info_span" => {
                        for i in 0..iters {
                            enabled_span(black_box(i));
                        }
                    }
                    "event_in_span" => {
                        let span = request_span();
                        let _entered = span.enter();
                        for i in 0..iters {
                            event(black_box(i));
                        }
                    }
                    other => panic!("unknown case {other:?}"),
                }
            }
        }
    };
}

peer_cases!(logcollect_boot);
peer_cases!(logcollect_layer);
peer_cases!(fmt_envfilter);

/// Calls of each case before timing.
const WARM_UP: u64 = 100;

/// A shipper with no broker and room for `iters` records and the warm-up's.
fn shipper(iters: u64) -> Shipper {
    let room = iters as usize + 4 * WARM_UP as usize;
    let config = bench_config(DEAD_BROKER_URI, "logcollect-bench-spans")
        .queue_capacity(room)
        .queue_max_bytes((room * 4096).max(16 << 20))
        .build()
        .expect("config");
    Shipper::new(config).expect("shipper")
}

fn dispatch(peer: &str, shipper: &Shipper) -> Dispatch {
    match peer {
        "logcollect_boot" => Dispatch::new(
            tracing_subscriber::registry().with(logcollect::boot::filtered_layer(shipper)),
        ),
        "logcollect_layer" => Dispatch::new(
            tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone())),
        ),
        "fmt_envfilter" => Dispatch::new(
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new("info"))
                .with_writer(std::io::sink)
                .finish(),
        ),
        other => panic!("unknown peer {other:?}"),
    }
}

/// Runs `case` `iters` times for `peer` under its own dispatcher and a
/// fresh shipper, after a warm-up; checks every record was queued.
fn run(peer: &str, case: &str, iters: u64) -> Duration {
    let shipper = shipper(iters);
    let dispatch = dispatch(peer, &shipper);
    let took = run_in(peer, case, &dispatch, iters);
    drop(dispatch);
    let stats = shipper.stats();
    assert_eq!(
        (stats.dropped_queue_full, stats.dropped_memory_full),
        (0, 0),
        "{stats:?}"
    );
    took
}

fn run_in(peer: &str, case: &str, dispatch: &Dispatch, iters: u64) -> Duration {
    tracing::dispatcher::with_default(dispatch, || match peer {
        "logcollect_boot" => {
            logcollect_boot::warm_up();
            logcollect_boot::measured(case, iters)
        }
        "logcollect_layer" => {
            logcollect_layer::warm_up();
            logcollect_layer::measured(case, iters)
        }
        _ => {
            fmt_envfilter::warm_up();
            fmt_envfilter::measured(case, iters)
        }
    })
}

fn main() {
    if let Ok(spec) = std::env::var("SPANS_CALLGRIND") {
        let mut parts = spec.split(':');
        let (Some(peer), Some(case), Some(iters)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("SPANS_CALLGRIND=<peer>:<case>:<iterations>, got {spec:?}");
        };
        let iters = iters.parse().expect("a number of iterations");
        let took = run(peer, case, iters);
        println!("{peer} {case} {iters} iterations in {took:?}");
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    for case in CASES {
        let mut group = c.benchmark_group(case);
        for peer in PEERS {
            group.bench_function(peer, |b| {
                b.iter_custom(|iters| run(peer, case, iters));
            });
        }
        group.finish();
    }
    c.final_summary();
}
