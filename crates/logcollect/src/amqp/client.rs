//! The functions of [`amqp`](super) over lapin's types. They are public
//! (re-exported by `amqp`) with the `lapin-api` feature only; without it the
//! shipper still uses them, inside the crate.
#![cfg_attr(not(feature = "lapin-api"), allow(unreachable_pub))]

use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::{ConnectError, ConnectErrorKind};
use crate::config::Config;
use crate::uri::BrokerUri;

/// Opens a connection to `broker` (one of `config`'s brokers) with the
/// configuration's TLS material, giving up after the broker's
/// `connection_timeout` or the configuration's `connect_timeout` (TCP, TLS
/// and AMQP handshakes together).
#[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
pub async fn connect(
    config: &Config,
    broker: &BrokerUri,
    connection_name: &str,
) -> Result<Connection, ConnectError> {
    let timeout = broker
        .connection_timeout()
        .unwrap_or(config.connect_timeout);
    connect_within(config, broker, connection_name, timeout).await
}

/// [`connect`] with an explicit time limit.
#[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
pub async fn connect_within(
    config: &Config,
    broker: &BrokerUri,
    connection_name: &str,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    let props = ConnectionProperties::default().with_connection_name(connection_name.into());
    let runtime = lapin::runtime::default_runtime().map_err(|e| ConnectError {
        kind: ConnectErrorKind::Other,
        message: e.to_string(),
        broker_said: None,
    })?;
    let tls = OwnedTLSConfig {
        identity: config
            .tls
            .identity
            .as_ref()
            .map(|(pem, key)| OwnedIdentity::PKCS8 {
                pem: pem.clone(),
                key: key.clone(),
            }),
        cert_chain: config.tls.ca_pem.clone(),
    };
    let mut uri = broker.lapin_uri();
    // A short heartbeat unless the URI names one: lapin closes a connection
    // that has heard nothing for two intervals, which is how a hung broker or
    // a partition is found even when no publish is waiting for its confirm.
    if uri.query.heartbeat.is_none() && !config.heartbeat.is_zero() {
        uri.query.heartbeat = Some(config.heartbeat.as_secs().clamp(1, u64::from(u16::MAX)) as u16);
    }
    let attempt = Connection::connect_uri_with_config(uri, props, tls, runtime);
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(ConnectError {
            kind: ConnectErrorKind::Timeout,
            message: format!("no AMQP answer within {timeout:?} (is this a RabbitMQ port?)"),
            broker_said: None,
        }),
        Ok(Err(e)) => Err(classify(&e, broker)),
        Ok(Ok(conn)) => Ok(conn),
    }
}

/// A failed connection attempt to `broker` in words, with the fix where we
/// know it. lapin's messages never hold the password: it only travels in
/// the SASL response, which errors do not echo.
#[cfg(feature = "lapin-api")]
#[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
pub fn describe_connect_error(e: &lapin::Error, broker: &BrokerUri) -> String {
    classify(e, broker).message
}

fn classify(e: &lapin::Error, broker: &BrokerUri) -> ConnectError {
    let (kind, message, said) = match e.kind() {
        lapin::ErrorKind::IOError(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            ConnectErrorKind::Refused,
            format!(
                "connection refused at {} (is RabbitMQ running and listening there?)",
                broker.address()
            ),
            None,
        ),
        lapin::ErrorKind::ProtocolError(p)
            if *p.kind() == AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) =>
        {
            let said = p.get_message().to_string();
            (
                ConnectErrorKind::LoginRefused,
                format!(
                    "login refused for user {:?}: wrong user or password ({said})",
                    broker.user()
                ),
                Some(said),
            )
        }
        lapin::ErrorKind::ProtocolError(p)
            if *p.kind() == AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) =>
        {
            let said = p.get_message().to_string();
            (
                ConnectErrorKind::VhostNotAllowed,
                format!(
                    "vhost {:?} does not exist or user {:?} may not use it ({said})",
                    broker.vhost(),
                    broker.user()
                ),
                Some(said),
            )
        }
        _ if broker.is_tls() && text_has(e, "certificaterequired") => (
            ConnectErrorKind::Tls,
            format!(
                "TLS: the broker requires a client certificate ({e}); set tls_cert_file and \
                 tls_key_file (LOGCOLLECT_TLS_CERT_FILE / LOGCOLLECT_TLS_KEY_FILE)"
            ),
            None,
        ),
        _ if broker.is_tls() && text_has(e, "received fatal alert") => (
            ConnectErrorKind::Tls,
            format!(
                "TLS: the broker refused the handshake ({e}); if it checks client certificates, \
                 ours is missing, expired or not signed by a CA it trusts"
            ),
            None,
        ),
        _ if broker.is_tls()
            && (text_has(e, "certificate")
                || text_has(e, "unknownissuer")
                || text_has(e, "unknown issuer")) =>
        {
            (
                ConnectErrorKind::Tls,
                format!(
                    "TLS: the broker's certificate is not trusted ({e}); give its CA with \
                     tls_ca_file / LOGCOLLECT_TLS_CA_FILE"
                ),
                None,
            )
        }
        _ => (ConnectErrorKind::Other, e.to_string(), None),
    };
    ConnectError {
        kind,
        message,
        broker_said: said,
    }
}

