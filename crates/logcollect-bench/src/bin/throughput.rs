//! Delivered throughput, side by side in one process:
//!
//! - **logcollect**: N × `log` record `"msg {i}"` through [`LogcollectLogger`]
//!   → bounded queue → shipper thread → RabbitMQ with publisher confirms,
//!   timed from the first call until `Shipper::flush` returns (every record
//!   confirmed by the broker);
//! - **bare lapin**: the same N bodies (one body captured from the broker,
//!   byte for byte, with the same properties) published by plain lapin on a
//!   current-thread runtime of its own, with the same window of confirms in
//!   flight (1,024, `PublisherConfirm` futures), timed from the first publish
//!   to the last confirm;
//! - with `--python`, the Python logcollect 0.14 peer (`bench/python_peer.sh`).
//!
//! Each kind runs `--rounds` times (default 3), alternating, into a unique
//! exchange with a bound queue of its own that is checked (every message
//! arrived), purged after each round and deleted at the end.
//!
//! ```text
//! cargo run --release -p logcollect-bench --bin throughput -- [N] [--rounds R] [--python]
//! ```
//!
//! The last line reads `throughput: logcollect X rec/s, bare lapin Y msg/s, ratio Z`.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Confirmation, Connection, ConnectionProperties};
use logcollect::{LogcollectLogger, Shipper, DEFAULT_CONFIRM_WINDOW, DEFAULT_QUEUE_CAPACITY};
use logcollect_bench::{
    bench_config, broker_pid, median, process_cpu_s, python_peer_script, unique, wait_for, Admin,
    Captured, PythonPeer, BROKER_URI, PYTHON_BROKER_URI,
};

/// The bare publisher's lapin URL (same broker, vhost `/`).
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

const USAGE: &str = "usage: throughput [N] [--rounds R] [--python] [--batch B]
  N           records per round (default 50000)
  --rounds R  rounds of each kind, alternating (default 3)
  --python    also run bench/python_peer.sh (Python logcollect 0.14) each round
  --batch B   also run logcollect with B records per message (JSON array) each round";

