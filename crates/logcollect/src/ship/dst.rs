//! Deterministic simulation of the driver: seeded random schedules of load,
//! broker faults over a failover list of three, flush and shutdown calls
//! with random deadlines, against the simulated broker on tokio's paused
//! clock. The books are audited after every step of the driver, and the
//! promises checked after every step of the schedule:
//!
//! - every record accepted is somewhere: `accepted = confirmed + pending +
//!   on disk + Σ losses`;
//! - memory held stays under its caps;
//! - flush and shutdown answer by their deadline (plus a small bound);
//! - once the brokers behave, every record is delivered or counted lost,
//!   exactly; nothing is delivered that was never logged.
//!
//! `cargo test -p logcollect --lib dst` runs [`DEFAULT_SEEDS`] seeds;
//! `LOGCOLLECT_DST_SEEDS=N` runs more (a soak), `LOGCOLLECT_DST_SEED=S`
//! replays one, printing its schedule.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::batch::Batching;
use super::driver::{Control, Driver, Settings};
use super::intake::{Intake, Limits};
use super::sim::{Mode, SimNet};
use super::spool::{Fault, MemFs, Spool};
use crate::config::BatchFormat;
use crate::encode::Encoded;
use crate::error::ShutdownError;
use crate::report::Reporter;

/// Seeds run by `cargo test` (CI).
const DEFAULT_SEEDS: u64 = 10_000;
/// Schedule steps per seed.
const STEPS: usize = 120;
/// How late a flush or shutdown may answer after its deadline: one step of
/// the driver's own timers.
const ANSWER_SLACK: Duration = Duration::from_millis(50);
const BROKERS: usize = 3;

/// A schedule's knobs, drawn from its seed.
#[derive(Debug, Clone)]
struct Knobs {
    records_per_message: usize,
    confirm_window: usize,
    max_records: usize,
    max_bytes: usize,
    body_max: usize,
    liveness: Duration,
    heartbeat: Duration,
    /// The spool's byte cap, when there is a spool.
    spool_cap: Option<u64>,
}

const SPOOL_DIR: &str = "/var/spool/app";

/// A flush asked and not answered yet: its number, deadline, the sequence
/// number it waits for, and where its answer comes.
type PendingFlush = (usize, Instant, u64, Receiver<Result<(), ShutdownError>>);

struct World {
    seed: u64,
    net: SimNet,
    intake: Arc<Intake>,
    ctrl: mpsc::UnboundedSender<Control>,
    driver: tokio::task::JoinHandle<()>,
    knobs: Knobs,
    /// The disk under the spool, which outlives a crashed process.
    fs: Option<MemFs>,
    incarnation: u64,
    /// Records found in the spool after the last crash: the process that
    /// follows must deliver them or count them lost. (Records of an earlier
    /// crash may be lost honestly by a later one: read back into memory,
    /// their segment dropped by the byte cap, then the crash.)
    durable_at_crash: HashMap<u64, ()>,
    /// Every record number any process accepted.
    ever_accepted: std::collections::HashSet<u64>,
    /// Record number → sequence number, for every record accepted.
    accepted: HashMap<u64, u64>,
    next_record: u64,
    flushes: Vec<PendingFlush>,
    flush_count: usize,
    answers: HashMap<usize, Result<(), ShutdownError>>,
    delivered: Delivered,
    log: Vec<String>,
    verbose: bool,
}

fn record(n: u64, body_len: usize) -> Encoded {
    let mut body = format!("{{\"i\":{n},\"pad\":\"").into_bytes();
    body.resize(body.len() + body_len, b'x');
    body.extend_from_slice(b"\"}");
    Encoded {
        id: uuid::Uuid::from_u128(u128::from(n) + 1),
        routing_key: format!("logstash.app.m{}", n % 3),
        body,
        truncated: false,
    }
}

/// Counts how many times each record number reached a broker, reading
/// only the messages that arrived since the last call (a batch message
/// carries several records: their numbers are read from the body).
#[derive(Debug, Default)]
struct Delivered {
    counts: HashMap<u64, u32>,
    read: usize,
}

