//! The shipper thread: a private current-thread tokio runtime, one lapin
//! connection at a time, publisher confirms with a window, republish of
//! everything unconfirmed after a nack or a lost connection, and reconnects
//! forever with capped, jittered exponential backoff across the failover list.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::protocol::AMQPSoftError;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, Event, ExchangeKind};
use tokio::sync::mpsc;

use super::spool::{SegId, Spool};
use super::{Control, Counters, Item};
use crate::config::Config;
use crate::encode::Encoded;
use crate::report::Reporter;
use crate::uri::BrokerUri;

/// How long closing the connection may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

struct Pending {
    rec: Encoded,
    /// Published at least once already (a new publish is a republish).
    sent: bool,
    /// The spool segment it was read from (acknowledged on confirm).
    origin: Option<SegId>,
    /// Left in the spool by an earlier process (not in this one's `accepted`).
    inherited: bool,
}

impl Pending {
    fn new(rec: Encoded) -> Self {
        Pending {
            rec,
            sent: false,
            origin: None,
            inherited: false,
        }
    }
}

/// While spooling because of a backlog, records go to disk once the queue
/// holds more than this share of its capacity (three quarters): early enough
/// that callers rarely see a full queue, late enough that a short burst does
/// not touch the disk.
const SPILL_NUMERATOR: usize = 3;
const SPILL_DENOMINATOR: usize = 4;
/// Spooled records are synced to disk at least this often under load (and at
/// once whenever the queue runs empty).
const SPOOL_SYNC_INTERVAL: Duration = Duration::from_millis(200);

struct FlushWaiter {
    id: u64,
    deadline: Instant,
    reply: std::sync::mpsc::SyncSender<()>,
    /// Set when the marker is pulled: every record with a smaller pull index
    /// must be resolved.
    upto: Option<u64>,
}

/// Resolves to the pull indices of the records one message carried, and its confirm.
type ConfirmFuture = Pin<Box<dyn Future<Output = (Vec<u64>, lapin::Result<Confirmation>)> + Send>>;

pub(crate) struct Worker {
    cfg: Config,
    rx: mpsc::Receiver<Item>,
    ctrl: mpsc::UnboundedReceiver<Control>,
    ctrl_open: bool,
    counters: Arc<Counters>,
    reporter: Arc<Reporter>,
    /// Pulled from the queue, not published (or to be republished), by pull index.
    retry: BTreeMap<u64, Pending>,
    /// Published, awaiting the confirm, by pull index.
    unconfirmed: BTreeMap<u64, Pending>,
    /// Pull index of the next record taken from the queue.
    pulled: u64,
    flushes: Vec<FlushWaiter>,
    /// Markers pulled before their `Flush` control message was read (the two
    /// travel on different channels): `(id, upto)`.
    early_markers: Vec<(u64, u64)>,
    shutdown: Option<(Instant, Option<std::sync::mpsc::SyncSender<u64>>)>,
    /// The failover-list entry to connect to next (taken modulo its length).
    broker_idx: usize,
    spool: Option<Spool>,
    /// Positions in the spool: records ever written to it (those an earlier
    /// process left included) and records read back.
    spool_written: u64,
    spool_read: u64,
    /// Records of an earlier process still to be read first.
    inherited_left: u64,
    /// This process's records written to the spool and not read back yet.
    own_unread: u64,
    last_sync: Instant,
    /// Flush markers pulled while records before them sit in the spool:
    /// `(id, spool position they follow)`.
    deferred_markers: Vec<(u64, u64)>,
    /// Smallest pull index of the batch being gathered: those records are in
    /// neither `retry` nor `unconfirmed` until published, and a flush must
    /// not pass them.
    batch_floor: Option<u64>,
}

enum Outcome {
    /// The connection or channel was lost: reconnect.
    Lost(String),
    /// Shutdown finished or its deadline passed.
    Finished,
}

