//! The driver: the async loop on the shipper thread that moves records from
//! the intake to the broker (or the spool and back), on tokio's clock.
//!
//! It owns the records it took: `held` (in memory, to publish), `sent` (in
//! flight, awaiting confirms), and through the spool those on disk; the
//! ledger follows each one. Nothing here waits on the broker without also
//! serving control messages, the intake and every deadline: publishes are
//! futures polled beside them, connects and closes are bounded.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::batch::Batching;
use super::intake::Intake;
use super::ledger::Ledger;
use super::spool::{Spool, SpoolFs};
use super::stats::LedgerSnapshot;
use super::transport::{Confirm, Link, LinkDown, LinkEvent, Transport};
use crate::encode::Encoded;
use crate::error::ShutdownError;
use crate::report::Reporter;

#[cfg(test)]
mod audit;
mod outbox;
mod spooling;

/// A broker that refuses the same record this many times (each time alone
/// on the channel, so it is that record) has it given up as `rejected`: it
/// will not change its mind, and the records behind must flow.
pub(crate) const MAX_REFUSALS: u8 = 3;
/// Spooled records are made durable at least this often while records keep
/// coming (and at once when the intake runs dry).
const SPOOL_SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// New records go to the spool, when there is one, once memory holds more
/// than this share of its caps: early enough that callers rarely meet a full
/// queue, late enough that a burst does not touch the disk.
const SPILL_AT: (usize, usize) = (3, 4);
/// No deadline is further than this: a timeout of `Duration::MAX` (or 1e19
/// seconds from the environment) means "wait for ever", not an overflow.
/// How long the driver keeps looking at an empty intake every
/// `wake_interval` before it parks. Long enough that a service logging
/// twenty records a second or more never has a caller wake the driver;
/// short enough that an idle process soon stops waking up at all.
const LINGER_BEFORE_PARKING: Duration = Duration::from_millis(50);

const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(FAR_FUTURE))
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// A request to the shipper thread.
pub(crate) enum Control {
    /// Answer once every record with a sequence number below `upto` is
    /// confirmed or lost, or when `timeout` has passed.
    Flush {
        upto: u64,
        timeout: Duration,
        reply: SyncSender<Result<(), ShutdownError>>,
    },
    /// Deliver what can be delivered within `timeout`, keep the rest in the
    /// spool or count it, then stop and answer.
    Shutdown {
        timeout: Duration,
        reply: SyncSender<()>,
    },
}

/// The driver's settings, taken from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) brokers: usize,
    pub(crate) confirm_window: usize,
    pub(crate) batching: Batching,
    pub(crate) batch_linger: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    /// Bound on one whole connection attempt (handshake and declaration).
    pub(crate) connect_bound: Duration,
    /// A publish unconfirmed this long (the broker not blocking us) means
    /// the connection is dead: hung broker, partition.
    pub(crate) liveness_timeout: Duration,
    /// How long a record may wait in the intake before it is picked up.
    pub(crate) wake_interval: Duration,
    /// Used when every handle is gone without a shutdown call.
    pub(crate) shutdown_timeout: Duration,
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    /// Seeds jitter and the first broker (tests: fixed; product: random).
    pub(crate) seed: u64,
}

impl Settings {
    /// Empty pick-ups in a row before parking (`LINGER_BEFORE_PARKING`).
    fn pickups_before_parking(&self) -> u32 {
        let ticks = LINGER_BEFORE_PARKING.as_nanos() / self.wake_interval.as_nanos().max(1);
        u32::try_from(ticks).unwrap_or(u32::MAX).max(1)
    }
}

/// Orders records for publishing: those an earlier process left first (the
/// spool hands them out first), then this process's by sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Inherited(u64),
    Own(u64),
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) rec: Encoded,
    /// Published at least once (the next publish is a republish).
    sent: bool,
    /// The spool segment it was read from, acknowledged on confirm.
    seg: Option<u64>,
    /// Times the broker refused it while it was alone on the channel.
    refusals: u8,
    /// When it reached the driver (a batch waits `batch_linger` from here).
    since: Instant,
}