impl Delivered {
    fn update(&mut self, net: &SimNet) -> &HashMap<u64, u32> {
        let received = net.received_since(self.read);
        self.read += received.len();
        for msg in received {
            let mut body = &msg.body[..];
            let mut found = false;
            while let Some(at) = find(body, b"{\"i\":") {
                body = &body[at + 5..];
                let digits = body.iter().take_while(|b| b.is_ascii_digit()).count();
                let n: u64 = std::str::from_utf8(&body[..digits])
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .expect("a record number");
                *self.counts.entry(n).or_default() += 1;
                found = true;
            }
            assert!(
                found,
                "a message without a record: {:?}",
                String::from_utf8_lossy(&msg.body)
            );
        }
        &self.counts
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl World {
    fn start(seed: u64, rng: &mut rand::rngs::SmallRng, verbose: bool) -> Result<World, String> {
        let knobs = Knobs {
            records_per_message: *[1, 1, 4, 25].get(rng.random_range(0..4)).unwrap_or(&1),
            confirm_window: *[1, 8, 64].get(rng.random_range(0..3)).unwrap_or(&8),
            max_records: rng.random_range(20..400),
            max_bytes: rng.random_range(20_000..200_000),
            body_max: *[40, 400, 4000].get(rng.random_range(0..3)).unwrap_or(&40),
            liveness: Duration::from_millis(rng.random_range(500..3000)),
            // Some seeds run without heartbeats: the confirm watchdog alone
            // must then find a hung broker.
            heartbeat: if rng.random_bool(0.3) {
                Duration::ZERO
            } else {
                Duration::from_millis(rng.random_range(300..2000))
            },
            spool_cap: rng
                .random_bool(0.5)
                .then(|| rng.random_range(32 * 1024..512 * 1024)),
        };
        let net = SimNet::new(BROKERS, seed, knobs.heartbeat);
        let fs = knobs.spool_cap.map(|_| MemFs::new());
        let (intake, ctrl, driver) = Self::boot(seed, &knobs, &net, fs.as_ref())?;
        Ok(World {
            seed,
            net,
            intake,
            ctrl,
            driver,
            knobs,
            fs,
            incarnation: 0,
            durable_at_crash: HashMap::new(),
            ever_accepted: std::collections::HashSet::new(),
            accepted: HashMap::new(),
            next_record: 0,
            flushes: Vec::new(),
            flush_count: 0,
            answers: HashMap::new(),
            delivered: Delivered::default(),
            log: Vec::new(),
            verbose,
        })
    }

    /// Starts a process: its intake, control channel and driver (on the
    /// spool's disk when there is one).
    #[allow(clippy::type_complexity)]
    fn boot(
        seed: u64,
        knobs: &Knobs,
        net: &SimNet,
        fs: Option<&MemFs>,
    ) -> Result<
        (
            Arc<Intake>,
            mpsc::UnboundedSender<Control>,
            tokio::task::JoinHandle<()>,
        ),
        String,
    > {
        let intake = Arc::new(Intake::new(Limits {
            max_records: knobs.max_records,
            max_bytes: knobs.max_bytes,
            wake_batch: knobs.records_per_message.max(16),
        }));
        let (ctrl, ctrl_rx) = mpsc::unbounded_channel();
        let settings = Settings {
            brokers: BROKERS,
            confirm_window: knobs.confirm_window,
            batching: Batching {
                records_per_message: knobs.records_per_message,
                max_bytes: 8 * 1024,
                format: BatchFormat::JsonArray,
            },
            batch_linger: Duration::from_millis(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connect_bound: Duration::from_secs(2),
            liveness_timeout: knobs.liveness,
            wake_interval: Duration::from_millis(1),
            shutdown_timeout: Duration::from_secs(5),
            exchange: "logstash".into(),
            routing_key: "logstash".into(),
            seed,
        };
        let spool = match (fs, knobs.spool_cap) {
            (Some(fs), Some(cap)) => Some(
                Spool::open(fs.clone(), std::path::Path::new(SPOOL_DIR), cap)
                    .map_err(|e| format!("the spool does not open: {e}"))?,
            ),
            _ => None,
        };
        let driver = Driver::new(
            settings,
            intake.clone(),
            ctrl_rx,
            net.transport(),
            spool,
            Arc::new(Reporter::quiet()),
            Arc::new(Mutex::new(None)),
        );
        let driver = tokio::task::spawn_local(driver.run());
        Ok((intake, ctrl, driver))
    }

    /// The process dies at once: nothing is flushed, memory is gone, the
    /// disk keeps what was made durable. Then a new process starts on it.
    fn crash_and_restart(&mut self) -> Result<(), String> {
        let Some(fs) = self.fs.clone() else {
            return Ok(());
        };
        self.driver.abort();
        fs.crash();
        self.durable_at_crash.clear();
        // What survived, read as the next process will find it.
        {
            let mut probe = Spool::open(fs.clone(), std::path::Path::new(SPOOL_DIR), u64::MAX)
                .map_err(|e| format!("the spool does not open after a crash: {e}"))?;
            while let Some(r) = probe.next() {
                let body = std::str::from_utf8(&r.rec.body).unwrap_or("");
                let no = body
                    .strip_prefix("{\"i\":")
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("a spooled record without its number: {body}"))?;
                self.durable_at_crash.insert(no, ());
            }
        }
        let (intake, ctrl, driver) = Self::boot(
            self.seed + 1_000_003 * (self.incarnation + 1),
            &self.knobs,
            &self.net,
            Some(&fs),
        )?;
        self.incarnation += 1;
        let durable = self.durable_at_crash.len();
        self.note(format!("the crash left {durable} record(s) in the spool"));
        self.intake = intake;
        self.ctrl = ctrl;
        self.driver = driver;
        self.accepted.clear();
        self.flushes.clear();
        self.note(format!("crash; process {} starts", self.incarnation));
        Ok(())
    }

    /// A disk fault under the spool (or its end).
    fn disk_fault(&mut self, rng: &mut rand::rngs::SmallRng) {
        let Some(fs) = self.fs.clone() else {
            return;
        };
        let dir = std::path::Path::new(SPOOL_DIR);
        let what = match rng.random_range(0..9) {
            0 => {
                fs.inject(Fault::NoSpace);
                "enospc"
            }
            1 => {
                fs.inject(Fault::PartialWrite(rng.random_range(1..200)));
                "partial write"
            }
            2 => {
                fs.inject(Fault::WriteError);
                "eio on write"
            }
            3 => {
                fs.inject(Fault::SyncError);
                "fsync fails"
            }
            4 => {
                fs.inject(Fault::ReadError);
                "eio on read"
            }
            5 => {
                let files = fs.files(dir, "seg-");
                if !files.is_empty() {
                    let (path, len) = &files[rng.random_range(0..files.len())];
                    if *len > 0 {
                        fs.flip_byte(path, rng.random_range(0..*len));
                    }
                }
                "flipped byte"
            }
            6 => {
                let used: u64 = fs.files(dir, "").iter().map(|(_, l)| l).sum();
                fs.set_capacity(Some(used + rng.random_range(0..4096)));
                "disk full"
            }
            _ => {
                fs.set_capacity(None);
                fs.clear_faults();
                "disk healed"
            }
        };
        self.note(format!("disk: {what}"));
    }

    fn note(&mut self, what: String) {
        if self.verbose {
            eprintln!("{:>10?} {what}", tokio::time::Instant::now());
        }
        self.log.push(what);
    }

    fn log_records(&mut self, rng: &mut rand::rngs::SmallRng, n: usize) {
        for _ in 0..n {
            let no = self.next_record;
            self.next_record += 1;
            let len = rng.random_range(0..self.knobs.body_max);
            if let Ok(seq) = self.intake.push(record(no, len)) {
                self.accepted.insert(no, seq);
                self.ever_accepted.insert(no);
            }
        }
    }

    fn stats(&self) -> super::Stats {
        let (accepted, snap) = self.intake.snapshot();
        super::Stats::from_parts(accepted, &snap, [0; 4], 0)
    }

    /// The promises that hold after every step.
    fn check(&mut self) -> Result<(), String> {
        let s = self.stats();
        if !s.balanced() {
            return Err(format!("books do not balance: {s:?}"));
        }
        if s.accepted != self.accepted.len() as u64 {
            return Err(format!(
                "accepted {} but {} pushes succeeded",
                s.accepted,
                self.accepted.len()
            ));
        }
        let (records, bytes) = self.intake.held();
        if records > self.knobs.max_records || bytes > self.knobs.max_bytes {
            return Err(format!(
                "memory over its caps: {records} records / {bytes} bytes (caps {} / {})",
                self.knobs.max_records, self.knobs.max_bytes
            ));
        }
        let now = Instant::now();
        let mut pending = Vec::new();
        for (no, deadline, upto, rx) in std::mem::take(&mut self.flushes) {
            let answer = rx.try_recv();
            if let Ok(a) = &answer {
                self.answers.insert(no, *a);
            }
            match answer {
                Ok(Ok(())) => {
                    // Every record accepted before the flush is settled:
                    // received by a broker, or counted lost.
                    let received = self.delivered.update(&self.net);
                    let missing = self
                        .accepted
                        .iter()
                        .filter(|(no, seq)| **seq < upto && !received.contains_key(no))
                        .count() as u64;
                    if missing > s.lost_accepted() {
                        return Err(format!(
                            "flush answered Ok with {missing} record(s) before it not delivered ({s:?})"
                        ));
                    }
                }
                Ok(Err(_)) => {}
                Err(TryRecvError::Empty) if now > deadline + ANSWER_SLACK => {
                    return Err(format!(
                        "flush not answered {:?} after its deadline",
                        now - deadline
                    ));
                }
                Err(TryRecvError::Empty) => pending.push((no, deadline, upto, rx)),
                Err(TryRecvError::Disconnected) => {
                    return Err("flush dropped without an answer".into())
                }
            }
        }
        self.flushes = pending;
        if self.driver.is_finished() {
            let why = match futures_util::FutureExt::now_or_never(&mut self.driver) {
                Some(Err(e)) if e.is_panic() => {
                    let p = e.into_panic();
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default()
                }
                _ => String::new(),
            };
            return Err(format!("driver stopped before shutdown: {why}"));
        }
        Ok(())
    }

    fn fault(&mut self, rng: &mut rand::rngs::SmallRng) {
        let b = rng.random_range(0..BROKERS);
        let what = match rng.random_range(0..10) {
            0 | 1 => {
                self.net.set_mode(b, Mode::Down);
                "down"
            }
            2 => {
                self.net.set_mode(b, Mode::Hang);
                "hang"
            }
            3 => {
                self.net.set_mode(b, Mode::Blocked);
                "blocked"
            }
            4 => {
                self.net.set_mode(b, Mode::Forbid);
                "forbid"
            }
            5 => {
                let code = [320, 403, 404, 406][rng.random_range(0..4)];
                self.net.close_links(b, code, "fault");
                "close"
            }
            6 => {
                let n = rng.random_range(1..20);
                self.net.nack_next(b, n);
                "nack"
            }
            7 => {
                let size = rng.random_range(100..2000);
                self.net.set_max_message_size(b, Some(size));
                "max-message-size"
            }
            _ => {
                self.net.set_mode(b, Mode::Up);
                self.net.set_max_message_size(b, None);
                "heal"
            }
        };
        self.note(format!("broker {b}: {what}"));
    }

    /// Every broker behaves again, but a hung one stays hung (a hung
    /// process does not come back by itself): the shipper must move on to
    /// another. One broker at least is healthy.
    fn heal(&mut self) {
        let hung: Vec<usize> = (0..BROKERS)
            .filter(|b| self.net.mode(*b) == Mode::Hang)
            .collect();
        let keep_hung = if hung.len() == BROKERS {
            &hung[1..]
        } else {
            &hung[..]
        };
        for b in 0..BROKERS {
            if !keep_hung.contains(&b) {
                self.net.set_mode(b, Mode::Up);
            }
            self.net.set_max_message_size(b, None);
            self.net.set_unroutable(b, false);
        }
        self.note(format!("brokers healed, still hung: {keep_hung:?}"));
    }

    /// Asks for a flush; its number, to find its answer in `answers`.
    fn flush(&mut self, timeout: Duration) -> usize {
        let upto = self.intake.accepted();
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        let _ = self.ctrl.send(Control::Flush {
            upto,
            timeout,
            reply,
        });
        let no = self.flush_count;
        self.flush_count += 1;
        self.flushes.push((no, Instant::now() + timeout, upto, rx));
        self.note(format!("flush {no}: {timeout:?} up to {upto}"));
        no
    }
}

/// Steps the clock forward in small bites, checking after each.
async fn advance(world: &mut World, d: Duration) -> Result<(), String> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        let bite = (until - Instant::now()).min(Duration::from_millis(25));
        tokio::time::sleep(bite).await;
        world.check()?;
    }
    Ok(())
}

