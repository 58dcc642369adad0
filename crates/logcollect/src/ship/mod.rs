//! The shipper: the handle the front-ends and the application hold, and the
//! `logcollect-shipper` thread behind it.
//!
//! A record's way: the front-end encodes it and hands it to the [`intake`]
//! (bounded in records and bytes, never waiting); the [`driver`] on the
//! shipper thread takes it, publishes it through a [`transport`] (lapin:
//! [`amqp_link`]), several per message when [`batch`]ing, and keeps it until
//! the broker confirms it, in memory or in the [`spool`] on disk. The
//! [`ledger`] knows where every accepted record is; [`stats`] are read from
//! it; [`backoff`] paces reconnects.

mod amqp_link;
mod backoff;
mod batch;
mod driver;
mod intake;
mod ledger;
mod spool;
mod stats;
mod transport;

#[cfg(test)]
mod dst;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod sim;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use stats::Stats;

use crate::config::Config;
use crate::encode::{Encoded, Encoder, Location, RecordWriter, Stamp};
use crate::error::{Error, ErrorKind, ShutdownError};
use crate::filter::Filter;
use crate::record::{Level, Record};
use crate::report::Reporter;
use driver::Control;
use intake::{Intake, Refusal};

/// Name of the shipper thread.
pub const DEFAULT_THREAD_NAME: &str = "logcollect-shipper";

