//! What the driver needs from a broker, as a trait: connect (with the
//! exchange declared and confirms on), publish with a confirm to await,
//! connection events, close. The product uses lapin ([`super::amqp_link`]);
//! tests use an in-memory simulated broker ([`super::sim`]).

use std::future::Future;
use std::pin::Pin;

/// One message to publish.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) routing_key: String,
    pub(crate) body: Vec<u8>,
    /// The record id (one record) or the batch's own id; the AMQP `message_id`.
    pub(crate) message_id: uuid::Uuid,
}

/// The broker's answer to one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirm {
    /// Taken and routed.
    Ack,
    /// Taken, but no queue was bound for the routing key (`basic.return`).
    Unroutable,
    /// Refused for now (`basic.nack`): publish again.
    Nack,
}

/// How a link (connection plus channel) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkDown {
    /// The AMQP reply code when the broker closed the channel or the
    /// connection (320 forced, 403 access refused, 404 not found, 406
    /// precondition failed…); `None` for I/O errors and missed heartbeats.
    pub(crate) code: Option<u16>,
    /// In words, with the broker's own text when it gave one.
    pub(crate) reason: String,
    /// A publish found the channel closing: the broker closed it (a
    /// channel error: 403, 404, 406…) and the publish learned it before the
    /// confirms in flight learned the broker's reason and code.
    pub(crate) channel_closing: bool,
}

impl LinkDown {
    pub(crate) fn new(code: Option<u16>, reason: impl Into<String>) -> LinkDown {
        LinkDown {
            code,
            reason: reason.into(),
            channel_closing: false,
        }
    }

    /// A publish made after the broker began closing the channel, the
    /// broker's reason not known yet (lapin's `InvalidChannelState(Closing)`).
    pub(crate) fn channel_closing(reason: impl Into<String>) -> LinkDown {
        LinkDown {
            code: None,
            reason: reason.into(),
            channel_closing: true,
        }
    }

    /// Whether the broker refused a publish for what it was (a message too
    /// large: 406; not allowed to publish there: 403): another attempt of
    /// the same record will most likely be refused again.
    pub(crate) fn refused_publish(&self) -> bool {
        matches!(self.code, Some(403 | 406))
    }
}

/// Something that happened to the link, other than a confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    /// The broker stopped reading from publishers (memory or disk alarm).
    Blocked(String),
    /// It reads again.
    Unblocked,
    /// The link is gone.
    Down(LinkDown),
}

/// Why a connection attempt failed, in words (never with the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectFailure {
    pub(crate) reason: String,
}

/// A new link and what was noticed while opening it.
#[derive(Debug)]
pub(crate) struct Opened<L> {
    pub(crate) link: L,
    /// The exchange exists with other flags: we publish to it as it is.
    pub(crate) exchange_conflict: Option<String>,
}

/// Resolves with the broker's confirm of one publish, or how the link died.
pub(crate) type ConfirmFuture = Pin<Box<dyn Future<Output = Result<Confirm, LinkDown>>>>;

/// A source of links to brokers.
pub(crate) trait Transport {
    type Link: Link + 'static;

    /// Opens a link to broker `index` of the failover list: connection,
    /// confirm-mode channel, exchange declared. The driver bounds the time
    /// it takes; the future borrows nothing, so the driver serves
    /// everything else while it runs.
    fn connect(
        &mut self,
        index: usize,
    ) -> impl Future<Output = Result<Opened<Self::Link>, ConnectFailure>> + 'static;

    /// Broker `index` in words for messages (never with the password).
    fn describe(&self, index: usize) -> String;
}

/// One open connection with its channel.
pub(crate) trait Link {
    /// Publishes `msg`. The message is handed to the connection in call
    /// order when the returned future is first polled (the driver polls
    /// publishes in the order it made them); the future then resolves with
    /// the broker's confirm. Never awaited inline: the driver keeps serving
    /// control messages and deadlines meanwhile.
    fn publish(&mut self, msg: Outgoing) -> ConfirmFuture;

    /// The next event of the link. Cancel-safe: the driver polls it in a
    /// `select!` beside everything else.
    fn next_event(&mut self) -> impl Future<Output = LinkEvent>;

    /// Closes the link (`code` 200 for a normal close, 320 when we give up
    /// on it). The driver bounds the time it takes.
    fn close(self, code: u16, reason: &'static str) -> impl Future<Output = ()> + 'static;
}