async fn schedule(seed: u64, verbose: bool) -> Result<(), String> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5eed);
    let mut w = World::start(seed, &mut rng, verbose)?;
    w.note(format!("knobs {:?}", w.knobs));
    for _ in 0..STEPS {
        match rng.random_range(0..20) {
            0..=7 => {
                let n = if rng.random_bool(0.2) {
                    rng.random_range(50..400)
                } else {
                    rng.random_range(0..10)
                };
                w.log_records(&mut rng, n);
            }
            8..=10 => w.fault(&mut rng),
            12 | 13 => w.disk_fault(&mut rng),
            14 if rng.random_bool(0.2) => w.crash_and_restart()?,
            11 => {
                let t = Duration::from_millis(rng.random_range(10..3000));
                let _ = w.flush(t);
            }
            _ => {}
        }
        let pause = Duration::from_millis(rng.random_range(0..300));
        advance(&mut w, pause).await?;
    }
    // The brokers behave again: everything must get through (the longest
    // backoff is 5 s; two minutes is plenty).
    w.heal();
    if let Some(fs) = &w.fs {
        fs.set_capacity(None);
        fs.clear_faults();
    }
    let final_flush = w.flush(Duration::from_secs(120));
    let healed = Instant::now();
    loop {
        advance(&mut w, Duration::from_millis(100)).await?;
        if let Some(answer) = w.answers.remove(&final_flush) {
            if answer.is_err() {
                return Err(format!(
                    "records still undelivered two minutes after the brokers healed: {:?}",
                    w.stats()
                ));
            }
            break;
        }
        if healed.elapsed() > Duration::from_secs(130) {
            return Err("the final flush was never answered".into());
        }
    }
    // A flush covers this process's records; those an earlier (crashed)
    // process left in the spool follow in their own time.
    while w.stats().inherited_on_disk > 0 {
        if healed.elapsed() > Duration::from_secs(130) {
            return Err(format!(
                "records an earlier process left still on disk two minutes after the brokers healed: {:?}",
                w.stats()
            ));
        }
        advance(&mut w, Duration::from_millis(100)).await?;
    }
    let timeout = Duration::from_millis(rng.random_range(0..5000));
    let (reply, rx) = std::sync::mpsc::sync_channel(1);
    let _ = w.ctrl.send(Control::Shutdown { timeout, reply });
    w.intake.close();
    let deadline = Instant::now() + timeout;
    loop {
        match rx.try_recv() {
            Ok(()) => break,
            Err(TryRecvError::Disconnected) => {
                return Err("shutdown dropped without an answer".into())
            }
            Err(TryRecvError::Empty) => {}
        }
        // Closing a hung connection takes up to a second after the deadline.
        if Instant::now() > deadline + Duration::from_secs(2) {
            return Err(format!(
                "shutdown not answered {:?} after its deadline",
                Instant::now() - deadline
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let s = w.stats();
    if !s.balanced() {
        return Err(format!("books do not balance at the end: {s:?}"));
    }
    let received = w.delivered.update(&w.net).clone();
    for no in received.keys() {
        if !w.ever_accepted.contains(no) {
            return Err(format!(
                "a broker received record {no} that was never accepted"
            ));
        }
    }
    let delivered = w
        .accepted
        .keys()
        .filter(|no| received.contains_key(no))
        .count() as u64;
    // Every record that never arrived is counted lost. The converse holds
    // but for records whose earlier, unconfirmed publish may have arrived
    // before the broker refused them for good or the deadline passed: those
    // are counted lost although a copy got through (at least once).
    let missing = s.accepted - delivered;
    let uncertain = s.rejected + s.undelivered_at_shutdown;
    if missing > s.lost_accepted() || s.lost_accepted() - missing > uncertain {
        return Err(format!(
            "{missing} record(s) never delivered but {} counted lost: {s:?}",
            s.lost_accepted()
        ));
    }
    if s.confirmed > delivered {
        return Err(format!(
            "{} confirmed but only {delivered} delivered",
            s.confirmed
        ));
    }
    // What the last crash left on disk was delivered by the process that
    // followed, or counted lost (damaged, over the cap) by it.
    let durable_missing = w
        .durable_at_crash
        .keys()
        .filter(|no| !received.contains_key(no))
        .count() as u64;
    let inherited_lost = s.recovered_lost;
    if durable_missing > inherited_lost {
        return Err(format!(
            "{durable_missing} record(s) durable in the spool at a crash never delivered, {inherited_lost} counted lost: {s:?}"
        ));
    }
    Ok(())
}

/// Runs one seed on its own paused runtime; the failure, with how to replay it.
fn run_seed(seed: u64, verbose: bool) -> Result<(), String> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        super::sim::run_paused(schedule(seed, verbose))
    }));
    let outcome = match result {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        )),
    };
    outcome.map_err(|e| {
        format!(
            "seed {seed}: {e}\n  replay: LOGCOLLECT_DST_SEED={seed} cargo test -p logcollect --lib ship::dst -- --nocapture"
        )
    })
}

#[test]
fn deterministic_simulation() {
    if let Some(seed) = std::env::var("LOGCOLLECT_DST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run_seed(seed, true).unwrap_or_else(|e| panic!("{e}"));
        return;
    }
    let seeds: u64 = std::env::var("LOGCOLLECT_DST_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    let base: u64 = std::env::var("LOGCOLLECT_DST_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let started = std::time::Instant::now();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (base..base + seeds)
                        .filter(|s| s % threads == t)
                        .filter_map(|seed| run_seed(seed, false).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    // Straight to stderr: the test harness captures `eprintln!`, and CI
    // shows how many seeds ran.
    let _ = writeln!(
        std::io::stderr(),
        "deterministic simulation: {seeds} seeds from {base} in {:.1?}, {} failed",
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{}",
        failures[..failures.len().min(5)].join("\n")
    );
}