thread_local! {
    /// Set on the shipper thread: both front-ends drop records made there.
    static SUPPRESSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether records made on this thread must be dropped (the shipper's own).
#[inline]
#[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
pub(crate) fn suppressed() -> bool {
    SUPPRESSED.with(std::cell::Cell::get)
}

/// How long `shutdown` waits beyond its timeout for the thread to write
/// what is left to the spool (one fsync) and close the connection.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct Inner {
    config: Config,
    /// The level filter in force: the configuration's at first, replaced at
    /// run time through a level handle.
    filter: RwLock<Filter>,
    encoder: Encoder,
    intake: Arc<Intake>,
    ctrl: mpsc::UnboundedSender<Control>,
    reporter: Arc<Reporter>,
    last_error: Arc<Mutex<Option<String>>>,
    truncated: AtomicU64,
    reentrant: AtomicU64,
    shut: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set for a capturing shipper (`testing`): records go here instead of
    /// to a thread and a broker.
    #[cfg(feature = "testing")]
    capture: Option<Mutex<Vec<Encoded>>>,
}

/// A handle to the shipper thread: cheap to clone, shared by the front-ends.
///
/// Records are encoded on the calling thread and handed over through a
/// bounded queue; the `logcollect-shipper` thread publishes them with
/// publisher confirms and reconnects forever. Nothing here blocks except
/// [`flush`](Self::flush) and [`shutdown`](Self::shutdown), which wait at most
/// their timeout.
#[derive(Clone)]
pub struct Shipper {
    inner: Arc<Inner>,
}

impl fmt::Debug for Shipper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shipper")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Builds a [`Shipper`]: `Shipper::builder().config(config).build()`.
#[derive(Debug, Default)]
pub struct ShipperBuilder {
    config: Option<Config>,
    thread_name: Option<String>,
}

impl ShipperBuilder {
    /// The configuration (default: [`Config::builder`]`().build()`).
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }
    /// The shipper thread's name (default [`DEFAULT_THREAD_NAME`]).
    #[must_use]
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = Some(name.into());
        self
    }
    /// Starts the shipper thread. Does not wait for the broker.
    ///
    /// Errors: the spool directory cannot be used (owned by another user, a
    /// symlink where a file should be, in use by another process…), or the
    /// thread cannot be started.
    pub fn build(self) -> Result<Shipper, Error> {
        let config = match self.config {
            Some(c) => c,
            None => Config::builder().build()?,
        };
        // The spool is opened here, on the caller's thread, so that a
        // directory that cannot be used is an error at boot.
        let spool = match &config.spool_dir {
            Some(dir) => Some(
                spool::Spool::open(spool::OsFs, dir, config.spool_max_bytes).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Spool,
                        format!("cannot use the spool directory {}", dir.display()),
                        e,
                    )
                })?,
            ),
            None => None,
        };
        if let Some(n) = spool
            .as_ref()
            .map(spool::Spool::inherited_unread)
            .filter(|n| *n > 0)
        {
            crate::report::eprint_line(&format!(
                "spool {}: {n} record(s) left by an earlier process will be sent first",
                config
                    .spool_dir
                    .as_deref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            ));
        }
        let intake = Arc::new(Intake::new(intake::Limits {
            max_records: config.queue_capacity,
            max_bytes: config.queue_max_bytes,
            wake_batch: wake_batch(&config),
        }));
        let (ctrl, ctrl_rx) = mpsc::unbounded_channel();
        let reporter = Arc::new(Reporter::default());
        let last_error = Arc::new(Mutex::new(None));
        let inner = Arc::new(Inner {
            encoder: Encoder::new(&config.encoder_settings()),
            filter: RwLock::new(config.filter.clone()),
            config: config.clone(),
            intake: intake.clone(),
            ctrl,
            reporter: reporter.clone(),
            last_error: last_error.clone(),
            truncated: AtomicU64::new(0),
            reentrant: AtomicU64::new(0),
            shut: AtomicBool::new(false),
            thread: Mutex::new(None),
            #[cfg(feature = "testing")]
            capture: None,
        });
        let settings = settings(&config, rand::random());
        let handle = std::thread::Builder::new()
            .name(
                self.thread_name
                    .unwrap_or_else(|| DEFAULT_THREAD_NAME.to_owned()),
            )
            .spawn(move || {
                SUPPRESSED.with(|s| s.set(true));
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        crate::report::eprint_line(&format!(
                            "cannot start the shipper's runtime: {e}; no record will be sent"
                        ));
                        intake.close();
                        return;
                    }
                };
                let transport = amqp_link::AmqpTransport::new(config);
                let abandoned = transport.abandoned_connects();
                let driver = driver::Driver::new(
                    settings, intake, ctrl_rx, transport, spool, reporter, last_error,
                );
                rt.block_on(driver.run());
                // A lapin io-loop thread whose attempt we dropped may still
                // be about to use `rt` (see `AbandonedConnects`): let it get
                // past that before the runtime goes.
                if let Some(rest) = abandoned
                    .last()
                    .map(|at| at + LAPIN_SETTLE)
                    .and_then(|until| until.checked_duration_since(Instant::now()))
                {
                    rt.block_on(async { tokio::time::sleep(rest).await });
                }
            })
            .map_err(|e| {
                Error::with_source(ErrorKind::Spawn, "cannot spawn the shipper thread", e)
            })?;
        if let Ok(mut t) = inner.thread.lock() {
            *t = Some(handle);
        }
        Ok(Shipper { inner })
    }
}

/// How long the shipper thread keeps its runtime after a connection attempt
/// it gave up on, for lapin's io-loop thread to finish its name lookup on it
/// (a few milliseconds; this is what a shutdown then takes longer at most).
const LAPIN_SETTLE: Duration = Duration::from_millis(100);

/// A queue this long wakes the shipper at once: a message's worth when
/// batching, else enough records to make the wake-up worth it (a few
/// hundred: the shipper then publishes them back to back).
fn wake_batch(config: &Config) -> usize {
    config.records_per_message.max(256)
}