impl Worker {
    pub(crate) fn new(
        cfg: Config,
        rx: mpsc::Receiver<Item>,
        ctrl: mpsc::UnboundedReceiver<Control>,
        counters: Arc<Counters>,
        reporter: Arc<Reporter>,
    ) -> Self {
        // A random start spreads a fleet sharing one failover list over its
        // brokers instead of piling every process onto the first.
        let broker_idx = rand::random_range(0..cfg.brokers.len());
        Worker {
            cfg,
            rx,
            ctrl,
            ctrl_open: true,
            counters,
            reporter,
            retry: BTreeMap::new(),
            unconfirmed: BTreeMap::new(),
            pulled: 0,
            flushes: Vec::new(),
            early_markers: Vec::new(),
            shutdown: None,
            broker_idx,
            spool: None,
            spool_written: 0,
            spool_read: 0,
            inherited_left: 0,
            own_unread: 0,
            last_sync: Instant::now(),
            deferred_markers: Vec::new(),
            batch_floor: None,
        }
    }

    /// Opens the spool when configured; a spool that cannot be opened is
    /// reported and the shipper goes on without it.
    fn open_spool(&mut self) {
        let Some(dir) = self.cfg.spool_dir.clone() else {
            return;
        };
        match Spool::open(&dir, self.cfg.spool_max_bytes, self.counters.clone()) {
            Ok(spool) => {
                let inherited = spool.unread();
                if inherited > 0 {
                    crate::report::eprint_line(&format!(
                        "spool {}: {inherited} record(s) left by an earlier process will be sent first",
                        dir.display()
                    ));
                }
                self.inherited_left = inherited;
                self.spool_written = inherited;
                self.spool = Some(spool);
            }
            Err(e) => {
                let msg = format!(
                    "cannot use the spool directory {}: {e}; going on without a spool (records wait in memory only)",
                    dir.display()
                );
                self.counters.set_error(&msg);
                crate::report::eprint_line(&msg);
            }
        }
    }

    fn spool_has_unread(&self) -> bool {
        self.spool.as_ref().is_some_and(Spool::has_unread)
    }

    /// Whether new records should go to the spool now: it already holds
    /// unread records (order is kept through the disk), or the queue backs up.
    fn spilling(&self) -> bool {
        self.spool.is_some()
            && (self.spool_has_unread()
                || self.rx.len() * SPILL_DENOMINATOR > self.cfg.queue_capacity * SPILL_NUMERATOR)
    }

    /// Writes a record to the spool; `false` when that failed (it was counted
    /// and reported, and the caller keeps the record in memory).
    fn spool_record(&mut self, rec: &Encoded) -> bool {
        let Some(spool) = self.spool.as_mut() else {
            return false;
        };
        match spool.append(rec) {
            Ok(()) => {
                self.spool_written += 1;
                self.own_unread += 1;
                if self.rx.is_empty() || self.last_sync.elapsed() >= SPOOL_SYNC_INTERVAL {
                    self.sync_spool();
                }
                true
            }
            Err(e) => {
                let msg = format!("cannot write to the spool: {e}; keeping records in memory");
                self.counters.set_error(&msg);
                self.reporter.report("spool-write", &msg);
                false
            }
        }
    }