struct Args {
    n: usize,
    rounds: usize,
    python: bool,
    batch: Option<usize>,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        n: 50_000,
        rounds: 3,
        python: false,
        batch: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--python" => args.python = true,
            "--batch" => {
                let v = it.next().context("--batch needs a value")?;
                args.batch = Some(v.parse().context("--batch: not a number")?);
            }
            "--rounds" => {
                let v = it.next().context("--rounds needs a value")?;
                args.rounds = v.parse().context("--rounds: not a number")?;
            }
            n => {
                args.n = n
                    .replace('_', "")
                    .parse()
                    .with_context(|| format!("bad argument {n:?}\n{USAGE}"))?
            }
        }
    }
    ensure!(
        args.n > 0 && args.rounds > 0,
        "N and --rounds must be positive"
    );
    Ok(Some(args))
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| a.map(run).transpose()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("throughput: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// CPU time used during a timed section by the broker (`beam.smp`), by
/// this process, and by its waited-for children (the Python peer).
#[derive(Clone, Copy, Default)]
struct CpuUse {
    broker_s: Option<f64>,
    own_s: f64,
    children_s: f64,
}

struct CpuMeter {
    broker: Option<(String, f64)>,
    own: (f64, f64),
}

impl CpuMeter {
    fn start(broker: Option<&str>) -> CpuMeter {
        CpuMeter {
            broker: broker.and_then(|p| Some((p.to_owned(), process_cpu_s(p)?.0))),
            own: process_cpu_s("self").unwrap_or_default(),
        }
    }
    fn stop(&self) -> CpuUse {
        let own = process_cpu_s("self").unwrap_or_default();
        CpuUse {
            broker_s: self
                .broker
                .as_ref()
                .and_then(|(p, b0)| Some(process_cpu_s(p)?.0 - b0)),
            own_s: own.0 - self.own.0,
            children_s: own.1 - self.own.1,
        }
    }
}

impl CpuUse {
    /// `broker X µs + client Y µs CPU per message`.
    fn per_message(&self, n: usize, client_s: f64) -> String {
        let us = |s: f64| s * 1e6 / n as f64;
        match self.broker_s {
            Some(b) => format!(
                "CPU per message: broker {:.0} µs, client {:.0} µs",
                us(b),
                us(client_s)
            ),
            None => format!(
                "CPU per message: client {:.0} µs (broker process not found)",
                us(client_s)
            ),
        }
    }
}

/// One logcollect round.
struct LcRound {
    /// Records per second, first call to `flush()` returned.
    rate: f64,
    /// Per-call times of the logging loop, ns (timer overhead included).
    median_ns: f64,
    p99_ns: f64,
    mean_ns: f64,
    loop_s: f64,
    flush_s: f64,
    cpu: CpuUse,
}

fn run(args: Args) -> Result<()> {
    let admin = Admin::connect()?;
    let exchange = unique("logcollect-bench-tp");
    let queue = admin.topic_with_queue(&exchange, None)?;
    let python = if args.python {
        python_setup(&admin)
    } else {
        None
    };
    let result = rounds(&admin, &args, &exchange, &queue, python.as_ref());
    admin.delete(&exchange, &queue);
    if let Some((ex, q)) = &python {
        admin.delete(ex, q);
    }
    admin.close();
    result
}

/// Installs the Python peer (first run only) and declares its exchange and
/// queue. `None`, with the reason on stderr, when it cannot run.
fn python_setup(admin: &Admin) -> Option<(String, String)> {
    let script = python_peer_script();
    eprintln!("python peer: installing/checking with {}", script.display());
    let status = Command::new("bash")
        .arg(&script)
        .arg("--install-only")
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            println!(
                "python peer: NOT AVAILABLE ({} --install-only exited with {s}; see stderr). \
                 Continuing without the Python numbers.",
                script.display()
            );
            return None;
        }
        Err(e) => {
            println!("python peer: NOT AVAILABLE (cannot run bash: {e}). Continuing without the Python numbers.");
            return None;
        }
    }
    // The Python library declares its exchange as topic, not durable, not
    // auto-delete (its defaults): declaring it the same way first avoids the
    // declaration conflict that makes it drop every record.
    let ex = unique("logcollect-bench-py");
    match admin.topic_with_queue(&ex, None) {
        Ok(q) => Some((ex, q)),
        Err(e) => {
            println!("python peer: NOT AVAILABLE (cannot declare its exchange: {e:#})");
            None
        }
    }
}

