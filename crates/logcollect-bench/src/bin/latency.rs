//! Latency from the log call to the broker's publisher confirm, under a
//! steady offered load, against the real broker (issue 18, item 3).
//!
//! Cases: 1,000 and 10,000 records/s, one record per message and batched
//! (100 records per message, JSON array), each with the default
//! `wake_interval` (1 ms); `--wake-interval-us U` (repeatable) adds the
//! 10,000/s batched case with a wake interval of `U` µs.
//!
//! How a case runs: a fresh [`Shipper`] on a unique exchange with a bound
//! queue (unroutable records would not count as confirmed). The main thread
//! logs `log` records `"latency probe {i}"` through [`LogcollectLogger`] at
//! the offered rate: record `i` is due at `start + i / rate`, the thread
//! sleeps until then (it is never early; when it is late it logs at once and
//! catches up), and notes the time just before the call. The first
//! `--warmup` seconds are logged but left out of the figures, then
//! `--seconds` more are measured.
//!
//! How a confirm is seen: a sampler thread reads [`Shipper::stats`] about
//! every 200 µs. The driver publishes its account after every step, and on
//! one channel the broker confirms in publishing order, which is sequence
//! order while nothing is republished (checked: no republish, no nack, no
//! lost connection, or the case fails). So record `i` was confirmed at the
//! first poll that shows `confirmed > i`. The same polls give two earlier
//! stages: picked up by the shipper thread (`accepted - queued > i`) and
//! published (`confirmed + in_flight > i`). **Resolution**: a stage is seen
//! up to one polling interval late (the measured mean interval is printed,
//! `poll`), so figures are high by half of it on average.
//!
//! The log call itself is timed too (`call p50/p99`, wall time around the
//! call on the caller's thread): at a paced rate it shows what a caller pays
//! when the shipper is not kept busy, wake-ups included.
//!
//! With `--delivery`, a consumer on the case's queue also notes when each
//! record arrives (its index is read back from the message text): time from
//! the log call to the delivery to a consumer, the path Logstash sees. It
//! costs the broker a delivery per message on the same two cores, so it is
//! off by default and the confirm figures of a run with it are not the
//! primary ones.
//!
//! Every case checks that every record logged was accepted and confirmed
//! (and, with `--delivery`, delivered); otherwise the run fails. A case
//! whose connection was lost (other suites inject faults into the shared
//! broker) is run again, at most twice.
//!
//! ```text
//! cargo run --release -p logcollect-bench --bin latency -- \
//!     [--seconds S] [--warmup W] [--rounds R] [--wake-interval-us U]... [--delivery]
//! ```
//!
//! Output: one line per case and round (`confirm` p50, p90, p99 and max in
//! ms, then the stages' p50/p99, then what explains them: the rate held,
//! records per message, the most records in flight at once (a full confirm
//! window shows as `published` growing), how late the caller ran, the
//! polling interval, and the CPU the broker and this process used, in % of
//! one core), then the medians over the rounds of each figure, one line per
//! case starting `latency:`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use futures_util::StreamExt as _;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use logcollect::{LogcollectLogger, Shipper, DEFAULT_WAKE_INTERVAL};
use logcollect_bench::{
    bench_config, broker_pid, median, process_cpu_s, unique, wait_for, Admin, BROKER_URI,
};

const USAGE: &str =
    "usage: latency [--seconds S] [--warmup W] [--rounds R] [--wake-interval-us U]... [--delivery]
  --seconds S           measured seconds per case (default 5)
  --warmup W            seconds logged first and left out (default 1)
  --rounds R            rounds of every case (default 3)
  --wake-interval-us U  also run 10,000/s batched with wake_interval U µs (repeatable)
  --delivery            also time the delivery to a consumer (adds broker load)";

/// The consumer's lapin URL (same broker, vhost `/`).
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The sampler's polling period. Short enough that the resolution is small
/// beside the wake interval (1 ms), long enough that the sampler costs little
/// of the two cores: one `stats()` (a lock and a small copy) per poll.
const POLL: Duration = Duration::from_micros(200);

/// Records per message in the batched cases (the issue's figure).
const BATCH: usize = 100;