/// A message in flight.
#[derive(Debug)]
struct Sent {
    records: Vec<(Key, Pending)>,
    at: Instant,
}

type Tagged = Pin<Box<dyn Future<Output = (u64, Result<Confirm, LinkDown>)>>>;

/// How a connected period ended.
enum Ended {
    Lost(LinkDown),
    Finished,
}

pub(crate) struct Driver<T: Transport, F: SpoolFs> {
    s: Settings,
    intake: Arc<Intake>,
    ctrl: mpsc::UnboundedReceiver<Control>,
    ctrl_open: bool,
    transport: T,
    spool: Option<Spool<F>>,
    reporter: Arc<Reporter>,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    ledger: Ledger,
    snap: LedgerSnapshot,
    held: BTreeMap<Key, Pending>,
    sent: BTreeMap<u64, Sent>,
    confirms: FuturesUnordered<Tagged>,
    next_msg: u64,
    next_inherited: u64,
    closing: FuturesUnordered<Pin<Box<dyn Future<Output = ()>>>>,
    backoff: super::backoff::Backoff,
    rng: rand::rngs::SmallRng,
    broker: usize,
    /// After a refused publish: one record per message, one in flight, so
    /// that a refusal names its record, until every record that was in
    /// flight at the refusal (up to this key) has been tried alone.
    cautious: Option<Key>,
    shutdown: Option<(Instant, Option<SyncSender<()>>)>,
    /// Memory to give back to the intake at the end of the step.
    freed: (usize, usize),
    /// Next time the intake is picked up (`None`: when a caller wakes us).
    pickup_at: Option<Instant>,
    /// Pick-ups in a row that found nothing (see `pick_up`).
    empty_pickups: u32,
    spool_dirty_since: Option<Instant>,
    scratch: VecDeque<Encoded>,
    /// At shutdown: own records read back from the spool but not confirmed,
    /// left in their segment for the next process.
    kept_read_back: u64,
    #[cfg(test)]
    steps: u64,
}