fn rounds(
    admin: &Admin,
    args: &Args,
    exchange: &str,
    queue: &str,
    python: Option<&(String, String)>,
) -> Result<()> {
    let n = args.n;
    println!(
        "throughput: {n} records per round, {} rounds, alternating logcollect / bare lapin{}",
        args.rounds,
        if python.is_some() { " / python" } else { "" }
    );
    let broker = broker_pid();
    let broker = broker.as_deref();
    let mut captured: Option<Captured> = None;
    let mut lc = Vec::new();
    let mut bare = Vec::new();
    let mut py = Vec::new();
    let mut batched: Vec<f64> = Vec::new();
    let mut python = python;
    for round in 1..=args.rounds {
        // logcollect
        let r = attempt(round, "logcollect", || {
            admin.purge(queue)?;
            let r = logcollect_round(exchange, n, broker, 1)?;
            let reached = admin.wait_count(queue, n as u32, Duration::from_secs(10))?;
            ensure!(
                reached as usize == n,
                "logcollect: {reached} of {n} messages reached the queue"
            );
            Ok(r)
        })?;
        if captured.is_none() {
            let c = admin.get_one(queue)?.context("no message to capture")?;
            println!(
                "captured body: {} bytes, routing key {:?}: {}",
                c.body.len(),
                c.routing_key,
                String::from_utf8_lossy(&c.body)
            );
            captured = Some(c);
        }
        admin.purge(queue)?;
        println!(
            "round {round}: logcollect {:>8.0} rec/s delivered (loop {:.3} s, then flush {:.3} s; \
             per call median {:.0} ns, p99 {:.0} ns, mean {:.0} ns; {})",
            r.rate,
            r.loop_s,
            r.flush_s,
            r.median_ns,
            r.p99_ns,
            r.mean_ns,
            r.cpu.per_message(n, r.cpu.own_s)
        );
        lc.push(r);

        // logcollect, batched
        if let Some(b) = args.batch {
            let r = attempt(round, "logcollect batched", || {
                admin.purge(queue)?;
                // Every record was confirmed when flush() returned; the queue
                // holds messages (batches), not records, so it is not counted.
                logcollect_round(exchange, n, broker, b)
            })?;
            admin.purge(queue)?;
            println!(
                "round {round}: logcollect {:>8.0} rec/s delivered, {b} records per message ({})",
                r.rate,
                r.cpu.per_message(n, r.cpu.own_s)
            );
            batched.push(r.rate);
        }

        // bare lapin
        let body = captured.clone().context("no captured body")?;
        let (rate, cpu) = attempt(round, "bare lapin", || {
            admin.purge(queue)?;
            let r = bare_round(body.clone(), exchange, n, DEFAULT_CONFIRM_WINDOW, broker)?;
            let reached = admin.wait_count(queue, n as u32, Duration::from_secs(10))?;
            ensure!(
                reached as usize == n,
                "bare lapin: {reached} of {n} messages reached the queue"
            );
            Ok(r)
        })?;
        admin.purge(queue)?;
        println!(
            "round {round}: bare lapin {rate:>8.0} msg/s confirmed ({})",
            cpu.per_message(n, cpu.own_s)
        );
        bare.push(rate);

        // Python logcollect 0.14
        if let Some((py_ex, py_q)) = python {
            let r = attempt(round, "python", || {
                admin.purge(py_q)?;
                python_round(admin, py_ex, py_q, n, broker)
            });
            match r {
                Ok((p, reached, cpu)) => {
                    println!(
                        "round {round}: python     {:>8.0} calls/s, unconfirmed (per call median {:.1} µs, p99 {:.1} µs; \
                         {reached} messages reached the queue: {n} + warm-up + the library's own `amqp` records; \
                         {}, start-up included)",
                        p.calls_per_s,
                        p.median_us,
                        p.p99_us,
                        cpu.per_message(n, cpu.children_s)
                    );
                    py.push(p);
                }
                Err(e) => {
                    println!("python peer: FAILED ({e:#}); continuing without the Python numbers");
                    python = None;
                }
            }
        }
    }

    let lc_rate = median(&mut lc.iter().map(|r| r.rate).collect::<Vec<_>>());
    let lc_call_ns = median(&mut lc.iter().map(|r| r.median_ns).collect::<Vec<_>>());
    // Each round's logcollect / bare pair ran back to back: its ratio is less
    // exposed to the machine's load changing between rounds.
    let mut pair_ratios: Vec<f64> = lc.iter().zip(&bare).map(|(l, b)| l.rate / b).collect();
    let pairs = pair_ratios
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    let pair_median = median(&mut pair_ratios);
    let bare_rate = median(&mut bare);
    let ratio = lc_rate / bare_rate;
    println!("medians of {} rounds:", args.rounds);
    println!("  logcollect  {lc_rate:>8.0} rec/s  (log call to flush() returned, all confirmed)");
    println!("  bare lapin  {bare_rate:>8.0} msg/s  (same bytes, {DEFAULT_CONFIRM_WINDOW} confirms in flight)");
    println!(
        "  ratio       {ratio:>8.2}        target >= 0.95 (issue 18): {}",
        verdict(ratio >= 0.95)
    );
    println!("  per-round ratios {pairs} (median {pair_median:.2})");
    println!("  logcollect caller cost in this run: median {lc_call_ns:.0} ns per `log` call");
    if !py.is_empty() {
        let py_rate = median(&mut py.iter().map(|p| p.calls_per_s).collect::<Vec<_>>());
        let py_us = median(&mut py.iter().map(|p| p.median_us).collect::<Vec<_>>());
        let cost = py_us * 1000.0 / lc_call_ns;
        let speed = lc_rate / py_rate;
        println!("  python      {py_rate:>8.0} calls/s unconfirmed, median {py_us:.1} µs per call");
        println!(
            "  caller cost: python {py_us:.1} µs / logcollect {:.3} µs = {cost:.0}x lower   target >= 100x: {}",
            lc_call_ns / 1000.0,
            verdict(cost >= 100.0)
        );
        println!(
            "  delivered:   logcollect {lc_rate:.0} rec/s confirmed / python {py_rate:.0} calls/s unconfirmed = {speed:.2}x   target >= 1.2x: {}",
            verdict(speed >= 1.2)
        );
        println!(
            "python: logcollect caller {cost:.0}x lower than python per call, delivered {speed:.2}x python calls/s"
        );
    } else if args.python {
        println!("  python      not measured (see above)");
    }
    if let Some(b) = args.batch {
        let rate = median(&mut batched);
        let gain = rate / lc_rate;
        println!(
            "  batched     {rate:>8.0} rec/s  ({b} records per message) = {gain:.1}x one per message   target >= 25x (issue 18): {}",
            verdict(gain >= 25.0)
        );
        if !py.is_empty() {
            let py_rate = median(&mut py.iter().map(|p| p.calls_per_s).collect::<Vec<_>>());
            let x = rate / py_rate;
            println!(
                "  batched vs python: {x:.0}x python calls/s   target >= 50x: {}",
                verdict(x >= 50.0)
            );
        }
        println!("batched: {rate:.0} rec/s, {gain:.1}x one per message");
    }
    println!("throughput: logcollect {lc_rate:.0} rec/s, bare lapin {bare_rate:.0} msg/s, ratio {ratio:.2}");
    Ok(())
}