/// The text of record `i` is `PROBE` followed by `i`.
const PROBE: &str = "latency probe ";

struct Args {
    seconds: f64,
    warmup: f64,
    rounds: usize,
    wake_us: Vec<u64>,
    delivery: bool,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        seconds: 5.0,
        warmup: 1.0,
        rounds: 3,
        wake_us: Vec::new(),
        delivery: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--seconds" => args.seconds = value(&a)?.parse().context("--seconds")?,
            "--warmup" => args.warmup = value(&a)?.parse().context("--warmup")?,
            "--rounds" => args.rounds = value(&a)?.parse().context("--rounds")?,
            "--wake-interval-us" => args
                .wake_us
                .push(value(&a)?.parse().context("--wake-interval-us")?),
            "--delivery" => args.delivery = true,
            other => bail!("bad argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(
        args.seconds > 0.0 && args.warmup >= 0.0 && args.rounds > 0,
        "--seconds and --rounds must be positive, --warmup not negative"
    );
    Ok(Some(args))
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| a.map(run).transpose()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latency: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One load: offered rate, records per message, wake interval.
#[derive(Clone, Copy)]
struct Case {
    rate: u32,
    per_message: usize,
    wake: Duration,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>6}/s x{:<3} wake {:>5} µs",
            self.rate,
            self.per_message,
            self.wake.as_micros()
        )
    }
}

