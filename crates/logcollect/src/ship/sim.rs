//! A simulated broker network for deterministic tests of the driver: any
//! number of brokers that can ack, nack, delay confirms, hang (accept
//! writes and answer nothing), block and unblock publishers, close a link
//! with any AMQP code, refuse every publish, refuse or stall connects.
//!
//! Single-threaded and driven by tokio's clock (paused in tests); every
//! random choice comes from one seeded generator, so a seed replays exactly.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::transport::{
    Confirm, ConfirmFuture, ConnectFailure, Link, LinkDown, LinkEvent, Opened, Outgoing, Transport,
};

/// Runs `body` on a current-thread runtime whose clock is paused (it jumps
/// to the next timer whenever every task waits), with a `LocalSet` for the
/// simulation's single-threaded tasks.
pub(crate) fn run_paused<F: Future>(body: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    tokio::task::LocalSet::new().block_on(&rt, body)
}

/// How a simulated broker behaves towards new and open links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Healthy.
    Up,
    /// Nothing listens: connects are refused, open links die.
    Down,
    /// The process hangs (or the network is partitioned): open links take
    /// writes and answer nothing, connects never complete.
    Hang,
    /// A memory alarm: publishers are blocked until the mode changes.
    Blocked,
    /// Every publish is refused with 403 (the user may not write there).
    Forbid,
}

/// One message as the broker took it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) body: Vec<u8>,
}

#[derive(Debug)]
struct Broker {
    mode: Mode,
    max_message_size: Option<usize>,
    nack_next: u32,
    unroutable: bool,
    connects: u64,
    links: Vec<Rc<LinkState>>,
}

#[derive(Debug)]
struct Net {
    brokers: Vec<Broker>,
    /// Every message any broker took, in order.
    received: Vec<Received>,
    rng: rand::rngs::SmallRng,
    heartbeat: Duration,
    confirm_delay: (Duration, Duration),
}

/// Shared state of one open link.
#[derive(Debug)]
struct LinkState {
    broker: usize,
    down: RefCell<Option<LinkDown>>,
    /// Hung since (no answers; the heartbeat finds it two intervals later).
    frozen_since: Cell<Option<Instant>>,
    /// The broker refused a publish and is closing the channel: new
    /// publishes fail at once, before the confirms in flight learn why (as
    /// with lapin, whose I/O thread marks the channel closing first).
    closing: Cell<bool>,
    blocked: Cell<bool>,
    events: RefCell<VecDeque<LinkEvent>>,
    changed: Notify,
}

impl LinkState {
    fn kill(&self, down: LinkDown) {
        if self.down.borrow().is_some() {
            return;
        }
        self.events
            .borrow_mut()
            .push_back(LinkEvent::Down(down.clone()));
        *self.down.borrow_mut() = Some(down);
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    fn poke(&self) {
        self.changed.notify_waiters();
        self.changed.notify_one();
    }
}

/// The simulated network: the test holds one handle to break things, the
/// driver another (as its [`Transport`]).
#[derive(Debug, Clone)]
pub(crate) struct SimNet(Rc<RefCell<Net>>);

impl SimNet {
    /// `brokers` healthy brokers; confirms take 0.1–2 ms; links die two
    /// `heartbeat`s after their broker hangs (as lapin's heartbeat does).
    pub(crate) fn new(brokers: usize, seed: u64, heartbeat: Duration) -> SimNet {
        SimNet(Rc::new(RefCell::new(Net {
            brokers: (0..brokers)
                .map(|_| Broker {
                    mode: Mode::Up,
                    max_message_size: None,
                    nack_next: 0,
                    unroutable: false,
                    connects: 0,
                    links: Vec::new(),
                })
                .collect(),
            received: Vec::new(),
            rng: rand::rngs::SmallRng::seed_from_u64(seed),
            heartbeat,
            confirm_delay: (Duration::from_micros(100), Duration::from_millis(2)),
        })))
    }

    pub(crate) fn transport(&self) -> SimTransport {
        SimTransport(self.clone())
    }