    fn sync_spool(&mut self) {
        if let Some(spool) = self.spool.as_mut() {
            spool.sync();
            self.last_sync = Instant::now();
            self.counters.spool_synced.store(
                self.counters.spooled.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
    }

    /// The next spooled record as a pending publish, or `None` when the
    /// reader caught up (then every deferred flush marker is resolved).
    fn next_from_spool(&mut self) -> Option<(u64, Pending)> {
        let next = self.spool.as_mut().and_then(Spool::next);
        let Some((seg, rec)) = next else {
            self.own_unread = 0;
            self.resolve_deferred(true);
            return None;
        };
        let inherited = self.inherited_left > 0;
        if inherited {
            self.inherited_left -= 1;
        } else {
            self.own_unread = self.own_unread.saturating_sub(1);
        }
        self.spool_read += 1;
        let idx = self.pulled;
        self.pulled += 1;
        // The record is about to join a batch: flush markers resolved now
        // must not pass it.
        self.batch_floor.get_or_insert(idx);
        self.resolve_deferred(false);
        Some((
            idx,
            Pending {
                rec,
                sent: false,
                origin: Some(seg),
                inherited,
            },
        ))
    }

    /// Gives deferred flush markers their pull index once the spool reader
    /// passed their position (or, with `all`, caught up altogether).
    fn resolve_deferred(&mut self, all: bool) {
        if self.deferred_markers.is_empty() {
            return;
        }
        let read = self.spool_read;
        let upto = self.pulled;
        let mut resolved = Vec::new();
        self.deferred_markers.retain(|&(id, pos)| {
            if all || read >= pos {
                resolved.push(id);
                false
            } else {
                true
            }
        });
        for id in resolved {
            self.set_marker(id, upto);
        }
        self.check_flushes();
    }

    fn set_marker(&mut self, id: u64, upto: u64) {
        match self.flushes.iter_mut().find(|w| w.id == id) {
            Some(w) => w.upto = Some(upto),
            None => self.early_markers.push((id, upto)),
        }
    }

    pub(crate) fn run(mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let msg =
                    format!("cannot start the shipper's runtime: {e}; no record will be sent");
                self.counters.set_error(&msg);
                crate::report::eprint_line(&msg);
                self.rx.close();
                self.finish();
                return;
            }
        };
        self.open_spool();
        rt.block_on(self.main());
        self.finish();
    }