/// p50, p90, p99 and max of one stage, in ms.
#[derive(Clone, Copy)]
struct Spread {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Spread {
    fn of(mut ns: Vec<u64>) -> Spread {
        ns.sort_unstable();
        let at = |q: f64| {
            let i = ((ns.len() - 1) as f64 * q).round() as usize;
            ns[i] as f64 / 1e6
        };
        Spread {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

struct Outcome {
    /// The log call itself, on the caller's thread (wall time, in ms like
    /// the rest; printed in ns).
    call: Spread,
    confirm: Spread,
    pickup: Spread,
    publish: Spread,
    delivery: Option<Spread>,
    /// Records logged per second over the measured part.
    achieved: f64,
    /// Latest a call came after its due time, ms.
    late_max: f64,
    /// Mean time between two polls of the sampler, µs.
    poll_us: f64,
    measured: usize,
    /// Records per message, on average.
    per_message: f64,
    /// Most records seen in flight at once (the confirm window bounds it).
    in_flight_max: u64,
    /// CPU used over the case, in % of one core: the broker (`None`: its
    /// process was not found), and this process (caller, shipper, sampler).
    broker_cpu: Option<f64>,
    own_cpu: f64,
}

fn run(args: Args) -> Result<()> {
    let mut cases = Vec::new();
    for per_message in [1, BATCH] {
        for rate in [1_000, 10_000] {
            cases.push(Case {
                rate,
                per_message,
                wake: DEFAULT_WAKE_INTERVAL,
            });
        }
    }
    for &us in &args.wake_us {
        cases.push(Case {
            rate: 10_000,
            per_message: BATCH,
            wake: Duration::from_micros(us),
        });
    }
    let admin = Admin::connect()?;
    println!(
        "call-to-confirm latency, ms; {} s measured after {} s warm-up per case; \
         sampler polls every {POLL:?} (figures are late by up to one poll)",
        args.seconds, args.warmup
    );
    let mut results: Vec<Vec<Outcome>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 1..=args.rounds {
        for (case, out) in cases.iter().zip(&mut results) {
            let o = attempt(round, case, || run_case(&admin, *case, &args))?;
            println!("round {round} {case}: {}", line(&o));
            out.push(o);
        }
    }
    admin.close();
    println!("medians of {} rounds:", args.rounds);
    for (case, outs) in cases.iter().zip(&results) {
        let med = |f: &dyn Fn(&Outcome) -> f64| median(&mut outs.iter().map(f).collect::<Vec<_>>());
        let mut text = format!(
            "latency: {case}: call p50/p99 {:.0}/{:.0} ns; confirm p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms; \
             picked up p50/p99 {:.2}/{:.2}, published {:.2}/{:.2}",
            med(&|o| o.call.p50 * 1e6),
            med(&|o| o.call.p99 * 1e6),
            med(&|o| o.confirm.p50),
            med(&|o| o.confirm.p90),
            med(&|o| o.confirm.p99),
            med(&|o| o.confirm.max),
            med(&|o| o.pickup.p50),
            med(&|o| o.pickup.p99),
            med(&|o| o.publish.p50),
            med(&|o| o.publish.p99),
        );
        if outs.iter().all(|o| o.delivery.is_some()) {
            let d = |f: &dyn Fn(&Spread) -> f64| med(&|o| o.delivery.as_ref().map_or(0.0, f));
            text += &format!(
                "; delivered p50/p99 {:.2}/{:.2}",
                d(&|s| s.p50),
                d(&|s| s.p99)
            );
        }
        println!("{text}");
    }
    Ok(())
}

fn line(o: &Outcome) -> String {
    let mut text = format!(
        "call p50/p99 {:.0}/{:.0} ns | confirm p50 {:6.2} p90 {:6.2} p99 {:6.2} max {:6.2} | picked up {:.2}/{:.2}, published {:.2}/{:.2}",
        o.call.p50 * 1e6,
        o.call.p99 * 1e6,
        o.confirm.p50,
        o.confirm.p90,
        o.confirm.p99,
        o.confirm.max,
        o.pickup.p50,
        o.pickup.p99,
        o.publish.p50,
        o.publish.p99
    );
    if let Some(d) = &o.delivery {
        text += &format!(", delivered {:.2}/{:.2}", d.p50, d.p99);
    }
    text += &format!(
        " | {} records at {:.0}/s, {:.1} per message, in flight max {}, latest call {:.2} ms late, poll {:.0} µs",
        o.measured, o.achieved, o.per_message, o.in_flight_max, o.late_max, o.poll_us
    );
    if let Some(b) = o.broker_cpu {
        text += &format!(", CPU broker {b:.0}%");
    }
    text += &format!(", CPU bench {:.0}%", o.own_cpu);
    text
}

/// Raised when the case met a lost connection (a fault test on the shared
/// broker): not a measurement, so it is run again.
#[derive(Debug)]
struct Disturbed(String);

impl std::fmt::Display for Disturbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "disturbed: {}", self.0)
    }
}

impl std::error::Error for Disturbed {}

fn attempt(round: usize, case: &Case, mut f: impl FnMut() -> Result<Outcome>) -> Result<Outcome> {
    for i in 1.. {
        match f() {
            Err(e) if i < 3 && e.is::<Disturbed>() => {
                println!("round {round} {case}: {e:#}; running it again");
                std::thread::sleep(Duration::from_secs(1));
            }
            r => return r,
        }
    }
    unreachable!("the loop returns")
}

fn run_case(admin: &Admin, case: Case, args: &Args) -> Result<Outcome> {
    let exchange = unique("logcollect-bench-latency");
    // Bounded: without a consumer the queue only keeps records routable.
    let queue = admin.topic_with_queue(&exchange, Some(100_000))?;
    let r = measure(case, args, &exchange, &queue);
    admin.delete(&exchange, &queue);
    r
}

fn measure(case: Case, args: &Args, exchange: &str, queue: &str) -> Result<Outcome> {
    let period = Duration::from_secs(1) / case.rate;
    let warmup = (args.warmup * f64::from(case.rate)).round() as usize;
    let n = warmup + (args.seconds * f64::from(case.rate)).round() as usize;
    let config = bench_config(BROKER_URI, exchange)
        .records_per_message(case.per_message)
        .wake_interval(case.wake)
        .shutdown_timeout(Duration::from_secs(10))
        .build()?;
    let shipper = Shipper::new(config)?;
    if !wait_for(Duration::from_secs(60), || shipper.stats().connected) {
        bail!(
            "logcollect did not connect within 60 s: {:?}",
            shipper.stats().last_error
        );
    }
    let epoch = Instant::now();
    // One flag each: the consumer may still be receiving when the sampler
    // is told to stop.
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let stop_consumer = Arc::new(AtomicBool::new(false));
    let consumer = args
        .delivery
        .then(|| consume(queue.to_owned(), n, epoch, Arc::clone(&stop_consumer)))
        .transpose()?;
    let sampler = {
        let (shipper, stop) = (shipper.clone(), Arc::clone(&stop_sampler));
        std::thread::Builder::new()
            .name("latency-sampler".into())
            .spawn(move || sample(&shipper, n, epoch, &stop))?
    };

    let broker = broker_pid();
    let cpu_at = || {
        let b = broker.as_deref().and_then(process_cpu_s).map(|c| c.0);
        let own = process_cpu_s("self").map_or(0.0, |c| c.0);
        (Instant::now(), b, own)
    };
    let cpu0 = cpu_at();
    let logger = LogcollectLogger::new(shipper.clone());
    let mut called = Vec::with_capacity(n);
    let mut late_max = Duration::ZERO;
    let mut call_ns = Vec::with_capacity(n);
    let start = Instant::now();
    let mut measured_from = start;
    for i in 0..n {
        let due = start + period * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let now = Instant::now();
        if i == warmup {
            measured_from = now;
        }
        if i >= warmup {
            late_max = late_max.max(now.saturating_duration_since(due));
        }
        called.push(nanos(epoch, now));
        log::Log::log(
            &logger,
            &log::Record::builder()
                .args(format_args!("{PROBE}{i}"))
                .level(log::Level::Info)
                .target("bench")
                .module_path_static(Some(module_path!()))
                .file_static(Some(file!()))
                .line(Some(line!()))
                .build(),
        );
        if i >= warmup {
            call_ns.push(now.elapsed().as_nanos() as u64);
        }
    }
    let achieved = (n - warmup) as f64 / measured_from.elapsed().as_secs_f64();

    let flushed = shipper.flush(Duration::from_secs(30));
    let cpu1 = cpu_at();
    let wall = (cpu1.0 - cpu0.0).as_secs_f64();
    let broker_cpu = cpu0.1.zip(cpu1.1).map(|(a, b)| (b - a) * 100.0 / wall);
    let own_cpu = (cpu1.2 - cpu0.2) * 100.0 / wall;
    // The sampler stops by itself once it saw every confirm; this bounds
    // its wait when some never come.
    let sampler_done = wait_for(Duration::from_secs(5), || sampler.is_finished());
    stop_sampler.store(true, Ordering::Relaxed);
    let marks = join(sampler)?;
    let delivered = match consumer {
        Some(c) => {
            // Deliveries trail confirms a little: give them time to land.
            wait_for(Duration::from_secs(10), || c.is_finished());
            stop_consumer.store(true, Ordering::Relaxed);
            Some(join(c)??)
        }
        None => None,
    };
    let stats = shipper.stats();
    let _ = shipper.shutdown(Duration::from_secs(10));
    if stats.connection_losses > 0 {
        return Err(Disturbed(format!("the connection was lost ({stats})")).into());
    }
    flushed.map_err(|e| anyhow::anyhow!("flush: {e} ({stats})"))?;
    ensure!(
        stats.accepted == n as u64 && stats.confirmed == n as u64 && stats.lost() == 0,
        "not every record was confirmed: {n} logged; {stats}"
    );
    ensure!(
        stats.republished == 0 && stats.nacked == 0,
        "records were republished: confirms may be out of sequence order, so the \
         figures would be wrong; {stats}"
    );
    ensure!(
        sampler_done && marks.confirm.iter().all(|&t| t != u64::MAX),
        "the sampler did not see every confirm"
    );

    let stage = |at: &[u64]| {
        Spread::of(
            (warmup..n)
                .map(|i| at[i].saturating_sub(called[i]))
                .collect(),
        )
    };
    let delivery = match delivered {
        Some(at) => {
            let missing = at.iter().filter(|&&t| t == u64::MAX).count();
            ensure!(
                missing == 0,
                "{missing} of {n} records did not reach the consumer"
            );
            Some(stage(&at))
        }
        None => None,
    };
    Ok(Outcome {
        call: Spread::of(call_ns),
        confirm: stage(&marks.confirm),
        pickup: stage(&marks.pickup),
        publish: stage(&marks.publish),
        delivery,
        achieved,
        late_max: late_max.as_secs_f64() * 1e3,
        poll_us: marks.polling.as_secs_f64() * 1e6 / marks.polls.max(1) as f64,
        measured: n - warmup,
        per_message: n as f64 / stats.published.max(1) as f64,
        in_flight_max: marks.in_flight_max,
        broker_cpu,
        own_cpu,
    })
}

fn nanos(epoch: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(epoch).as_nanos() as u64
}

fn join<T>(h: JoinHandle<T>) -> Result<T> {
    match h.join() {
        Ok(v) => Ok(v),
        Err(_) => bail!("a measuring thread panicked"),
    }
}

/// When each record was first seen in each stage, ns since the epoch
/// (`u64::MAX`: not seen).
struct Marks {
    pickup: Vec<u64>,
    publish: Vec<u64>,
    confirm: Vec<u64>,
    polls: u64,
    polling: Duration,
    in_flight_max: u64,
}

/// Polls the shipper's account until all `n` records are confirmed or
/// `stop` is set. Records move through the stages in sequence order, so a
/// count is a watermark: the first `k` records have reached the stage.
fn sample(shipper: &Shipper, n: usize, epoch: Instant, stop: &AtomicBool) -> Marks {
    let mut m = Marks {
        pickup: vec![u64::MAX; n],
        publish: vec![u64::MAX; n],
        confirm: vec![u64::MAX; n],
        polls: 0,
        polling: Duration::ZERO,
        in_flight_max: 0,
    };
    let mut seen = [0usize; 3];
    let first = Instant::now();
    loop {
        let s = shipper.stats();
        let t = nanos(epoch, Instant::now());
        m.polls += 1;
        m.in_flight_max = m.in_flight_max.max(s.in_flight);
        let counts = [
            s.accepted - s.queued,
            s.confirmed + s.in_flight,
            s.confirmed,
        ];
        for ((marks, seen), count) in [&mut m.pickup, &mut m.publish, &mut m.confirm]
            .into_iter()
            .zip(&mut seen)
            .zip(counts)
        {
            let upto = (count as usize).min(n);
            if upto > *seen {
                marks[*seen..upto].fill(t);
                *seen = upto;
            }
        }
        if seen[2] >= n || stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(POLL);
    }
    m.polling = first.elapsed();
    m
}

/// Starts a consumer of `queue` on a thread with its own runtime; returns
/// once it consumes. The thread notes when record `i` first arrives, until
/// all `n` did or `stop` is set.
fn consume(
    queue: String,
    n: usize,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<Vec<u64>>>> {
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name("latency-consumer".into())
        .spawn(move || -> Result<Vec<u64>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
                let ch = conn.create_channel().await?;
                let options = BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                };
                let mut consumer = ch
                    .basic_consume(
                        queue.as_str().into(),
                        "".into(),
                        options,
                        FieldTable::default(),
                    )
                    .await?;
                let _ = ready_tx.send(());
                let mut at = vec![u64::MAX; n];
                let mut got = 0;
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                while got < n && !stop.load(Ordering::Relaxed) {
                    tokio::select! {
                        d = consumer.next() => {
                            let d = d.context("the consumer ended")??;
                            let t = nanos(epoch, Instant::now());
                            for i in probes(&d.data).into_iter().filter(|&i| i < n) {
                                if at[i] == u64::MAX {
                                    at[i] = t;
                                    got += 1;
                                }
                            }
                        }
                        _ = tick.tick() => {}
                    }
                }
                let _ = conn.close(200, "bench done".into()).await;
                Ok(at)
            })
        })?;
    match ready_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => Ok(handle),
        Err(_) => match join(handle)? {
            Err(e) => Err(e.context("the consumer did not start")),
            Ok(_) => bail!("the consumer did not start"),
        },
    }
}

/// The indices of the probe records in a message body (one record, or a
/// batch of them).
fn probes(body: &[u8]) -> Vec<usize> {
    let text = String::from_utf8_lossy(body);
    let mut found = Vec::new();
    for (at, _) in text.match_indices(PROBE) {
        let digits: String = text[at + PROBE.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(i) = digits.parse() {
            found.push(i);
        }
    }
    found
}
