//! Connecting to the broker a [`Shipper`](crate::Shipper) uses, for tools that
//! open their own AMQP connection (the `logcollect` CLI's `tail`, for one).
//! These functions expose lapin's types on purpose: that is their point.

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};

use crate::config::Config;
use crate::uri::BrokerUri;

/// Opens a connection to `broker` (one of `config`'s brokers) with the
/// configuration's TLS material, giving up after the broker's
/// `connection_timeout` or the configuration's `connect_timeout` (TCP, TLS
/// and AMQP handshakes together). The error is in words, with the fix where
/// we know it, and never contains the password.
pub async fn connect(
    config: &Config,
    broker: &BrokerUri,
    connection_name: &str,
) -> Result<Connection, String> {
    let timeout = broker
        .connection_timeout()
        .unwrap_or(config.connect_timeout);
    let props = ConnectionProperties::default().with_connection_name(connection_name.into());
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
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
    let attempt = Connection::connect_uri_with_config(broker.to_lapin(), props, tls, runtime);
    match tokio::time::timeout(timeout, attempt).await {
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
        _ if broker.is_tls() && tls_alert(e, "certificaterequired") => format!(
            "TLS: the broker requires a client certificate ({e}); set tls_cert_file and tls_key_file \
             (LOGCOLLECT_TLS_CERT_FILE / LOGCOLLECT_TLS_KEY_FILE)"
        ),
        _ if broker.is_tls() && tls_alert(e, "received fatal alert") => format!(
            "TLS: the broker refused the handshake ({e}); if it checks client certificates, ours is \
             missing, expired or not signed by a CA it trusts"
        ),
        _ if broker.is_tls() && is_certificate_error(e) => format!(
            "TLS: the broker's certificate is not trusted ({e}); give its CA with tls_ca_file / LOGCOLLECT_TLS_CA_FILE"
        ),
        _ => e.to_string(),
    }
}

/// Whether the error text (lower-cased, spaces kept) holds `needle`: the TLS
/// library reports alerts only as text.
fn tls_alert(e: &lapin::Error, needle: &str) -> bool {
    e.to_string().to_ascii_lowercase().contains(needle)
}

fn is_certificate_error(e: &lapin::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("certificate")
        || text.contains("unknownissuer")
        || text.contains("unknown issuer")
}

/// Whether `e` is the channel-level (soft) AMQP error `kind`, e.g.
/// `PRECONDITIONFAILED` for an exchange declared with other flags.
pub fn is_soft_error(e: &lapin::Error, kind: AMQPSoftError) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if *p.kind() == AMQPErrorKind::Soft(kind))
}