/// The driver's settings from a configuration; `seed` picks the first
/// broker and the jitter.
pub(crate) fn settings(config: &Config, seed: u64) -> driver::Settings {
    let connect_bound = config
        .brokers
        .iter()
        .filter_map(crate::uri::BrokerUri::connection_timeout)
        .max()
        .unwrap_or(config.connect_timeout)
        .max(config.connect_timeout)
        .saturating_add(config.liveness_timeout);
    driver::Settings {
        brokers: config.brokers.len(),
        confirm_window: config.confirm_window,
        batching: batch::Batching {
            records_per_message: config.records_per_message,
            max_bytes: config.batch_max_bytes,
            format: config.batch_format,
        },
        batch_linger: config.batch_linger,
        reconnect_min: config.reconnect_min,
        reconnect_max: config.reconnect_max,
        connect_bound,
        liveness_timeout: config.liveness_timeout,
        wake_interval: config.wake_interval,
        shutdown_timeout: config.shutdown_timeout,
        exchange: config.exchange.clone(),
        routing_key: config.routing_key.clone(),
        seed,
    }
}

impl Shipper {
    /// A builder.
    pub fn builder() -> ShipperBuilder {
        ShipperBuilder::default()
    }

    /// Starts a shipper with `config`.
    pub fn new(config: Config) -> Result<Shipper, Error> {
        Shipper::builder().config(config).build()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The level filter in force now: the configuration's, or the last one
    /// a level handle set.
    pub fn filter(&self) -> Filter {
        self.inner
            .filter
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the level filter; the front-ends' caches are the caller's
    /// to refresh (the level handle does).
    #[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
    pub(crate) fn set_filter(&self, filter: Filter) {
        *self
            .inner
            .filter
            .write()
            .unwrap_or_else(PoisonError::into_inner) = filter;
    }

    /// Whether a record of `level` from `target` passes the filter in force
    /// and is not from an ignored target.
    #[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
    #[inline]
    pub(crate) fn wants(&self, target: &str, level: Level) -> bool {
        self.passes(target, level) && !self.inner.config.ignores(target)
    }

    /// Whether a record of `level` from `target` passes the filter in force
    /// (ignored targets aside: the `tracing` front-end asks this for spans).
    pub(crate) fn passes(&self, target: &str, level: Level) -> bool {
        self.inner
            .filter
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .enabled(target, level)
    }

    /// Encodes and queues a hand-built record (subject to the level filter
    /// but not to the ignored targets). Returns whether it was accepted;
    /// refusals are counted in [`Stats`].
    pub fn submit(&self, record: &Record) -> bool {
        if !self.passes(&record.logger, record.level) {
            return false;
        }
        match self.inner.encoder.encode(record, Stamp::now()) {
            Some(e) => self.enqueue(e),
            None => {
                self.count_reentrant();
                false
            }
        }
    }

    /// The front-ends' one way in: when the queue has room, starts a record
    /// stamped now, lets `fill` write its message and fields, encodes it and
    /// queues it, all on the calling thread and without blocking. A record
    /// made while this thread is already encoding one (a `Display` impl that
    /// logs) is dropped and counted instead of recursing.
    #[inline]
    #[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
    pub(crate) fn emit(
        &self,
        level: Level,
        logger: &str,
        loc: Location<'_>,
        fill: impl FnOnce(&mut RecordWriter<'_>),
    ) {
        // Checked before encoding, so that while memory is full a log call
        // costs a check instead of a whole encode.
        if !self.has_room() {
            return;
        }
        let Some(mut w) = self.inner.encoder.start(Stamp::now(), level, logger, loc) else {
            self.count_reentrant();
            return;
        };
        fill(&mut w);
        self.enqueue(w.finish());
    }

    /// A shipper without a thread or a broker that keeps every record it
    /// accepts, for [`testing`](crate::testing).
    #[cfg(feature = "testing")]
    pub(crate) fn capturing(config: Config) -> Shipper {
        let intake = Arc::new(Intake::new(intake::Limits {
            max_records: config.queue_capacity,
            max_bytes: config.queue_max_bytes,
            wake_batch: wake_batch(&config),
        }));
        let (ctrl, _) = mpsc::unbounded_channel();
        Shipper {
            inner: Arc::new(Inner {
                encoder: Encoder::new(&config.encoder_settings()),
                filter: RwLock::new(config.filter.clone()),
                config,
                intake,
                ctrl,
                reporter: Arc::new(Reporter::default()),
                last_error: Arc::new(Mutex::new(None)),
                truncated: AtomicU64::new(0),
                reentrant: AtomicU64::new(0),
                shut: AtomicBool::new(true),
                thread: Mutex::new(None),
                capture: Some(Mutex::new(Vec::new())),
            }),
        }
    }

    /// The records a capturing shipper kept so far, taken out.
    #[cfg(feature = "testing")]
    pub(crate) fn take_captured(&self) -> Vec<Encoded> {
        self.inner
            .capture
            .as_ref()
            .map(|c| std::mem::take(&mut *c.lock().unwrap_or_else(PoisonError::into_inner)))
            .unwrap_or_default()
    }

    /// Hands an encoded record to the shipper thread without blocking.
    fn enqueue(&self, e: Encoded) -> bool {
        #[cfg(feature = "testing")]
        if let Some(capture) = &self.inner.capture {
            capture
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(e);
            return true;
        }
        let truncated = e.truncated;
        match self.inner.intake.push(e) {
            Ok(_) => {
                if truncated {
                    self.inner.truncated.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            Err(r) => {
                self.warn_refusal(r);
                false
            }
        }
    }

    /// Whether the queue can take a record now. Checked before encoding, so
    /// that while memory is full (a long outage without a spool) a log call
    /// costs a check instead of a whole encode. A record that finds no room
    /// is counted as refused here.
    #[inline]
    fn has_room(&self) -> bool {
        match self.inner.intake.has_room() {
            Ok(()) => true,
            Err(r) => {
                self.warn_refusal(r);
                false
            }
        }
    }

    fn warn_refusal(&self, r: Refusal) {
        let inner = &*self.inner;
        if !inner.intake.first_refusal(r) {
            return;
        }
        let msg = match r {
            Refusal::QueueFull => format!(
                "queue full ({} records in memory): refusing new records until the broker catches up; \
                 each one is counted (stats, and the total at shutdown)",
                inner.config.queue_capacity
            ),
            Refusal::MemoryFull => format!(
                "memory cap reached ({} bytes of records in memory): refusing new records until the broker catches up; \
                 each one is counted (stats, and the total at shutdown)",
                inner.config.queue_max_bytes
            ),
            Refusal::Closed => return,
        };
        inner.reporter.report("queue-full", &msg);
    }

    /// Counts a record dropped because it was made while encoding another.
    fn count_reentrant(&self) {
        self.inner.reentrant.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot of the counters, consistent at one moment (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let (accepted, snap) = inner.intake.snapshot();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let refused = [
            l(&inner.intake.refused_queue_full),
            l(&inner.intake.refused_memory_full),
            l(&inner.intake.refused_closed),
            l(&inner.reentrant),
        ];
        let mut stats = Stats::from_parts(accepted, &snap, refused, l(&inner.truncated));
        stats.redacted = inner.encoder.redacted();
        stats.last_error = inner.last_error.lock().ok().and_then(|e| e.clone());
        stats
    }

    /// Waits until every record accepted before this call is confirmed by the
    /// broker (or given up, with its cause in [`Stats`]), and so are the
    /// records an earlier process left in the spool, or `timeout` passes.
    /// Blocks the calling thread (never the shipper), so it is safe inside any
    /// async runtime, though it does hold that runtime's thread while it waits.
    pub fn flush(&self, timeout: Duration) -> Result<(), ShutdownError> {
        let inner = &*self.inner;
        if inner.shut.load(Ordering::Acquire) {
            return Err(ShutdownError::AlreadyShutdown);
        }
        let upto = inner.intake.accepted();
        let (reply, wait) = std::sync::mpsc::sync_channel(1);
        inner
            .ctrl
            .send(Control::Flush {
                upto,
                timeout,
                reply,
            })
            .map_err(|_| ShutdownError::AlreadyShutdown)?;
        match wait.recv_timeout(timeout) {
            Ok(answer) => answer,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(ShutdownError::Timeout),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(ShutdownError::AlreadyShutdown)
            }
        }
    }

    /// Delivers what it can within `timeout`, then stops the shipper thread.
    /// Records logged afterwards are counted as `dropped_after_shutdown`.
    /// Accepted records still unconfirmed at the deadline are written to the
    /// spool when there is one (`kept_in_spool_at_shutdown`), else counted as
    /// `undelivered_at_shutdown`; both are reported on stderr.
    ///
    /// Idempotent: a second call returns [`ShutdownError::AlreadyShutdown`].
    pub fn shutdown(&self, timeout: Duration) -> Result<(), ShutdownError> {
        let inner = &*self.inner;
        if inner.shut.swap(true, Ordering::AcqRel) {
            return Err(ShutdownError::AlreadyShutdown);
        }
        let started = Instant::now();
        let (reply, wait) = std::sync::mpsc::sync_channel(1);
        let sent = inner
            .ctrl
            .send(Control::Shutdown { timeout, reply })
            .is_ok();
        inner.intake.close();
        // The driver answers at the deadline at the latest; the grace covers
        // writing what is left to the spool and closing the connection.
        let answered = sent
            && wait
                .recv_timeout(timeout.saturating_add(SHUTDOWN_GRACE))
                .is_ok();
        if answered {
            let handle = inner.thread.lock().ok().and_then(|mut t| t.take());
            if let Some(h) = handle {
                if h.join().is_err() {
                    crate::report::eprint_line("the shipper thread panicked during shutdown");
                }
            }
        }
        let stats = self.stats();
        if stats.kept_in_spool_at_shutdown > 0 {
            crate::report::eprint_line(&format!(
                "shutdown: {} record(s) not yet confirmed are kept in the spool {} and will be sent by the next process using it",
                stats.kept_in_spool_at_shutdown,
                inner
                    .config
                    .spool_dir
                    .as_deref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            ));
        }
        if stats.lost() > 0 {
            let why = stats
                .last_error
                .as_deref()
                .map(|e| format!(" Last problem: {e}"))
                .unwrap_or_default();
            crate::report::eprint_line(&format!(
                "shutdown: {} record(s) not delivered ({stats}).{why}",
                stats.lost()
            ));
        }
        if !answered {
            crate::report::eprint_line(&format!(
                "shutdown: the shipper thread did not finish within {:?}",
                started.elapsed()
            ));
        }
        if answered
            && stats.pending() == 0
            && stats.kept_in_spool_at_shutdown == 0
            && stats.undelivered_at_shutdown == 0
        {
            Ok(())
        } else {
            Err(ShutdownError::Timeout)
        }
    }

    /// A guard that shuts this shipper down when dropped, waiting at most the
    /// configured `shutdown_timeout`.
    pub fn guard(&self) -> ShipperGuard {
        ShipperGuard {
            shipper: self.clone(),
            timeout: self.inner.config.shutdown_timeout,
        }
    }
}

/// Shuts the shipper down when dropped (flushing within the deadline).
/// Keep it alive for as long as the program logs: `let _guard = …;` (not `_`).
#[must_use = "dropping the guard shuts the shipper down at once"]
#[derive(Debug)]
pub struct ShipperGuard {
    shipper: Shipper,
    timeout: Duration,
}

impl ShipperGuard {
    /// The shipper behind the guard (stats, flush).
    pub fn shipper(&self) -> &Shipper {
        &self.shipper
    }
    /// Changes how long the drop waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }
    /// Shuts down now; the drop then does nothing.
    pub fn shutdown(self) -> Result<(), ShutdownError> {
        self.shipper.shutdown(self.timeout)
    }
}

impl Drop for ShipperGuard {
    fn drop(&mut self) {
        let _ = self.shipper.shutdown(self.timeout);
    }
}