/// Whether the error's text (lower-cased) holds `needle`: the TLS library
/// reports alerts and verification failures only as text.
fn text_has(e: &lapin::Error, needle: &str) -> bool {
    e.to_string().to_ascii_lowercase().contains(needle)
}

/// Whether `e` is the channel-level (soft) AMQP error `kind`, e.g.
/// `PRECONDITIONFAILED` for an exchange declared with other flags.
#[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
pub fn is_soft_error(e: &lapin::Error, kind: AMQPSoftError) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if *p.kind() == AMQPErrorKind::Soft(kind))
}

/// The AMQP reply code of a protocol error (403 access refused, 404 not
/// found, 406 precondition failed, 320 connection forced…), if `e` is one.
#[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
pub fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

/// The broker's own words for a refused operation (`NOT_FOUND - no exchange
/// 'x' in vhost '/'`), if `e` is a protocol error.
#[cfg(feature = "lapin-api")]
#[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
pub fn reply_text(e: &lapin::Error) -> Option<String> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_message().to_string()),
        _ => None,
    }
}

/// Opens a channel in publisher-confirm mode.
#[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
pub async fn confirm_channel(conn: &Connection) -> Result<Channel, lapin::Error> {
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Declares the configuration's exchange (topic, with its `durable` and
/// `auto_delete`) and returns a confirm-mode channel to publish on.
///
/// When the exchange already exists with another type or flags, the broker
/// closes the channel (406); publishing to the exchange as it is beats losing
/// every record (the Python library did), so this checks that it exists
/// (a passive declaration on a new channel) and returns that channel with
/// the conflict in words as the second value.
#[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
pub async fn declare_exchange(
    conn: &Connection,
    config: &Config,
) -> Result<(Channel, Option<String>), lapin::Error> {
    let channel = confirm_channel(conn).await?;
    let options = ExchangeDeclareOptions {
        durable: config.durable,
        auto_delete: config.auto_delete,
        ..ExchangeDeclareOptions::default()
    };
    let declared = channel
        .exchange_declare(
            config.exchange.as_str().into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await;
    match declared {
        Ok(()) => Ok((channel, None)),
        Err(e) if is_soft_error(&e, AMQPSoftError::PRECONDITIONFAILED) => {
            let conflict = format!(
                "exchange {:?} already exists with another type or durability than topic/durable={}/auto_delete={} ({e}); \
                 publishing to the existing exchange as it is. To fix: delete it or set `durable` to match",
                config.exchange, config.durable, config.auto_delete,
            );
            let channel = confirm_channel(conn).await?;
            check_exchange(&channel, &config.exchange).await?;
            Ok((channel, Some(conflict)))
        }
        Err(e) => Err(e),
    }
}

/// Checks on `channel` that exchange `name` exists, whatever its type and
/// flags, without creating it (a passive declaration). A missing exchange is
/// the soft error `NOT_FOUND` (404), which closes `channel`.
#[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
pub async fn check_exchange(channel: &Channel, name: &str) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// The properties of a message the shipper publishes: JSON, the record id
/// (or the batch's) as `message_id`, `app_id` `logcollect`, the time in
/// seconds, persistent when the configuration is `durable`.
#[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
pub fn message_properties(config: &Config, message_id: &uuid::Uuid) -> BasicProperties {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = message_id.hyphenated().encode_lower(&mut id);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id((&*id).into())
        .with_app_id("logcollect".into())
        .with_timestamp(now)
        .with_delivery_mode(if config.durable { 2 } else { 1 })
}
