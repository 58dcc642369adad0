//! Caller latency of one log call, per call, with 4 threads logging at once
//! (and 1 thread for reference): p50 and p99 for
//!
//! - `logcollect_broker_up`: logcollect connected to the local broker and
//!   publishing while the threads log;
//! - `appender_json_sink`: `tracing-appender` (default settings) with the JSON
//!   formatter, writing to `std::io::sink()`; `log` through
//!   `tracing_log::LogTracer`;
//! - `otel_batch_noop`: OpenTelemetry's logs SDK, batch processor, an exporter
//!   that drops every batch; `log` through `opentelemetry-appender-log`.
//!
//! The peers and the call shapes are those of `benches/caller.rs`
//! (`tracing::info!` with 3 fields; a `log` record with one format argument);
//! the peers are built by the library (`src/peers.rs`).
//!
//! Each thread makes `--calls` calls (default 20,000) after 1,000 untimed
//! ones, all threads released together by a barrier, and times every call
//! with an `Instant` around it. An empty timed call is measured the same way
//! (1 and 4 threads) and its p50 is subtracted from the peers' percentiles;
//! the table shows it as `empty_timed_call`. The 4-thread percentiles are
//! over the calls of all four threads together.
//!
//! Every measurement builds a fresh shipper (and a fresh peer) whose queue
//! holds more records than the threads make, for the reason given in
//! `benches/caller.rs`: a full queue would turn the rest of the calls into
//! drops, which cross no thread. The run checks that logcollect accepted every
//! call, that OpenTelemetry exported every record and that tracing-appender
//! dropped no line. The shipper's shutdown prints `[logcollect] shutdown: N
//! record(s) not delivered`: expected, its backlog is thrown away.
//!
//! Each round prints its table; the last table has the medians over
//! `--rounds` rounds (default 3), with logcollect's ratios to the peers. On a
//! machine with fewer than 4 free cores the 4 threads, the shipper and the
//! broker take turns, and p99 then mostly measures the scheduler: compare the
//! peers within one run, never across machines.
//!
//! ```text
//! cargo run --release -p logcollect-bench --bin caller_threads                       # 20,000 calls, 3 rounds
//! cargo run --release -p logcollect-bench --bin caller_threads -- --calls 5000 --rounds 1
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use logcollect::{LogcollectLogger, Shipper};
use logcollect_bench::shapes::{log_info_fmt_arg as log_one, tracing_info_3_fields as tracing_one};
use logcollect_bench::{
    appender_json, bench_config, logcollect_dispatch, median, unique, wait_for, Admin, OtelPeer,
    BROKER_URI,
};
use tracing::Dispatch;

const USAGE: &str = "usage: caller_threads [--calls N] [--rounds R]
  --calls N   timed calls per thread (default 20000)
  --rounds R  rounds; the last table has their medians (default 3)";

/// Thread counts measured: 4 at once, and 1 for reference.
const THREADS: [usize; 2] = [1, 4];

/// Untimed calls per thread before the barrier: registers the call sites and
/// warms the caches and the allocator, so the timed calls show the steady
/// state.
const WARM_UP: u64 = 1_000;

/// tracing-appender's default buffer: more lines than this in flight and it
/// drops (the benchmark checks that it dropped none).
const APPENDER_BUFFER: u64 = 128_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    Tracing,
    Log,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Tracing => "tracing_info_3_fields",
            Shape::Log => "log_info_fmt_arg",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    LogcollectUp,
    Appender,
    Otel,
}

impl Peer {
    const ALL: [Peer; 3] = [Peer::LogcollectUp, Peer::Appender, Peer::Otel];

    fn name(self) -> &'static str {
        match self {
            Peer::LogcollectUp => "logcollect_broker_up",
            Peer::Appender => "appender_json_sink",
            Peer::Otel => "otel_batch_noop",
        }
    }
}

