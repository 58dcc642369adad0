//! The product's [`Transport`]: lapin connections to the configured brokers.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::stream::{BoxStream, StreamExt};
use lapin::options::BasicPublishOptions;
use lapin::{Channel, Confirmation, Connection, Event};

use super::transport::{
    Confirm, ConfirmFuture, ConnectFailure, Link, LinkDown, LinkEvent, Opened, Outgoing, Transport,
};
use crate::config::Config;

/// How long closing a connection may take before we walk away from it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Connects to the brokers of a [`Config`].
#[derive(Debug)]
pub(crate) struct AmqpTransport {
    config: Config,
    connection_name: String,
    abandoned: AbandonedConnects,
}

impl AmqpTransport {
    pub(crate) fn new(config: Config) -> AmqpTransport {
        let connection_name = format!("logcollect {} pid {}", config.host, std::process::id());
        AmqpTransport {
            config,
            connection_name,
            abandoned: AbandonedConnects::default(),
        }
    }

    /// When a connection attempt was last given up on mid-way, shared with
    /// the shipper thread, which must not drop its runtime right after.
    pub(crate) fn abandoned_connects(&self) -> AbandonedConnects {
        self.abandoned.clone()
    }
}

/// When our side last dropped a lapin connection attempt before it ended
/// (our connect timeout, a shutdown, a drop).
///
/// lapin's io-loop thread does not stop with it: it still resolves the
/// broker's name with a blocking task spawned on our runtime and awaits that
/// task. If the runtime is dropped before the task runs, tokio cancels it
/// and the io-loop thread panics ("Task did not complete: task N was
/// cancelled", async-rs `implementors/tokio.rs`). The shipper thread
/// therefore keeps its runtime a moment after such an attempt.
#[derive(Debug, Clone, Default)]
pub(crate) struct AbandonedConnects(Arc<Mutex<Option<Instant>>>);

impl AbandonedConnects {
    /// When the last attempt was abandoned, if one was.
    pub(crate) fn last(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Marks an attempt abandoned when dropped before [`AttemptWatch::ended`].
struct AttemptWatch {
    abandoned: Option<AbandonedConnects>,
}

impl AttemptWatch {
    fn ended(&mut self) {
        self.abandoned = None;
    }
}

impl Drop for AttemptWatch {
    fn drop(&mut self) {
        if let Some(abandoned) = self.abandoned.take() {
            *abandoned.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
    }
}

impl Transport for AmqpTransport {
    type Link = AmqpLink;

    fn connect(
        &mut self,
        index: usize,
    ) -> impl std::future::Future<Output = Result<Opened<AmqpLink>, ConnectFailure>> + 'static {
        let broker = self.config.brokers.get(index).clone();
        let config = self.config.clone();
        let name = self.connection_name.clone();
        let mut watch = AttemptWatch {
            abandoned: Some(self.abandoned.clone()),
        };
        async move {
            let conn = crate::amqp::connect(&config, &broker, &name).await;
            // lapin answered: its io-loop is connected or done with our runtime.
            watch.ended();
            let conn = conn.map_err(|e| ConnectFailure {
                reason: e.to_string(),
            })?;
            // Subscribe before anything can happen on the connection.
            let events = conn.events_listener().boxed();
            match crate::amqp::declare_exchange(&conn, &config).await {
                Ok((channel, exchange_conflict)) => Ok(Opened {
                    link: AmqpLink {
                        conn,
                        channel,
                        events,
                        exchange: config.exchange.clone(),
                        config,
                    },
                    exchange_conflict,
                }),
                Err(e) => {
                    let _ =
                        tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, "setup failed".into()))
                            .await;
                    Err(ConnectFailure {
                        reason: format!("cannot declare exchange {:?}: {e}", config.exchange),
                    })
                }
            }
        }
    }

    fn describe(&self, index: usize) -> String {
        self.config.brokers.get(index).to_string()
    }
}

/// A lapin connection with its confirm-mode channel.
pub(crate) struct AmqpLink {
    conn: Connection,
    channel: Channel,
    events: BoxStream<'static, Event>,
    exchange: String,
    config: Config,
}

impl std::fmt::Debug for AmqpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpLink")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

fn down(e: &lapin::Error) -> LinkDown {
    // lapin's messages never include the password: it is only sent in the
    // SASL response, which errors do not echo.
    match e.kind() {
        // The broker closed the channel (a channel error: the publish was
        // refused) and lapin's I/O thread marked it closing before it
        // failed the confirms in flight with the broker's reason.
        lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closing, _) => {
            LinkDown::channel_closing(e.to_string())
        }
        _ => LinkDown::new(crate::amqp::reply_code(e), e.to_string()),
    }
}

impl Link for AmqpLink {
    fn publish(&mut self, msg: Outgoing) -> ConfirmFuture {
        let channel = self.channel.clone();
        let exchange = self.exchange.clone();
        let props = crate::amqp::message_properties(&self.config, &msg.message_id);
        Box::pin(async move {
            // The first poll registers the delivery tag and queues the
            // frames (lapin does both before its first await), so publishes
            // reach the broker in the order they are first polled.
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    msg.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &msg.body,
                    props,
                )
                .await
                .map_err(|e| down(&e))?;
            match confirm.await.map_err(|e| down(&e))? {
                Confirmation::Nack(_) => Ok(Confirm::Nack),
                Confirmation::Ack(Some(_)) => Ok(Confirm::Unroutable),
                Confirmation::Ack(None) | Confirmation::NotRequested => Ok(Confirm::Ack),
            }
        })
    }

    async fn next_event(&mut self) -> LinkEvent {
        loop {
            match self.events.next().await {
                Some(Event::ConnectionBlocked(reason)) => return LinkEvent::Blocked(reason),
                Some(Event::ConnectionUnblocked) => return LinkEvent::Unblocked,
                // Errors of other channels (one a failed exchange declaration
                // closed) arrive here too: only the connection and our
                // channel matter; a dead channel also fails its confirms.
                Some(Event::Error(e))
                    if !self.conn.status().connected() || !self.channel.status().connected() =>
                {
                    return LinkEvent::Down(down(&e))
                }
                Some(_) => {}
                None => return LinkEvent::Down(LinkDown::new(None, "connection closed")),
            }
        }
    }

    async fn close(self, code: u16, reason: &'static str) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.conn.close(code, reason.into())).await;
    }
}
