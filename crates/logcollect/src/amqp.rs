//! Connecting to the broker a [`Shipper`](crate::Shipper) uses, for tools that
//! open their own AMQP connection (the `logcollect` CLI's `tail`, for one).
//! These functions expose lapin's types on purpose: that is their point.

use std::time::Duration;

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::{Connection, ConnectionProperties};

use crate::uri::BrokerUri;

/// Opens a connection to `broker`, giving up after `timeout` (TCP and AMQP
/// handshake together). The error is in words, with the fix where we know
/// it, and never contains the password.
pub async fn connect(
    broker: &BrokerUri,
    connection_name: &str,
    timeout: Duration,
) -> Result<Connection, String> {
    let props = ConnectionProperties::default().with_connection_name(connection_name.into());
    match tokio::time::timeout(timeout, Connection::connect_uri(broker.to_lapin(), props)).await {
        Err(_) => Err(format!(
            "no AMQP answer within {timeout:?} (is this a RabbitMQ port?)"
        )),
        Ok(Err(e)) => Err(describe_connect_error(&e, broker)),
        Ok(Ok(conn)) => Ok(conn),
    }
}

/// A failed connection attempt to `broker` in words, with the fix where we
/// know it. lapin's messages never hold the password: it only travels in
/// the SASL response, which errors do not echo.
pub fn describe_connect_error(e: &lapin::Error, broker: &BrokerUri) -> String {
    match e.kind() {
        lapin::ErrorKind::IOError(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!(
                "connection refused at {} (is RabbitMQ running and listening there?)",
                broker.address()
            )
        }
        lapin::ErrorKind::ProtocolError(p) => match p.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => format!(
                "login refused for user {:?}: wrong user or password ({})",
                broker.user(),
                p.get_message()
            ),
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => format!(
                "vhost {:?} does not exist or user {:?} may not use it ({})",
                broker.vhost(),
                broker.user(),
                p.get_message()
            ),
            _ => e.to_string(),
        },
        _ => e.to_string(),
    }
}

/// Whether `e` is the channel-level (soft) AMQP error `kind`, e.g.
/// `PRECONDITIONFAILED` for an exchange declared with other flags.
pub fn is_soft_error(e: &lapin::Error, kind: AMQPSoftError) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if *p.kind() == AMQPErrorKind::Soft(kind))
}