impl<T: Transport, F: SpoolFs> Driver<T, F> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        s: Settings,
        intake: Arc<Intake>,
        ctrl: mpsc::UnboundedReceiver<Control>,
        transport: T,
        spool: Option<Spool<F>>,
        reporter: Arc<Reporter>,
        last_error: Arc<std::sync::Mutex<Option<String>>>,
    ) -> Self {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(s.seed);
        // A fleet sharing a failover list spreads over it.
        let broker = rng.random_range(0..s.brokers.max(1));
        let mut ledger = Ledger::default();
        if let Some(sp) = &spool {
            ledger.inherited(sp.inherited_unread());
        }
        Driver {
            backoff: super::backoff::Backoff::new(s.reconnect_min, s.reconnect_max),
            s,
            intake,
            ctrl,
            ctrl_open: true,
            transport,
            spool,
            reporter,
            last_error,
            ledger,
            snap: LedgerSnapshot::default(),
            held: BTreeMap::new(),
            sent: BTreeMap::new(),
            confirms: FuturesUnordered::new(),
            next_msg: 0,
            next_inherited: 0,
            closing: FuturesUnordered::new(),
            rng,
            broker,
            cautious: None,
            shutdown: None,
            freed: (0, 0),
            pickup_at: None,
            empty_pickups: 0,
            spool_dirty_since: None,
            scratch: VecDeque::new(),
            kept_read_back: 0,
            #[cfg(test)]
            steps: 0,
        }
    }

    /// Runs until shutdown; then keeps or counts what is left.
    pub(crate) async fn run(mut self) {
        self.publish_snapshot();
        loop {
            if self.finished() {
                break;
            }
            match self.connect().await {
                None => break,
                Some(Err(reason)) => {
                    self.snap.connect_failures += 1;
                    let cause = format!(
                        "cannot connect to {}: {reason}",
                        self.transport.describe(self.broker)
                    );
                    self.set_error(&cause);
                    self.reporter.report(
                        "connect",
                        &format!(
                            "{cause}; retrying with backoff (up to {:?}){}; records wait in memory{} meanwhile",
                            self.s.reconnect_max,
                            if self.s.brokers > 1 { " across the failover list" } else { "" },
                            if self.spool.is_some() { " and in the spool" } else { "" }
                        ),
                    );
                    self.broker = (self.broker + 1) % self.s.brokers.max(1);
                    let unit = self.rng.random::<f64>();
                    let wait = self.backoff.after_failure(unit);
                    if !self.pause(wait).await {
                        break;
                    }
                }
                Some(Ok(opened)) => {
                    let since = Instant::now();
                    let confirmed_before = self.snap_confirmations();
                    self.snap.connects += 1;
                    self.snap.connected = true;
                    self.reporter.clear("connect");
                    if let Some(conflict) = opened.exchange_conflict {
                        self.reporter.once("exchange-conflict", &conflict);
                    }
                    if self.snap.connects > 1 {
                        self.reporter.report(
                            "reconnected",
                            &format!("reconnected to {}", self.transport.describe(self.broker)),
                        );
                    }
                    let mut link = opened.link;
                    let ended = self.online(&mut link).await;
                    self.snap.connected = false;
                    self.snap.blocked = false;
                    if let Ended::Lost(down) = &ended {
                        if down.refused_publish() {
                            self.strike_lone_message();
                        }
                        // A publish that found the channel closing is the
                        // first news of a refusal whose reason the confirms
                        // in flight had not learned yet: find the record
                        // alone all the same, or a broker that refuses
                        // everything is never told apart from a cut (seen
                        // with lapin, and in `scenarios.rs`).
                        if down.refused_publish() || down.channel_closing {
                            let last = self
                                .sent
                                .values()
                                .flat_map(|s| s.records.iter().map(|(k, _)| *k))
                                .max();
                            self.cautious = self.cautious.max(last);
                        }
                    }
                    self.requeue_in_flight();
                    match ended {
                        Ended::Finished => {
                            self.closing
                                .push(Box::pin(link.close(200, "logcollect shutdown")));
                            break;
                        }
                        Ended::Lost(down) => {
                            self.closing
                                .push(Box::pin(link.close(320, "logcollect reconnecting")));
                            let proved = self.snap_confirmations() > confirmed_before;
                            self.on_lost(&down);
                            let unit = self.rng.random::<f64>();
                            let wait = self.backoff.after_loss(since.elapsed(), proved, unit);
                            if !self.pause(wait).await {
                                break;
                            }
                        }
                    }
                }
            }
        }
        self.finish().await;
    }

    fn snap_confirmations(&self) -> u64 {
        let mut s = LedgerSnapshot::default();
        self.ledger.fill(&mut s);
        s.confirmed + s.unroutable + s.recovered
    }

    fn on_lost(&mut self, down: &LinkDown) {
        self.snap.connection_losses += 1;
        let broker = self.transport.describe(self.broker);
        self.broker = (self.broker + 1) % self.s.brokers.max(1);
        let msg = format!(
            "connection to {broker} lost: {}; reconnecting{} ({} record(s) to resend)",
            down.reason,
            if self.s.brokers > 1 {
                " to the next broker"
            } else {
                ""
            },
            self.held.len()
        );
        self.set_error(&msg);
        if down.refused_publish() {
            self.reporter.once(
                "refused",
                &format!(
                    "the broker refuses our publishes: {}. {}; records are kept (memory, spool) and retried with growing backoff, \
                     a record refused {MAX_REFUSALS} times on its own is given up and counted as rejected",
                    down.reason,
                    match down.code {
                        Some(403) => format!(
                            "Give the user write permission on exchange {:?} (rabbitmqctl set_permissions)",
                            self.s.exchange
                        ),
                        _ => "A record larger than the broker's max_message_size is refused: raise it or lower max_record_bytes".to_owned(),
                    }
                ),
            );
        } else {
            self.reporter.report("lost", &msg);
        }
    }

    /// Tries broker `self.broker` while serving everything else; `None`
    /// when shutdown ended meanwhile.
    async fn connect(&mut self) -> Option<Result<super::transport::Opened<T::Link>, String>> {
        let bound = self.s.connect_bound;
        let attempt = tokio::time::timeout(bound, self.transport.connect(self.broker));
        tokio::pin!(attempt);
        loop {
            let deadline = self.wake_at();
            tokio::select! {
                r = &mut attempt => {
                    return Some(match r {
                        Ok(Ok(opened)) => Ok(opened),
                        Ok(Err(failure)) => Err(failure.reason),
                        Err(_) => Err(format!("no answer within {bound:?} (the broker or the network hangs)")),
                    });
                }
                c = self.ctrl.recv(), if self.ctrl_open => self.on_control(c),
                _ = self.intake.woken() => self.pickup_at = Some(Instant::now()),
                _ = self.closing.next(), if !self.closing.is_empty() => {}
                _ = sleep_until(deadline) => {}
            }
            self.offline_step();
            if self.finished() {
                return None;
            }
        }
    }

    /// Waits `wait` while serving everything; `false` when shutdown ended.
    async fn pause(&mut self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            let deadline = self.wake_at().map_or(until, |d| d.min(until));
            tokio::select! {
                c = self.ctrl.recv(), if self.ctrl_open => self.on_control(c),
                _ = self.intake.woken() => self.pickup_at = Some(Instant::now()),
                _ = self.closing.next(), if !self.closing.is_empty() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
            self.offline_step();
            if self.finished() {
                return false;
            }
            if Instant::now() >= until {
                return true;
            }
        }
    }

    /// While offline: records go to the spool when there is one (without
    /// one they wait in the intake, which bounds them), flushes time out.
    fn offline_step(&mut self) {
        let now = Instant::now();
        if self.pickup_at.is_some_and(|t| t <= now) {
            self.pickup_at = None;
            if self.spool.is_some() {
                self.pick_up(true);
            }
        }
        self.sync_spool_if_due(now);
        self.end_step(now);
    }

    /// The earliest time something must happen while offline.
    fn wake_at(&self) -> Option<Instant> {
        [
            self.shutdown.as_ref().map(|(d, _)| *d),
            self.ledger.next_flush_deadline(),
            self.pickup_at.filter(|_| self.spool.is_some()),
            self.spool_dirty_since.map(|t| t + SPOOL_SYNC_INTERVAL),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Connected: publish, confirm, watch.
    async fn online(&mut self, link: &mut T::Link) -> Ended {
        let mut blocked = false;
        // The watchdog counts from here when the oldest publish is older
        // (a block just ended, or the link just opened).
        let mut watch_from = Instant::now();
        self.pickup_at = Some(Instant::now());
        loop {
            let now = Instant::now();
            if self.finished() {
                return Ended::Finished;
            }
            let window = if self.cautious.is_some() {
                1
            } else {
                self.s.confirm_window
            };
            let room = !blocked && self.sent.len() < window;
            let publish_now = room && self.ready_to_publish(now);
            let watchdog = self.watchdog(blocked, watch_from);
            let timer = [
                self.shutdown.as_ref().map(|(d, _)| *d),
                self.ledger.next_flush_deadline(),
                self.pickup_at,
                self.spool_dirty_since.map(|t| t + SPOOL_SYNC_INTERVAL),
                watchdog,
                room.then(|| self.linger_until()).flatten(),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                biased;
                c = self.ctrl.recv(), if self.ctrl_open => self.on_control(c),
                Some((no, res)) = self.confirms.next(), if !self.confirms.is_empty() => {
                    if let Err(down) = self.on_confirm(no, res) {
                        return Ended::Lost(down);
                    }
                }
                ev = link.next_event() => match ev {
                    LinkEvent::Blocked(reason) => {
                        blocked = true;
                        self.snap.blocked = true;
                        let msg = format!("the broker is blocking publishers ({reason}): records wait until it unblocks");
                        self.set_error(&msg);
                        self.reporter.report("blocked", &msg);
                    }
                    LinkEvent::Unblocked => {
                        blocked = false;
                        watch_from = Instant::now();
                        self.snap.blocked = false;
                        self.reporter.clear("blocked");
                    }
                    LinkEvent::Down(down) => return Ended::Lost(down),
                },
                _ = self.intake.woken() => self.pickup_at = Some(Instant::now()),
                _ = self.closing.next(), if !self.closing.is_empty() => {}
                _ = std::future::ready(()), if publish_now => self.publish(link, window),
                _ = sleep_until(timer) => {}
            }
            let now = Instant::now();
            if self.watchdog(blocked, watch_from).is_some_and(|w| now >= w) {
                return Ended::Lost(LinkDown::new(
                    None,
                    format!(
                        "no confirm for {:?} (the broker or the network hangs)",
                        self.s.liveness_timeout
                    ),
                ));
            }
            if self.pickup_at.is_some_and(|t| t <= now) {
                self.pickup_at = None;
                let spill = self.spilling();
                self.pick_up(spill);
            }
            self.sync_spool_if_due(now);
            self.end_step(now);
        }
    }

    fn on_control(&mut self, c: Option<Control>) {
        let now = Instant::now();
        match c {
            Some(Control::Flush {
                upto,
                timeout,
                reply,
            }) => {
                self.ledger
                    .add_flush(upto, deadline_after(now, timeout), reply);
                self.pickup_at = Some(now);
            }
            Some(Control::Shutdown { timeout, reply }) => {
                self.shutdown = Some((deadline_after(now, timeout), Some(reply)));
                self.pickup_at = Some(now);
            }
            None => {
                // Every handle is gone without a shutdown call: deliver what
                // we can within the configured deadline, then stop.
                self.ctrl_open = false;
                if self.shutdown.is_none() {
                    self.shutdown = Some((deadline_after(now, self.s.shutdown_timeout), None));
                }
            }
        }
    }

    /// Shutdown asked and either everything of ours is settled or its
    /// deadline passed.
    fn finished(&self) -> bool {
        let Some((deadline, _)) = &self.shutdown else {
            return false;
        };
        Instant::now() >= *deadline
            || (self.intake.accepted() == self.ledger.pulled() && self.ledger.unresolved() == 0)
    }

    /// After every step: memory back to callers, flushes answered, the
    /// account published.
    fn end_step(&mut self, now: Instant) {
        if self.freed != (0, 0) {
            self.intake.release(self.freed.0, self.freed.1);
            self.freed = (0, 0);
        }
        // The account first: a caller whose flush returns reads stats that
        // already show what the flush waited for.
        self.publish_snapshot();
        self.ledger.answer_flushes(now);
        #[cfg(test)]
        {
            // Recounting every record is linear: every few steps is enough
            // to catch a drift (the simulation test runs thousands of seeds).
            self.steps += 1;
            if self.steps.is_multiple_of(8) || self.snap.shut_down {
                self.audit();
            }
        }
    }

    fn publish_snapshot(&mut self) {
        self.ledger.fill(&mut self.snap);
        if let Some(spool) = &self.spool {
            self.snap.spool_bytes = spool.bytes();
        }
        self.intake.publish(&self.snap);
    }

    fn set_error(&self, msg: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg.to_owned());
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