struct Args {
    calls: u64,
    rounds: usize,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        calls: 20_000,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().with_context(|| format!("{flag} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--calls" => {
                args.calls = value("--calls")?
                    .replace('_', "")
                    .parse()
                    .context("--calls: not a number")?;
            }
            "--rounds" => {
                args.rounds = value("--rounds")?
                    .parse()
                    .context("--rounds: not a number")?;
            }
            other => anyhow::bail!("bad argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(
        args.calls > 0 && args.rounds > 0,
        "--calls and --rounds must be positive"
    );
    let most = max_threads() as u64 * (args.calls + WARM_UP);
    ensure!(
        most < APPENDER_BUFFER,
        "--calls: at most {} so that tracing-appender's buffer ({APPENDER_BUFFER} lines) never fills",
        APPENDER_BUFFER / max_threads() as u64 - WARM_UP - 1
    );
    Ok(Some(args))
}

fn max_threads() -> usize {
    THREADS.iter().copied().max().unwrap_or(1)
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| a.map(run).transpose()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caller_threads: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `calls` calls of `call`, each timed alone; nanoseconds per call.
fn timed<F: Fn(u64)>(calls: u64, call: &F) -> Vec<u64> {
    let mut ns = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let t = Instant::now();
        call(black_box(i));
        ns.push(t.elapsed().as_nanos() as u64);
    }
    ns
}

/// Runs `call` on `threads` threads at once (each with `dispatch` as its
/// default dispatcher when given) and returns every timed call's latency.
fn on_threads<F: Fn(u64) + Sync>(
    threads: usize,
    calls: u64,
    dispatch: Option<&Dispatch>,
    call: F,
) -> Vec<u64> {
    let barrier = Barrier::new(threads);
    let work = || {
        for i in 0..WARM_UP {
            call(black_box(i));
        }
        barrier.wait();
        timed(calls, &call)
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| match dispatch {
                    Some(d) => tracing::dispatcher::with_default(d, work),
                    None => work(),
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// p50 and p99 (nearest rank) of `ns`, in ns.
fn percentiles(mut ns: Vec<u64>) -> (f64, f64) {
    ns.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * ns.len() as f64).ceil() as usize).clamp(1, ns.len().max(1));
        ns.get(rank - 1).map_or(f64::NAN, |&v| v as f64)
    };
    (at(0.50), at(0.99))
}

/// A shipper connected to the broker, with room for every call of a
/// measurement (see the module docs).
fn shipper(exchange: &str, total: u64) -> Result<Shipper> {
    let config = bench_config(BROKER_URI, exchange)
        .queue_capacity(total as usize + 1024)
        .build()
        .context("config")?;
    let s = Shipper::new(config).context("shipper")?;
    ensure!(
        wait_for(Duration::from_secs(60), || s.stats().connected),
        "shipper did not connect: {:?}",
        s.stats()
    );
    Ok(s)
}

/// One measurement: `peer` called in `shape` on `threads` threads, fresh
/// peer, checked. Latencies, timer overhead included.
fn measure(
    peer: Peer,
    shape: Shape,
    threads: usize,
    calls: u64,
    exchange: &str,
) -> Result<Vec<u64>> {
    let total = threads as u64 * (calls + WARM_UP);
    match peer {
        Peer::LogcollectUp => {
            let s = shipper(exchange, total)?;
            let before = s.stats();
            let ns = match shape {
                Shape::Tracing => {
                    on_threads(threads, calls, Some(&logcollect_dispatch(&s)), tracing_one)
                }
                Shape::Log => {
                    let logger = LogcollectLogger::new(s.clone());
                    on_threads(threads, calls, None, |i| log_one(&logger, i))
                }
            };
            let after = s.stats();
            let _ = s.shutdown(Duration::from_millis(50));
            let accepted = after.accepted - before.accepted;
            let dropped = after.dropped_queue_full - before.dropped_queue_full;
            ensure!(
                (accepted, dropped) == (total, 0),
                "logcollect: (accepted, dropped) = ({accepted}, {dropped}) of {total} calls; {after:?}"
            );
            Ok(ns)
        }
        Peer::Appender => {
            let (d, guard, dropped) = appender_json();
            let ns = match shape {
                Shape::Tracing => on_threads(threads, calls, Some(&d), tracing_one),
                Shape::Log => {
                    let tracer = tracing_log::LogTracer::new();
                    on_threads(threads, calls, Some(&d), |i| log_one(&tracer, i))
                }
            };
            let dropped = dropped.dropped_lines();
            drop(d);
            drop(guard);
            ensure!(
                dropped == 0,
                "tracing-appender dropped {dropped} of {total} lines"
            );
            Ok(ns)
        }
        Peer::Otel => {
            let otel = OtelPeer::new(total as usize + 1024);
            let ns = match shape {
                Shape::Tracing => on_threads(threads, calls, Some(&otel.dispatch()), tracing_one),
                Shape::Log => {
                    let logger = otel.log_bridge();
                    on_threads(threads, calls, None, |i| log_one(&logger, i))
                }
            };
            let exported = otel.finish(Duration::from_secs(10));
            ensure!(
                exported == total,
                "OpenTelemetry exported {exported} of {total} records"
            );
            Ok(ns)
        }
    }
}

/// (p50, p99) per measurement, one entry per round.
#[derive(Default)]
struct Results {
    /// An empty timed call, per thread count.
    overhead: BTreeMap<usize, Vec<(f64, f64)>>,
    /// Per (shape, peer, threads), timer overhead not yet subtracted.
    calls: BTreeMap<(Shape, Peer, usize), Vec<(f64, f64)>>,
}

fn run(args: Args) -> Result<()> {
    let admin = Admin::connect()?;
    let exchange = unique("logcollect-bench-caller-threads");
    // A bounded queue so the records are routed (no "unroutable" reports)
    // and the broker keeps only the newest ones.
    let queue = admin.topic_with_queue(&exchange, Some(10_000))?;
    let result = rounds(&args, &exchange);
    admin.delete(&exchange, &queue);
    admin.close();
    let results = result?;
    print_medians(&results);
    Ok(())
}

fn rounds(args: &Args, exchange: &str) -> Result<Results> {
    let mut results = Results::default();
    for round in 0..args.rounds {
        for threads in THREADS {
            let ns = on_threads(threads, args.calls, None, |i| {
                black_box(i);
            });
            results
                .overhead
                .entry(threads)
                .or_default()
                .push(percentiles(ns));
            for shape in [Shape::Tracing, Shape::Log] {
                for peer in Peer::ALL {
                    let ns = measure(peer, shape, threads, args.calls, exchange)
                        .with_context(|| format!("{} {} x{threads}", shape.name(), peer.name()))?;
                    results
                        .calls
                        .entry((shape, peer, threads))
                        .or_default()
                        .push(percentiles(ns));
                }
            }
        }
        println!(
            "\nround {}/{}: {} timed calls per thread",
            round + 1,
            args.rounds,
            args.calls
        );
        print_table(&results, |v| v.last().copied());
    }
    Ok(results)
}

/// The table of `pick`'s (p50, p99) per measurement, timer overhead p50
/// subtracted (0 when a call measured below it).
fn print_table(results: &Results, pick: impl Fn(&[(f64, f64)]) -> Option<(f64, f64)>) {
    let ns = |v: f64| {
        if v.is_nan() {
            "n/a".to_owned()
        } else {
            format!("{v:.0}")
        }
    };
    println!(
        "  {:<22} {:<22} {:>7} {:>8} {:>8}",
        "shape", "peer", "threads", "p50 ns", "p99 ns"
    );
    for (&threads, v) in &results.overhead {
        let (p50, p99) = pick(v).unwrap_or((f64::NAN, f64::NAN));
        println!(
            "  {:<22} {:<22} {threads:>7} {:>8} {:>8}   (subtracted below)",
            "-",
            "empty_timed_call",
            ns(p50),
            ns(p99)
        );
    }
    for (&(shape, peer, threads), v) in &results.calls {
        let overhead = results
            .overhead
            .get(&threads)
            .and_then(|o| pick(o))
            .map_or(0.0, |o| o.0);
        let (p50, p99) = pick(v).unwrap_or((f64::NAN, f64::NAN));
        println!(
            "  {:<22} {:<22} {threads:>7} {:>8} {:>8}",
            shape.name(),
            peer.name(),
            ns((p50 - overhead).max(0.0)),
            ns((p99 - overhead).max(0.0))
        );
    }
}

/// The medians over rounds of each percentile, and logcollect's ratios to
/// the peers on them.
fn print_medians(results: &Results) {
    let med = |v: &[(f64, f64)]| {
        let mut p50: Vec<f64> = v.iter().map(|x| x.0).collect();
        let mut p99: Vec<f64> = v.iter().map(|x| x.1).collect();
        Some((median(&mut p50), median(&mut p99)))
    };
    let rounds = results.overhead.values().next().map_or(0, Vec::len);
    println!("\nmedians over {rounds} round(s), timer overhead p50 subtracted");
    print_table(results, med);
    println!("\n  logcollect_broker_up ÷ peer (medians, overhead subtracted)");
    for shape in [Shape::Tracing, Shape::Log] {
        for threads in THREADS {
            let overhead = results
                .overhead
                .get(&threads)
                .and_then(|o| med(o))
                .map_or(0.0, |o| o.0);
            let get = |peer| {
                results
                    .calls
                    .get(&(shape, peer, threads))
                    .and_then(|v| med(v))
                    .map(|(p50, p99)| ((p50 - overhead).max(0.0), (p99 - overhead).max(0.0)))
            };
            let ratio = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| {
                let r = |x: f64, y: f64| {
                    if y > 0.0 {
                        format!("{:.2}", x / y)
                    } else {
                        "n/a".to_owned()
                    }
                };
                a.zip(b).map_or("n/a / n/a".to_owned(), |(a, b)| {
                    format!("{} / {}", r(a.0, b.0), r(a.1, b.1))
                })
            };
            let ours = get(Peer::LogcollectUp);
            println!(
                "  {:<22} {threads} thread(s): ÷ appender p50/p99 {}; ÷ otel p50/p99 {}",
                shape.name(),
                ratio(ours, get(Peer::Appender)),
                ratio(ours, get(Peer::Otel)),
            );
        }
    }
}