    async fn main(&mut self) {
        let mut delay = self.cfg.reconnect_min;
        loop {
            if self.done() {
                return;
            }
            let broker = self.cfg.brokers.get(self.broker_idx).clone();
            let cfg = self.cfg.clone();
            let result = {
                let attempt = connect(&cfg, &broker);
                tokio::pin!(attempt);
                loop {
                    let deadline = self.deadline();
                    let room = self.spool.is_some() || self.retry.len() < self.cfg.confirm_window;
                    tokio::select! {
                        r = &mut attempt => break Some(r),
                        c = self.ctrl.recv(), if self.ctrl_open => self.on_control(c),
                        item = self.rx.recv(), if room => self.on_pulled_offline(item),
                        _ = sleep_until(deadline) => break None,
                    }
                    if self.done() {
                        break None;
                    }
                }
            };
            let Some(result) = result else { return };
            match result {
                Ok((conn, channel)) => {
                    delay = self.cfg.reconnect_min;
                    self.counters.connects.fetch_add(1, Ordering::Relaxed);
                    self.counters.connected.store(true, Ordering::Relaxed);
                    self.reporter.clear("connect");
                    if self.counters.connects.load(Ordering::Relaxed) > 1 {
                        crate::report::eprint_line(&format!(
                            "reconnected to {broker}; {} records to resend",
                            self.retry.len()
                        ));
                    }
                    let outcome = self.connected(&conn, channel).await;
                    self.counters.connected.store(false, Ordering::Relaxed);
                    self.counters.blocked.store(false, Ordering::Relaxed);
                    self.counters.in_flight.store(0, Ordering::Relaxed);
                    match outcome {
                        Outcome::Finished => {
                            let _ = tokio::time::timeout(
                                CLOSE_TIMEOUT,
                                conn.close(200, "logcollect shutdown".into()),
                            )
                            .await;
                            return;
                        }
                        Outcome::Lost(why) => {
                            self.counters
                                .connection_losses
                                .fetch_add(1, Ordering::Relaxed);
                            let msg = format!(
                                "connection to {broker} lost: {why}; reconnecting ({} unconfirmed records to resend)",
                                self.retry.len() + self.unconfirmed.len()
                            );
                            self.counters.set_error(&msg);
                            self.reporter.report("lost", &msg);
                            // The broker that dropped us may be going down:
                            // try the next one (a single broker is retried).
                            self.broker_idx = self.broker_idx.wrapping_add(1);
                            let _ = tokio::time::timeout(
                                CLOSE_TIMEOUT,
                                conn.close(320, "logcollect reconnecting".into()),
                            )
                            .await;
                        }
                    }
                }
                Err(why) => {
                    self.counters
                        .connect_failures
                        .fetch_add(1, Ordering::Relaxed);
                    // Stats keep the cause; stderr also says what happens next.
                    let cause = format!("cannot connect to {broker}: {why}");
                    self.counters.set_error(&cause);
                    self.reporter.report(
                        "connect",
                        &format!(
                            "{cause}; retrying with backoff (up to {:?}); records are kept in memory meanwhile",
                            self.cfg.reconnect_max
                        ),
                    );
                    self.broker_idx = self.broker_idx.wrapping_add(1);
                    let wait = jitter(delay);
                    delay = (delay * 2).min(self.cfg.reconnect_max);
                    if !self.pause(wait).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps `wait` while serving control messages. `false`: shutdown is over.
    async fn pause(&mut self, wait: Duration) -> bool {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let deadline = self.deadline();
            let room = self.spool.is_some() || self.retry.len() < self.cfg.confirm_window;
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return !self.done(),
                c = self.ctrl.recv(), if self.ctrl_open => self.on_control(c),
                item = self.rx.recv(), if room => self.on_pulled_offline(item),
                _ = sleep_until(deadline) => return false,
            }
            if self.done() {
                return false;
            }
        }
    }

    /// While offline, every record goes to the spool when there is one;
    /// without one, up to `confirm_window` records are pulled into the retry
    /// buffer (so flush markers can pass) and the rest wait in the bounded
    /// queue, which keeps memory bounded whatever the broker does.
    fn on_pulled_offline(&mut self, item: Option<Item>) {
        if let Some(item) = item {
            let spool = self.spool.is_some();
            self.take_item(item, spool);
        }
    }

    /// Takes an item from the queue: to the spool (`to_spool`) or into the
    /// retry buffer with the next pull index (returned).
    fn take_item(&mut self, item: Item, to_spool: bool) -> Option<u64> {
        match item {
            Item::Marker(id) => {
                if self.spool_has_unread() {
                    // Records before the marker are on disk: it resolves
                    // once the reader has passed them.
                    self.deferred_markers.push((id, self.spool_written));
                } else {
                    let upto = self.pulled;
                    self.set_marker(id, upto);
                    self.check_flushes();
                }
                None
            }
            Item::Record(rec) => {
                if to_spool && self.spool_record(&rec) {
                    return None;
                }
                let idx = self.pulled;
                self.pulled += 1;
                self.retry.insert(idx, Pending::new(rec));
                Some(idx)
            }
        }
    }

    fn on_control(&mut self, c: Option<Control>) {
        match c {
            Some(Control::Flush {
                id,
                deadline,
                reply,
            }) => {
                let upto = self
                    .early_markers
                    .iter()
                    .position(|(m, _)| *m == id)
                    .map(|i| self.early_markers.swap_remove(i).1);
                self.flushes.push(FlushWaiter {
                    id,
                    deadline,
                    reply,
                    upto,
                });
            }
            Some(Control::Shutdown { deadline, reply }) => {
                self.shutdown = Some((deadline, Some(reply)));
            }
            None => {
                // Every handle is gone without a shutdown call: deliver what
                // we can within the configured deadline, then stop.
                self.ctrl_open = false;
                if self.shutdown.is_none() {
                    self.shutdown = Some((Instant::now() + self.cfg.shutdown_timeout, None));
                }
            }
        }
        self.check_flushes();
    }

    /// Pull index below which everything is resolved (confirmed).
    fn low_watermark(&self) -> u64 {
        let floor = self.batch_floor.unwrap_or(self.pulled);
        let a = self.retry.keys().next().copied().unwrap_or(self.pulled);
        let b = self
            .unconfirmed
            .keys()
            .next()
            .copied()
            .unwrap_or(self.pulled);
        a.min(b).min(floor)
    }

    fn check_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let low = self.low_watermark();
        let now = Instant::now();
        self.flushes.retain(|w| match w.upto {
            Some(upto) if low >= upto => {
                let _ = w.reply.try_send(());
                false
            }
            _ => now < w.deadline,
        });
    }

    fn deadline(&self) -> Option<Instant> {
        self.shutdown.as_ref().map(|(d, _)| *d)
    }

    /// Shutdown requested and either everything is delivered or the deadline passed.
    fn done(&self) -> bool {
        match &self.shutdown {
            None => false,
            Some((deadline, _)) => {
                Instant::now() >= *deadline
                    || (self.retry.is_empty()
                        && self.unconfirmed.is_empty()
                        && self.rx.is_empty()
                        && !self.spool_has_unread())
            }
        }
    }

    async fn connected(&mut self, conn: &Connection, channel: Channel) -> Outcome {
        // Anything that was in flight on a previous connection goes first.
        for (idx, p) in std::mem::take(&mut self.unconfirmed) {
            self.retry.insert(idx, p);
        }
        let mut events = conn.events_listener();
        let mut confirms: FuturesUnordered<ConfirmFuture> = FuturesUnordered::new();
        let mut blocked = false;
        let exchange = self.cfg.exchange.clone();
        let window = self.cfg.confirm_window;
        loop {
            if self.done() {
                return Outcome::Finished;
            }
            // The window counts messages in flight (each may hold a batch).
            let can_publish = !blocked && confirms.len() < window;
            let has_retry = !self.retry.is_empty();
            let deadline = self.deadline();
            let spilling = self.spilling();
            let spool_unread = self.spool_has_unread();
            tokio::select! {
                biased;
                c = self.ctrl.recv(), if self.ctrl_open => self.on_control(c),
                Some((idxs, res)) = confirms.next(), if !confirms.is_empty() => {
                    if let Err(why) = self.on_confirm(idxs, res) {
                        return Outcome::Lost(why);
                    }
                }
                ev = events.next() => match ev {
                    Some(Event::ConnectionBlocked(reason)) => {
                        blocked = true;
                        self.counters.blocked.store(true, Ordering::Relaxed);
                        let msg = format!("broker is blocking publishers ({reason}): records wait in the queue until it unblocks");
                        self.counters.set_error(&msg);
                        self.reporter.report("blocked", &msg);
                    }
                    Some(Event::ConnectionUnblocked) => {
                        blocked = false;
                        self.counters.blocked.store(false, Ordering::Relaxed);
                        self.reporter.clear("blocked");
                    }
                    // Errors of other channels (the one a failed exchange
                    // declaration closed) arrive here too: only ours matter.
                    Some(Event::Error(e)) if !conn.status().connected() || !channel.status().connected() => {
                        return Outcome::Lost(describe(&e));
                    }
                    Some(_) => {}
                    None => return Outcome::Lost("connection closed".to_owned()),
                },
                _ = std::future::ready(()), if can_publish && has_retry => {
                    let mut batch = Vec::new();
                    while let Some(next) = self.retry.pop_first() {
                        if !self.add_to_batch(&mut batch, next) {
                            break;
                        }
                    }
                    if let Err(why) = self.publish(&channel, &exchange, batch, &mut confirms).await {
                        return Outcome::Lost(why);
                    }
                }
                _ = std::future::ready(()), if can_publish && !has_retry && spool_unread => {
                    let mut batch = Vec::new();
                    while let Some(next) = self.next_from_spool() {
                        self.counters.replayed.fetch_add(1, Ordering::Relaxed);
                        if !self.add_to_batch(&mut batch, next) {
                            break;
                        }
                    }
                    if let Err(why) = self.publish(&channel, &exchange, batch, &mut confirms).await {
                        return Outcome::Lost(why);
                    }
                }
                item = self.rx.recv(), if spilling || (can_publish && !has_retry) => match item {
                    Some(item) if spilling => {
                        self.take_item(item, true);
                    }
                    Some(item) => {
                        let batch = self.gather_from_queue(item).await;
                        if let Err(why) = self.publish(&channel, &exchange, batch, &mut confirms).await {
                            return Outcome::Lost(why);
                        }
                    }
                    None => {
                        // All senders gone: only the control side can end us now.
                        if self.shutdown.is_none() {
                            self.shutdown = Some((Instant::now() + self.cfg.shutdown_timeout, None));
                        }
                    }
                },
                _ = sleep_until(deadline) => return Outcome::Finished,
            }
        }
    }

    /// Adds `next` to `batch` when it fits (count and bytes); otherwise puts
    /// it back first in line and returns `false`: the batch is complete.
    fn add_to_batch(&mut self, batch: &mut Vec<(u64, Pending)>, next: (u64, Pending)) -> bool {
        let bytes: usize = batch.iter().map(|(_, p)| p.rec.body.len() + 1).sum();
        let fits = batch.is_empty()
            || (batch.len() < self.cfg.records_per_message
                && bytes + next.1.rec.body.len() + 2 <= self.cfg.batch_max_bytes);
        if fits {
            if batch.is_empty() {
                self.batch_floor = Some(next.0);
            }
            batch.push(next);
            batch.len() < self.cfg.records_per_message
        } else {
            self.retry.insert(next.0, next.1);
            false
        }
    }

    /// A batch starting with `first` from the queue: what else is queued
    /// right now, then what arrives within `batch_linger`, up to the limits.
    async fn gather_from_queue(&mut self, first: Item) -> Vec<(u64, Pending)> {
        let mut batch = Vec::new();
        let mut more = true;
        if let Some(idx) = self.take_item(first, false) {
            if let Some(p) = self.retry.remove(&idx) {
                more = self.add_to_batch(&mut batch, (idx, p));
            }
        }
        if self.cfg.records_per_message == 1 {
            return batch;
        }
        let linger_until = tokio::time::Instant::now() + self.cfg.batch_linger;
        while more {
            let item = match self.rx.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(linger_until, self.rx.recv()).await {
                        Ok(Some(item)) => item,
                        _ => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            if let Some(idx) = self.take_item(item, false) {
                if let Some(p) = self.retry.remove(&idx) {
                    more = self.add_to_batch(&mut batch, (idx, p));
                }
            }
        }
        batch
    }

    /// Publishes a batch: one message per routing key (records keep their
    /// order within it), or the single record as it is.
    async fn publish(
        &mut self,
        channel: &Channel,
        exchange: &str,
        batch: Vec<(u64, Pending)>,
        confirms: &mut FuturesUnordered<ConfirmFuture>,
    ) -> Result<(), String> {
        // From here on the batch's records go to `unconfirmed` or back to
        // `retry` before anything else can look at the watermark.
        self.batch_floor = None;
        let mut groups: Vec<Vec<(u64, Pending)>> = Vec::new();
        for (idx, p) in batch {
            match groups
                .iter_mut()
                .find(|g| g[0].1.rec.routing_key == p.rec.routing_key)
            {
                Some(g) => g.push((idx, p)),
                None => groups.push(vec![(idx, p)]),
            }
        }
        let mut groups = groups.into_iter();
        while let Some(group) = groups.next() {
            if let Err(e) = self.publish_one(channel, exchange, group, confirms).await {
                // Not sent: the rest goes back too, to be published again.
                for (idx, p) in groups.flatten() {
                    self.retry.insert(idx, p);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn publish_one(
        &mut self,
        channel: &Channel,
        exchange: &str,
        mut group: Vec<(u64, Pending)>,
        confirms: &mut FuturesUnordered<ConfirmFuture>,
    ) -> Result<(), String> {
        if group.is_empty() {
            return Ok(());
        }
        let lines = self.cfg.batch_format == crate::config::BatchFormat::JsonLines;
        // `json_lines` bodies always end with a newline, even with one record
        // per message: Logstash's codec holds an unterminated line back.
        let batched = self.cfg.records_per_message > 1 || lines;
        // One record keeps its own id as the message id; a batch gets its own.
        let message_id = if group.len() == 1 {
            group[0].1.rec.id
        } else {
            uuid::Uuid::now_v7()
        };
        let body: std::borrow::Cow<'_, [u8]> = if !batched {
            std::borrow::Cow::Borrowed(&group[0].1.rec.body)
        } else {
            let size: usize = group.iter().map(|(_, p)| p.rec.body.len() + 1).sum();
            let mut b = Vec::with_capacity(size + 2);
            if lines {
                for (_, p) in &group {
                    b.extend_from_slice(&p.rec.body);
                    b.push(b'\n');
                }
            } else if group.len() == 1 {
                b.extend_from_slice(&group[0].1.rec.body);
            } else {
                b.push(b'[');
                for (i, (_, p)) in group.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    b.extend_from_slice(&p.rec.body);
                }
                b.push(b']');
            }
            std::borrow::Cow::Owned(b)
        };
        let routing_key = group[0].1.rec.routing_key.clone();
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = message_id.hyphenated().encode_lower(&mut id);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id((&*id).into())
            .with_app_id("logcollect".into())
            .with_timestamp(now)
            .with_delivery_mode(if self.cfg.durable { 2 } else { 1 });
        let res = channel
            .basic_publish(
                exchange.into(),
                routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &body,
                props,
            )
            .await;
        drop(body);
        match res {
            Ok(confirm) => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                let mut idxs = Vec::with_capacity(group.len());
                for (idx, mut p) in group.drain(..) {
                    if p.sent {
                        self.counters.republished.fetch_add(1, Ordering::Relaxed);
                    }
                    p.sent = true;
                    idxs.push(idx);
                    self.unconfirmed.insert(idx, p);
                }
                self.counters
                    .in_flight
                    .store(self.unconfirmed.len() as u64, Ordering::Relaxed);
                confirms.push(Box::pin(async move { (idxs, confirm.await) }));
                Ok(())
            }
            Err(e) => {
                for (idx, p) in group {
                    self.retry.insert(idx, p);
                }
                Err(describe(&e))
            }
        }
    }

    fn on_confirm(
        &mut self,
        idxs: Vec<u64>,
        res: lapin::Result<Confirmation>,
    ) -> Result<(), String> {
        let outcome = match res {
            Ok(Confirmation::Nack(_)) => {
                self.counters.nacked.fetch_add(1, Ordering::Relaxed);
                for idx in idxs {
                    if let Some(p) = self.unconfirmed.remove(&idx) {
                        self.retry.insert(idx, p);
                    }
                }
                self.reporter.report(
                    "nack",
                    "the broker refused a record (nack); it will be published again",
                );
                Ok(())
            }
            Ok(c) => {
                let returned = matches!(c, Confirmation::Ack(Some(_)));
                for p in idxs.iter().filter_map(|idx| self.unconfirmed.remove(idx)) {
                    if let (Some(seg), Some(spool)) = (p.origin, self.spool.as_mut()) {
                        spool.ack(seg);
                    }
                    let counter = if p.inherited {
                        &self.counters.recovered
                    } else {
                        &self.counters.confirmed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if returned {
                        self.counters.unroutable.fetch_add(1, Ordering::Relaxed);
                        let msg = format!(
                            "exchange {:?} has no queue bound for routing key {:?}: the broker discards these records. \
                             Bind a queue with `{}.#` (see `logcollect setup`)",
                            self.cfg.exchange, p.rec.routing_key, self.cfg.routing_key
                        );
                        self.counters.set_error(&msg);
                        self.reporter.report("unroutable", &msg);
                    }
                }
                Ok(())
            }
            Err(e) => Err(describe(&e)),
        };
        self.counters
            .in_flight
            .store(self.unconfirmed.len() as u64, Ordering::Relaxed);
        self.check_flushes();
        outcome
    }

    /// Counts and reports what is left, answers the shutdown caller.
    fn finish(&mut self) {
        self.rx.close();
        let mut left = 0u64;
        let mut kept = 0u64;
        let mut rest: Vec<Pending> = std::mem::take(&mut self.retry).into_values().collect();
        rest.extend(std::mem::take(&mut self.unconfirmed).into_values());
        while let Ok(item) = self.rx.try_recv() {
            if let Item::Record(rec) = item {
                rest.push(Pending::new(rec));
            }
        }
        for p in rest {
            if p.origin.is_some() {
                // Still in its spool segment, which is only deleted once
                // every record in it is confirmed.
                if !p.inherited {
                    kept += 1;
                }
            } else if self.spool_record(&p.rec) {
                kept += 1;
                self.own_unread = self.own_unread.saturating_sub(1);
            } else {
                left += 1;
            }
        }
        // This process's records written to the spool and never read back.
        kept += self.own_unread;
        self.sync_spool();
        self.counters
            .kept_in_spool_at_shutdown
            .fetch_add(kept, Ordering::Relaxed);
        self.counters
            .undelivered_at_shutdown
            .fetch_add(left, Ordering::Relaxed);
        self.counters.connected.store(false, Ordering::Relaxed);
        if let Some((_, Some(reply))) = self.shutdown.take() {
            let _ = reply.try_send(left);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Between half and all of `d`, so many processes restarted together do not
/// reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Opens a connection and a confirm-mode channel, and declares the exchange.
async fn connect(cfg: &Config, broker: &BrokerUri) -> Result<(Connection, Channel), String> {
    let name = format!("logcollect {} pid {}", cfg.host, std::process::id());
    let conn = crate::amqp::connect(cfg, broker, &name)
        .await
        .map_err(|e| e.to_string())?;
    match open_channel(cfg, &conn).await {
        Ok(ch) => Ok((conn, ch)),
        Err(e) => {
            let _ =
                tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, "setup failed".into())).await;
            Err(e)
        }
    }
}

async fn open_channel(cfg: &Config, conn: &Connection) -> Result<Channel, String> {
    let channel = confirm_channel(conn).await?;
    let options = ExchangeDeclareOptions {
        durable: cfg.durable,
        auto_delete: cfg.auto_delete,
        ..ExchangeDeclareOptions::default()
    };
    match channel
        .exchange_declare(
            cfg.exchange.as_str().into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await
    {
        Ok(()) => Ok(channel),
        Err(e) if crate::amqp::is_soft_error(&e, AMQPSoftError::PRECONDITIONFAILED) => {
            // The exchange exists with another type or flags. Publishing to it
            // as it is beats losing every record (the Python library did).
            let msg = format!(
                "exchange {:?} already exists with another type or durability than topic/durable={}/auto_delete={} ({}); \
                 publishing to the existing exchange as it is. To fix: delete it or set `durable` to match",
                cfg.exchange,
                cfg.durable,
                cfg.auto_delete,
                describe(&e)
            );
            crate::report::eprint_line(&msg);
            let channel = confirm_channel(conn).await?;
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    cfg.exchange.as_str().into(),
                    ExchangeKind::Topic,
                    passive,
                    FieldTable::default(),
                )
                .await
                .map_err(|e| describe(&e))?;
            Ok(channel)
        }
        Err(e) => Err(format!(
            "cannot declare exchange {:?}: {}",
            cfg.exchange,
            describe(&e)
        )),
    }
}

async fn confirm_channel(conn: &Connection) -> Result<Channel, String> {
    let channel = conn.create_channel().await.map_err(|e| describe(&e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| describe(&e))?;
    Ok(channel)
}

fn describe(e: &lapin::Error) -> String {
    // lapin's messages never include the password: it is only sent in the
    // SASL response, which errors do not echo.
    e.to_string()
}