    /// Changes how broker `b` behaves, for open links too.
    pub(crate) fn set_mode(&self, b: usize, mode: Mode) {
        let mut net = self.0.borrow_mut();
        let broker = &mut net.brokers[b];
        let was = broker.mode;
        broker.mode = mode;
        broker.links.retain(|l| l.down.borrow().is_none());
        let now = Instant::now();
        for link in &broker.links {
            match mode {
                Mode::Down => link.kill(LinkDown::new(None, "connection reset by peer")),
                Mode::Hang => {
                    if link.frozen_since.get().is_none() {
                        link.frozen_since.set(Some(now));
                    }
                }
                Mode::Blocked => {
                    if !link.blocked.get() {
                        link.blocked.set(true);
                        link.events
                            .borrow_mut()
                            .push_back(LinkEvent::Blocked("memory alarm (simulated)".into()));
                    }
                }
                Mode::Up | Mode::Forbid => {}
            }
            if mode != Mode::Blocked && link.blocked.get() {
                link.blocked.set(false);
                link.events.borrow_mut().push_back(LinkEvent::Unblocked);
            }
            if was == Mode::Hang && mode != Mode::Hang {
                // The process resumes: what it took is answered again.
                link.frozen_since.set(None);
            }
            link.poke();
        }
    }

    pub(crate) fn mode(&self, b: usize) -> Mode {
        self.0.borrow().brokers[b].mode
    }

    /// The broker closes every open link with `code` (320 forced, 403, 404,
    /// 406…).
    pub(crate) fn close_links(&self, b: usize, code: u16, text: &str) {
        let mut net = self.0.borrow_mut();
        for link in net.brokers[b].links.drain(..) {
            link.kill(LinkDown::new(
                Some(code),
                format!("simulated close {code}: {text}"),
            ));
        }
    }

    /// The next `n` publishes to broker `b` are nacked.
    pub(crate) fn nack_next(&self, b: usize, n: u32) {
        self.0.borrow_mut().brokers[b].nack_next += n;
    }

    /// Bodies larger than `size` close the channel with 406, as RabbitMQ's
    /// `max_message_size` does.
    pub(crate) fn set_max_message_size(&self, b: usize, size: Option<usize>) {
        self.0.borrow_mut().brokers[b].max_message_size = size;
    }

    /// Whether broker `b` has no queue bound (every message comes back).
    pub(crate) fn set_unroutable(&self, b: usize, unroutable: bool) {
        self.0.borrow_mut().brokers[b].unroutable = unroutable;
    }

    /// Every message any broker took, from the `from`-th on, in the order
    /// they were taken.
    pub(crate) fn received_since(&self, from: usize) -> Vec<Received> {
        self.0.borrow().received[from..].to_vec()
    }

    /// Links open to broker `b` right now.
    pub(crate) fn open_links(&self, b: usize) -> usize {
        self.0.borrow().brokers[b]
            .links
            .iter()
            .filter(|l| l.down.borrow().is_none())
            .count()
    }

    /// Connections accepted by broker `b`.
    pub(crate) fn connects(&self, b: usize) -> u64 {
        self.0.borrow().brokers[b].connects
    }

    pub(crate) fn brokers(&self) -> usize {
        self.0.borrow().brokers.len()
    }
}

/// The driver's side of a [`SimNet`].
#[derive(Debug)]
pub(crate) struct SimTransport(SimNet);

impl Transport for SimTransport {
    type Link = SimLink;

    fn connect(
        &mut self,
        index: usize,
    ) -> impl Future<Output = Result<Opened<SimLink>, ConnectFailure>> + 'static {
        let net = self.0.clone();
        async move {
            // A connect takes a moment, like a TCP and AMQP handshake.
            tokio::time::sleep(Duration::from_micros(500)).await;
            let mode = net.mode(index);
            match mode {
                Mode::Down => {
                    return Err(ConnectFailure {
                        reason: "connection refused (simulated)".into(),
                    })
                }
                Mode::Hang => std::future::pending::<()>().await,
                Mode::Up | Mode::Blocked | Mode::Forbid => {}
            }
            let state = Rc::new(LinkState {
                broker: index,
                down: RefCell::new(None),
                frozen_since: Cell::new(None),
                closing: Cell::new(false),
                blocked: Cell::new(false),
                events: RefCell::new(VecDeque::new()),
                changed: Notify::new(),
            });
            {
                let mut n = net.0.borrow_mut();
                let broker = &mut n.brokers[index];
                broker.connects += 1;
                broker.links.push(state.clone());
            }
            if mode == Mode::Blocked {
                state.blocked.set(true);
                state
                    .events
                    .borrow_mut()
                    .push_back(LinkEvent::Blocked("memory alarm (simulated)".into()));
            }
            Ok(Opened {
                link: SimLink { net, state },
                exchange_conflict: None,
            })
        }
    }

