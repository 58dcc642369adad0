//! The shipper handle, its guard, flush/shutdown and the stats.

mod spool;
mod worker;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::Config;
use crate::encode::{Encoded, Encoder};
use crate::error::{Error, ErrorKind, ShutdownError};
use crate::record::Record;
use crate::report::Reporter;

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

pub(crate) enum Item {
    Record(Encoded),
    /// Flush marker: everything queued before it is covered by flush `id`.
    Marker(u64),
}

pub(crate) enum Control {
    Flush {
        id: u64,
        deadline: Instant,
        reply: std::sync::mpsc::SyncSender<()>,
    },
    Shutdown {
        deadline: Instant,
        reply: std::sync::mpsc::SyncSender<u64>,
    },
}

/// Counters shared by callers and the shipper.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) confirmed: AtomicU64,
    pub(crate) nacked: AtomicU64,
    pub(crate) republished: AtomicU64,
    pub(crate) unroutable: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_after_shutdown: AtomicU64,
    pub(crate) dropped_reentrant: AtomicU64,
    pub(crate) undelivered_at_shutdown: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) connection_losses: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) spool_synced: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) spool_dropped: AtomicU64,
    pub(crate) spool_corrupt: AtomicU64,
    pub(crate) spool_bytes: AtomicU64,
    pub(crate) kept_in_spool_at_shutdown: AtomicU64,
    pub(crate) connected: AtomicBool,
    pub(crate) blocked: AtomicBool,
    pub(crate) last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn set_error(&self, msg: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg.to_owned());
        }
    }
}

/// A snapshot of the shipper's counters. Every record accepted ends up in
/// exactly one of `confirmed`, `undelivered_at_shutdown`, or is still
/// pending (`accepted - confirmed - undelivered_at_shutdown`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Records taken into the queue.
    pub accepted: u64,
    /// Publishes sent to the broker (including republishes).
    pub published: u64,
    /// Records the broker confirmed (acked), including unroutable ones.
    pub confirmed: u64,
    /// Negative acknowledgements received (each record is republished).
    pub nacked: u64,
    /// Records published again after a nack or a lost connection.
    pub republished: u64,
    /// Confirmed records the broker could not route to any queue (no queue
    /// bound to the exchange for their routing key): they are gone.
    pub unroutable: u64,
    /// Records refused because the queue was full (never accepted).
    pub dropped_queue_full: u64,
    /// Records logged after shutdown (never accepted).
    pub dropped_after_shutdown: u64,
    /// Records logged from inside our own encoding (a `Display` impl that
    /// logs); dropped instead of recursing.
    pub dropped_reentrant: u64,
    /// Accepted records still unconfirmed when the shutdown deadline passed.
    pub undelivered_at_shutdown: u64,
    /// Records cut to the size cap (delivered, marked `truncated`).
    pub truncated: u64,
    /// Successful connections (the first one included).
    pub connects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Established connections (or channels) that were lost.
    pub connection_losses: u64,
    /// Published records awaiting their confirm right now.
    pub in_flight: u64,
    /// Records written to the disk spool (broker away, queue backlog, or
    /// shutdown deadline).
    pub spooled: u64,
    /// Of those, made durable (fsync) so far.
    pub spool_synced: u64,
    /// Records published from the spool (this process's and earlier ones').
    pub replayed: u64,
    /// Records an earlier process left in the spool, confirmed by this one
    /// (not counted in `accepted` nor `confirmed`).
    pub recovered: u64,
    /// Unread spool records deleted because the spool was over its byte cap
    /// (oldest first).
    pub spool_dropped: u64,
    /// Torn or corrupt spool records skipped (a crash mid-write).
    pub spool_corrupt: u64,
    /// Bytes in the spool directory right now.
    pub spool_bytes: u64,
    /// Accepted records not delivered by the shutdown deadline but kept in
    /// the spool for the next process.
    pub kept_in_spool_at_shutdown: u64,
    /// Whether the shipper is connected right now.
    pub connected: bool,
    /// Whether the broker is blocking publishers right now (memory or disk alarm).
    pub blocked: bool,
    /// The last problem, in words (never contains a password).
    pub last_error: Option<String>,
}

