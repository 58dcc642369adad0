//! Memory under a broker outage: logs `log` records at full speed for D
//! seconds to a broker address where nothing listens (127.0.0.1:1, connection
//! refused; the real broker is left alone), samples RSS every second, and
//! reports the peak (`VmHWM`) against the configured queue bound.
//!
//! ```text
//! cargo run --release -p logcollect-bench --bin outage_memory -- [--seconds D] [--queue-capacity C]
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use logcollect::{LogcollectLogger, Shipper, DEFAULT_QUEUE_CAPACITY};
use logcollect_bench::{bench_config, mib, status_kib, unique, wait_for, DEAD_BROKER_URI};

const USAGE: &str =
    "usage: outage_memory [--seconds D] [--queue-capacity C] [--message TEXT] [--uri URI]
  --seconds D         how long to log (default 60)
  --message TEXT      the message; each record is `TEXT #<i>` (default: a 34-byte text)
  --queue-capacity C  logcollect's queue bound (default logcollect::DEFAULT_QUEUE_CAPACITY)
  --uri URI           a broker URI where nothing listens (default amqp://guest:guest@127.0.0.1:1//)
  --spool-dir DIR     turn the disk spool on in DIR (emptied first)
  --spool-max-bytes B the spool's byte cap (default logcollect::DEFAULT_SPOOL_MAX_BYTES)";

struct Args {
    seconds: u64,
    capacity: usize,
    message: String,
    uri: String,
    spool_dir: Option<std::path::PathBuf>,
    spool_max_bytes: u64,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        seconds: 60,
        capacity: DEFAULT_QUEUE_CAPACITY,
        message: "request failed: upstream timed out".to_owned(),
        uri: DEAD_BROKER_URI.to_owned(),
        spool_dir: None,
        spool_max_bytes: logcollect::DEFAULT_SPOOL_MAX_BYTES,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--seconds" => args.seconds = value("--seconds")?.parse().context("--seconds")?,
            "--queue-capacity" => {
                args.capacity = value("--queue-capacity")?
                    .replace('_', "")
                    .parse()
                    .context("--queue-capacity")?;
            }
            "--uri" => args.uri = value("--uri")?,
            "--spool-dir" => args.spool_dir = Some(value("--spool-dir")?.into()),
            "--spool-max-bytes" => {
                args.spool_max_bytes = value("--spool-max-bytes")?
                    .parse()
                    .context("--spool-max-bytes")?;
            }
            "--message" => args.message = value("--message")?,
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(
        args.seconds > 0 && args.capacity > 0,
        "--seconds and --queue-capacity must be positive"
    );
    Ok(Some(args))
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| a.map(run).transpose()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outage_memory: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Sample {
    t: f64,
    rss_kib: u64,
    hwm_kib: u64,
    calls: u64,
    accepted: u64,
    dropped: u64,
}

fn run(args: Args) -> Result<()> {
    let rss_before = status_kib("VmRSS").context("cannot read /proc/self/status")?;
    let hwm_before = status_kib("VmHWM").unwrap_or(0);
    let mut builder =
        bench_config(&args.uri, &unique("logcollect-bench-outage")).queue_capacity(args.capacity);
    if let Some(dir) = &args.spool_dir {
        let _ = std::fs::remove_dir_all(dir);
        builder = builder.spool_dir(dir).spool_max_bytes(args.spool_max_bytes);
    }
    let config = builder.build()?;
    let shipper = Shipper::new(config)?;
    // Start measuring once the outage is real: the first connect has failed.
    ensure!(
        wait_for(Duration::from_secs(10), || shipper.stats().connect_failures
            > 0),
        "the shipper did not fail to connect to {}: is something listening there? {:?}",
        args.uri,
        shipper.stats()
    );
    println!(
        "outage_memory: logging for {} s at full speed to {} (nothing listens); queue capacity {} records",
        args.seconds,
        args.uri.replace("guest:guest@", ""),
        args.capacity
    );
    println!(
        "before: RSS {:.1} MiB, peak RSS (VmHWM) {:.1} MiB",
        mib(rss_before),
        mib(hwm_before)
    );

    let calls = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let calls = calls.clone();
        let stop = stop.clone();
        let shipper = shipper.clone();
        std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                let start = Instant::now();
                let mut samples = Vec::new();
                let mut next = start + Duration::from_secs(1);
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    next += Duration::from_secs(1);
                    let st = shipper.stats();
                    let s = Sample {
                        t: start.elapsed().as_secs_f64(),
                        rss_kib: status_kib("VmRSS").unwrap_or(0),
                        hwm_kib: status_kib("VmHWM").unwrap_or(0),
                        calls: calls.load(Ordering::Relaxed),
                        accepted: st.accepted,
                        dropped: st.dropped_queue_full,
                    };
                    println!(
                        "  t={:>5.1}s  RSS {:>7.1} MiB  peak {:>7.1} MiB  calls {:>11}  accepted {:>8}  dropped (queue full) {:>11}  connect failures {}",
                        s.t,
                        mib(s.rss_kib),
                        mib(s.hwm_kib),
                        s.calls,
                        s.accepted,
                        s.dropped,
                        st.connect_failures
                    );
                    samples.push(s);
                }
                samples
            })?
    };

    let logger = LogcollectLogger::new(shipper.clone());
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(args.seconds);
    let mut i: u64 = 0;
    while Instant::now() < until {
        // Check the clock once per 1,024 calls: a call costs well under a
        // microsecond, so this stays within a millisecond of D.
        for _ in 0..1024 {
            log::Log::log(
                &logger,
                &log::Record::builder()
                    .args(format_args!("{} #{i}", args.message))
                    .level(log::Level::Info)
                    .target("bench::outage")
                    .module_path_static(Some(module_path!()))
                    .file_static(Some(file!()))
                    .line(Some(line!()))
                    .build(),
            );
            i += 1;
        }
        calls.store(i, Ordering::Relaxed);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;

    let rss_after = status_kib("VmRSS").unwrap_or(0);
    let hwm_after = status_kib("VmHWM").unwrap_or(0);
    let st = shipper.stats();
    // Still-queued records are counted as undelivered at shutdown: expected here.
    let _ = shipper.shutdown(Duration::from_millis(100));
    let rss_shut = status_kib("VmRSS").unwrap_or(0);

    let growth_kib = hwm_after.saturating_sub(rss_before);
    // Where the queue first refused a record: from then on the memory should stay flat.
    let full = samples.iter().find(|s| s.dropped > 0);
    println!("after {elapsed:.1} s:");
    println!("  queue capacity        {} records", args.capacity);
    println!(
        "  calls                 {i} ({:.0} calls/s, {:.0} ns per call)",
        i as f64 / elapsed,
        elapsed * 1e9 / i as f64
    );
    println!("  accepted              {}", st.accepted);
    if let Some(dir) = &args.spool_dir {
        let on_disk: u64 = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        println!(
            "  spool                 cap {:.1} MiB, on disk {:.1} MiB, spooled {}, dropped oldest (over the cap) {}",
            args.spool_max_bytes as f64 / 1048576.0,
            on_disk as f64 / 1048576.0,
            st.spooled,
            st.spool_dropped
        );
    }
    println!("  dropped_queue_full    {}", st.dropped_queue_full);
    println!("  connect failures      {}", st.connect_failures);
    println!(
        "  peak RSS (VmHWM)      before {:.1} MiB, after {:.1} MiB (+{:.1} MiB = {:.0} bytes per queued record)",
        mib(hwm_before),
        mib(hwm_after),
        mib(growth_kib),
        growth_kib as f64 * 1024.0 / st.accepted.max(1) as f64
    );
    println!(
        "  RSS                   before {:.1} MiB, at the end {:.1} MiB, after shutdown {:.1} MiB",
        mib(rss_before),
        mib(rss_after),
        mib(rss_shut)
    );
    if let (Some(f), Some(last)) = (full, samples.last()) {
        println!(
            "  growth after the queue filled (t={:.0}s -> t={:.0}s): {:+.1} MiB RSS",
            f.t,
            last.t,
            mib(last.rss_kib) - mib(f.rss_kib)
        );
    }
    println!(
        "outage_memory: capacity {} accepted {} dropped_queue_full {} peak_rss_mib_before {:.1} peak_rss_mib_after {:.1}",
        args.capacity,
        st.accepted,
        st.dropped_queue_full,
        mib(hwm_before),
        mib(hwm_after)
    );
    Ok(())
}