    fn describe(&self, index: usize) -> String {
        format!("sim broker {index}")
    }
}

/// One simulated link.
#[derive(Debug)]
pub(crate) struct SimLink {
    net: SimNet,
    state: Rc<LinkState>,
}

impl Link for SimLink {
    fn publish(&mut self, msg: Outgoing) -> ConfirmFuture {
        let net = self.net.clone();
        let link = self.state.clone();
        let b = link.broker;
        // Decided when the message is sent, as the broker would on arrival.
        let (refusal, delay) = {
            let mut n = net.0.borrow_mut();
            let (lo, hi) = n.confirm_delay;
            let delay = n.rng.random_range(lo..=hi);
            let broker = &n.brokers[b];
            let refusal = if broker.mode == Mode::Forbid {
                Some(LinkDown::new(
                    Some(403),
                    "ACCESS_REFUSED - write access to exchange refused (simulated)",
                ))
            } else if broker.max_message_size.is_some_and(|m| msg.body.len() > m) {
                Some(LinkDown::new(
                    Some(406),
                    "PRECONDITION_FAILED - message size is larger than configured max size (simulated)",
                ))
            } else {
                None
            };
            (refusal, delay)
        };
        let sent_at = Instant::now();
        Box::pin(async move {
            if let Some(down) = link.down.borrow().clone() {
                return Err(down);
            }
            if link.closing.get() {
                return Err(LinkDown::channel_closing(
                    "invalid channel state: Closing (basic.publish) (simulated)",
                ));
            }
            if let Some(refusal) = refusal {
                // RabbitMQ closes the channel at the refused publish; the
                // client marks the channel closing at once and fails the
                // confirms in flight with the reason a moment later.
                link.closing.set(true);
                tokio::time::sleep(delay).await;
                link.kill(refusal.clone());
                return Err(refusal);
            }
            let ready_at = sent_at + delay;
            loop {
                if let Some(down) = link.down.borrow().clone() {
                    // The broker may have routed it before the link died: a
                    // republish then makes a duplicate (at least once).
                    let mut n = net.0.borrow_mut();
                    if n.rng.random_bool(0.5) {
                        n.received.push(Received {
                            body: msg.body.clone(),
                        });
                    }
                    return Err(down);
                }
                let stalled = link.frozen_since.get().is_some() || link.blocked.get();
                if !stalled && Instant::now() >= ready_at {
                    break;
                }
                let changed = link.changed.notified();
                if stalled {
                    changed.await;
                } else {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(ready_at) => {}
                    }
                }
            }
            let mut n = net.0.borrow_mut();
            let broker = &mut n.brokers[b];
            if broker.nack_next > 0 {
                broker.nack_next -= 1;
                return Ok(Confirm::Nack);
            }
            if broker.unroutable {
                return Ok(Confirm::Unroutable);
            }
            n.received.push(Received { body: msg.body });
            Ok(Confirm::Ack)
        })
    }

    fn next_event(&mut self) -> impl Future<Output = LinkEvent> {
        let link = self.state.clone();
        let heartbeat = self.net.0.borrow().heartbeat;
        async move {
            loop {
                if let Some(ev) = link.events.borrow_mut().pop_front() {
                    return ev;
                }
                let changed = link.changed.notified();
                match link.frozen_since.get() {
                    // Two heartbeats of silence: the client gives up.
                    Some(since) if !heartbeat.is_zero() => {
                        tokio::select! {
                            _ = changed => {}
                            _ = tokio::time::sleep_until(since + heartbeat * 2) => {
                                link.kill(LinkDown::new(None, "missed heartbeats from the server (simulated)"));
                            }
                        }
                    }
                    _ => changed.await,
                }
            }
        }
    }

    fn close(self, _code: u16, _reason: &'static str) -> impl Future<Output = ()> + 'static {
        let frozen = self.state.frozen_since.get().is_some();
        self.state.kill(LinkDown::new(None, "closed by the client"));
        async move {
            if frozen {
                // A hung broker never answers the close: the client's own
                // timeout ends it.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