impl Stats {
    /// Records accepted but not yet confirmed nor given up.
    pub fn pending(&self) -> u64 {
        self.accepted
            .saturating_sub(self.confirmed)
            .saturating_sub(self.undelivered_at_shutdown)
            .saturating_sub(self.kept_in_spool_at_shutdown)
    }
    /// Everything that was lost or refused, all causes together.
    pub fn lost(&self) -> u64 {
        self.unroutable
            + self.dropped_queue_full
            + self.dropped_after_shutdown
            + self.dropped_reentrant
            + self.undelivered_at_shutdown
            + self.spool_dropped
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted {}, confirmed {}, pending {}, unroutable {}, dropped (queue full) {}, \
             dropped (after shutdown) {}, undelivered at shutdown {}, republished {}, reconnects {}",
            self.accepted,
            self.confirmed,
            self.pending(),
            self.unroutable,
            self.dropped_queue_full,
            self.dropped_after_shutdown,
            self.undelivered_at_shutdown,
            self.republished,
            self.connects.saturating_sub(1),
        )
    }
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) encoder: Encoder,
    pub(crate) counters: Arc<Counters>,
    pub(crate) reporter: Arc<Reporter>,
    tx: mpsc::Sender<Item>,
    ctrl: mpsc::UnboundedSender<Control>,
    shut: AtomicBool,
    warned_full: AtomicBool,
    next_flush: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
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
    pub(crate) inner: Arc<Inner>,
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
    pub fn build(self) -> Result<Shipper, Error> {
        let config = match self.config {
            Some(c) => c,
            None => Config::builder().build()?,
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let (ctrl, ctrl_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let reporter = Arc::new(Reporter::default());
        let inner = Arc::new(Inner {
            encoder: Encoder::new(&config),
            config: config.clone(),
            counters: counters.clone(),
            reporter: reporter.clone(),
            tx,
            ctrl,
            shut: AtomicBool::new(false),
            warned_full: AtomicBool::new(false),
            next_flush: AtomicU64::new(0),
            thread: Mutex::new(None),
        });
        let worker = worker::Worker::new(config, rx, ctrl_rx, counters, reporter);
        let handle = std::thread::Builder::new()
            .name(
                self.thread_name
                    .unwrap_or_else(|| DEFAULT_THREAD_NAME.to_owned()),
            )
            .spawn(move || {
                SUPPRESSED.with(|s| s.set(true));
                worker.run();
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

    /// Encodes and queues a hand-built record (subject to the level filter
    /// but not to the ignored targets). Returns whether it was accepted;
    /// refusals are counted in [`Stats`].
    pub fn submit(&self, record: &Record) -> bool {
        if !self
            .inner
            .config
            .filter
            .enabled(&record.logger, record.level)
        {
            return false;
        }
        match self.inner.encoder.encode_record(record) {
            Some(e) => self.enqueue(e),
            None => {
                self.inner
                    .counters
                    .dropped_reentrant
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Hands an encoded record to the shipper thread without blocking.
    pub(crate) fn enqueue(&self, e: Encoded) -> bool {
        let inner = &*self.inner;
        let c = &inner.counters;
        if inner.shut.load(Ordering::Acquire) {
            c.dropped_after_shutdown.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if e.truncated {
            c.truncated.fetch_add(1, Ordering::Relaxed);
        }
        match inner.tx.try_send(Item::Record(e)) {
            Ok(()) => {
                c.accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.count_queue_full();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                c.dropped_after_shutdown.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Whether the queue can take a record now. Checked before encoding, so
    /// that while the queue is full (a long outage without a spool) a log
    /// call costs a check instead of a whole encode. A record that finds the
    /// queue full is counted as dropped here.
    #[inline]
    #[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
    pub(crate) fn has_room(&self) -> bool {
        let inner = &*self.inner;
        if inner.tx.capacity() > 0 || inner.shut.load(Ordering::Relaxed) {
            // After shutdown, `enqueue` counts the record as it should.
            return true;
        }
        self.count_queue_full();
        false
    }

    fn count_queue_full(&self) {
        let inner = &*self.inner;
        inner
            .counters
            .dropped_queue_full
            .fetch_add(1, Ordering::Relaxed);
        // A load first: the flag is set once, and swapping it on every drop
        // would bounce its cache line between the logging threads.
        if !inner.warned_full.load(Ordering::Relaxed)
            && !inner.warned_full.swap(true, Ordering::Relaxed)
        {
            inner.reporter.report(
                "queue-full",
                &format!(
                    "queue full ({} records): dropping new records until the broker catches up; \
                     the total is reported at shutdown",
                    inner.config.queue_capacity
                ),
            );
        }
    }

    /// Counts a record dropped because it was made while encoding another.
    #[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
    pub(crate) fn count_reentrant(&self) {
        self.inner
            .counters
            .dropped_reentrant
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            accepted: l(&c.accepted),
            published: l(&c.published),
            confirmed: l(&c.confirmed),
            nacked: l(&c.nacked),
            republished: l(&c.republished),
            unroutable: l(&c.unroutable),
            dropped_queue_full: l(&c.dropped_queue_full),
            dropped_after_shutdown: l(&c.dropped_after_shutdown),
            dropped_reentrant: l(&c.dropped_reentrant),
            undelivered_at_shutdown: l(&c.undelivered_at_shutdown),
            truncated: l(&c.truncated),
            connects: l(&c.connects),
            connect_failures: l(&c.connect_failures),
            connection_losses: l(&c.connection_losses),
            in_flight: l(&c.in_flight),
            spooled: l(&c.spooled),
            spool_synced: l(&c.spool_synced),
            replayed: l(&c.replayed),
            recovered: l(&c.recovered),
            spool_dropped: l(&c.spool_dropped),
            spool_corrupt: l(&c.spool_corrupt),
            spool_bytes: l(&c.spool_bytes),
            kept_in_spool_at_shutdown: l(&c.kept_in_spool_at_shutdown),
            connected: c.connected.load(Ordering::Relaxed),
            blocked: c.blocked.load(Ordering::Relaxed),
            last_error: c.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// Waits until every record accepted before this call is confirmed by the
    /// broker, or `timeout` passes. Blocks the calling thread (never the
    /// shipper), so it is safe inside any async runtime, though it does hold
    /// that runtime's thread while it waits.
    pub fn flush(&self, timeout: Duration) -> Result<(), ShutdownError> {
        let inner = &*self.inner;
        if inner.shut.load(Ordering::Acquire) {
            return Err(ShutdownError::AlreadyShutdown);
        }
        let deadline = Instant::now() + timeout;
        let id = inner.next_flush.fetch_add(1, Ordering::Relaxed);
        let (reply, wait) = std::sync::mpsc::sync_channel(1);
        if inner
            .ctrl
            .send(Control::Flush {
                id,
                deadline,
                reply,
            })
            .is_err()
        {
            return Err(ShutdownError::AlreadyShutdown);
        }
        // The marker goes through the data queue so that it follows every
        // record accepted before it. A full queue is retried until the deadline.
        let mut marker = Item::Marker(id);
        loop {
            match inner.tx.try_send(marker) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(ShutdownError::AlreadyShutdown)
                }
                Err(mpsc::error::TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return Err(ShutdownError::Timeout);
                    }
                    marker = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        wait.recv_timeout(left).map_err(|_| ShutdownError::Timeout)
    }

    /// Delivers what it can within `timeout`, then stops the shipper thread.
    /// Records logged afterwards are counted as `dropped_after_shutdown`.
    /// Accepted records still unconfirmed at the deadline are counted as
    /// `undelivered_at_shutdown` and reported on stderr.
    ///
    /// Idempotent: a second call returns [`ShutdownError::AlreadyShutdown`].
    pub fn shutdown(&self, timeout: Duration) -> Result<(), ShutdownError> {
        let inner = &*self.inner;
        if inner.shut.swap(true, Ordering::AcqRel) {
            return Err(ShutdownError::AlreadyShutdown);
        }
        let deadline = Instant::now() + timeout;
        let (reply, wait) = std::sync::mpsc::sync_channel(1);
        let sent = inner
            .ctrl
            .send(Control::Shutdown { deadline, reply })
            .is_ok();
        // The worker answers at the deadline at the latest; the grace covers
        // closing the connection.
        let undelivered = if sent {
            wait.recv_timeout(timeout + Duration::from_secs(2)).ok()
        } else {
            None
        };
        if undelivered.is_some() {
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
        match undelivered {
            Some(0) if stats.kept_in_spool_at_shutdown == 0 => Ok(()),
            _ => Err(ShutdownError::Timeout),
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