/// Runs one measurement up to three times. Other test suites share this
/// broker and inject faults into it (restarts, forced connection closes): a
/// round that meets one is not a measurement, so it is run again.
fn attempt<T>(round: usize, what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    for i in 1.. {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if i < 3 => {
                println!("round {round}: {what} disturbed ({e:#}); running it again");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn logcollect_round(
    exchange: &str,
    n: usize,
    broker: Option<&str>,
    records_per_message: usize,
) -> Result<LcRound> {
    // A queue that holds the whole round: the caller never meets a full queue,
    // so every record is delivered and the figure is the pipeline's speed.
    let config = bench_config(BROKER_URI, exchange)
        .records_per_message(records_per_message)
        .queue_capacity(n.max(DEFAULT_QUEUE_CAPACITY))
        .shutdown_timeout(Duration::from_secs(10))
        .build()?;
    let shipper = Shipper::new(config)?;
    // The connection set-up is not part of the figure (nor of the bare one).
    if !wait_for(Duration::from_secs(60), || shipper.stats().connected) {
        bail!(
            "logcollect did not connect within 10 s: {:?}",
            shipper.stats().last_error
        );
    }
    let logger = LogcollectLogger::new(shipper.clone());
    let mut per_call: Vec<f64> = Vec::with_capacity(n);
    let meter = CpuMeter::start(broker);
    let t0 = Instant::now();
    for i in 0..n {
        let a = Instant::now();
        log::Log::log(
            &logger,
            &log::Record::builder()
                .args(format_args!("msg {i}"))
                .level(log::Level::Info)
                .target("bench")
                .module_path_static(Some(module_path!()))
                .file_static(Some(file!()))
                .line(Some(line!()))
                .build(),
        );
        per_call.push(a.elapsed().as_nanos() as f64);
    }
    let loop_s = t0.elapsed().as_secs_f64();
    let flushed = shipper.flush(Duration::from_secs(600));
    let total = t0.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let stats = shipper.stats();
    let _ = shipper.shutdown(Duration::from_secs(10));
    flushed.map_err(|e| anyhow::anyhow!("flush: {e} ({stats})"))?;
    ensure!(
        stats.connection_losses == 0 && stats.republished == 0,
        "the connection was lost during the round (a fault test on the shared broker?): {stats}"
    );
    ensure!(
        stats.confirmed == n as u64 && stats.lost() == 0,
        "logcollect did not deliver every record: {stats}"
    );
    let mean_ns = per_call.iter().sum::<f64>() / n as f64;
    let median_ns = median(&mut per_call);
    let p99_ns = per_call[((n as f64 * 0.99) as usize).min(n - 1)];
    Ok(LcRound {
        rate: n as f64 / total,
        median_ns,
        p99_ns,
        mean_ns,
        loop_s,
        flush_s: total - loop_s,
        cpu,
    })
}

/// Publishes `n` copies of `msg` with `window` confirms in flight, on a
/// thread with its own current-thread runtime (as the shipper has). Returns
/// messages per second, first publish to last confirm.
fn bare_round(
    msg: Captured,
    exchange: &str,
    n: usize,
    window: usize,
    broker: Option<&str>,
) -> Result<(f64, CpuUse)> {
    let exchange = exchange.to_owned();
    let broker = broker.map(str::to_owned);
    let handle = std::thread::Builder::new()
        .name("bare-lapin".into())
        .spawn(move || -> Result<(f64, CpuUse)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
                let ch = conn.create_channel().await?;
                ch.confirm_select(ConfirmSelectOptions::default()).await?;
                let options = BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                };
                let mut inflight = FuturesUnordered::new();
                let mut bad = 0u64;
                let meter = CpuMeter::start(broker.as_deref());
                let mut check = |c: lapin::Result<Confirmation>| -> Result<()> {
                    match c? {
                        Confirmation::Ack(None) => {}
                        _ => bad += 1,
                    }
                    Ok(())
                };
                let t0 = Instant::now();
                for i in 0..n {
                    while inflight.len() >= window {
                        if let Some(c) = inflight.next().await {
                            check(c)?;
                        }
                    }
                    // The same properties as logcollect sends, with a fresh
                    // message id and timestamp per message as it does.
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let props = msg
                        .properties
                        .clone()
                        .with_message_id(format!("{i:036}").into())
                        .with_timestamp(now);
                    let confirm = ch
                        .basic_publish(
                            exchange.as_str().into(),
                            msg.routing_key.as_str().into(),
                            options,
                            &msg.body,
                            props,
                        )
                        .await?;
                    inflight.push(confirm);
                }
                while let Some(c) = inflight.next().await {
                    check(c)?;
                }
                let dt = t0.elapsed().as_secs_f64();
                let cpu = meter.stop();
                let _ = conn.close(200, "bench done".into()).await;
                ensure!(bad == 0, "bare lapin: {bad} messages nacked or returned");
                Ok((n as f64 / dt, cpu))
            })
        })?;
    match handle.join() {
        Ok(r) => r,
        Err(_) => bail!("the bare lapin thread panicked"),
    }
}

fn python_round(
    admin: &Admin,
    exchange: &str,
    queue: &str,
    n: usize,
    broker: Option<&str>,
) -> Result<(PythonPeer, u32, CpuUse)> {
    let script = python_peer_script();
    let meter = CpuMeter::start(broker);
    let out = Command::new("bash")
        .arg(&script)
        .arg("--exchange")
        .arg(exchange)
        .arg("--uri")
        .arg(PYTHON_BROKER_URI)
        .arg(n.to_string())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let cpu = meter.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{} exited with {}: {stdout}",
        script.display(),
        out.status
    );
    let peer = stdout
        .lines()
        .find_map(PythonPeer::parse)
        .with_context(|| format!("no `python_peer:` line in its output: {stdout}"))?;
    // Python publishes without confirms: give the last messages time to land.
    let reached = admin.wait_count(queue, n as u32 + 1, Duration::from_secs(10))?;
    // Python logcollect loses records silently when its connection is closed
    // under it (reference quirk 11): a short count means a disturbed round.
    ensure!(
        reached as usize > n,
        "python: only {reached} of {n} + 1 messages reached the queue"
    );
    admin.purge(queue)?;
    Ok((peer, reached, cpu))
}
