//! `tail`'s own AMQP connection: broker URIs in lapin's form, connecting
//! through the failover list, and connection errors in words.

use std::time::Duration;

use anyhow::bail;
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Connection, ConnectionProperties};
use logcollect::{BrokerList, BrokerUri, DEFAULT_CONNECT_TIMEOUT};

/// What kombu and py-amqp use for a missing or empty password.
const DEFAULT_PASSWORD: &str = "guest";

/// Pairs each broker of `list` with its lapin URI; `raw` is the text `list`
/// was parsed from.
///
/// The core crate keeps its own conversion and the password getter private
/// (so a password can only reach the AMQP client), so everything but the
/// password comes from the parsed [`BrokerUri`], and the password is read
/// again from `raw`.
pub(crate) fn lapin_uris(
    list: &BrokerList,
    raw: &str,
) -> anyhow::Result<Vec<(BrokerUri, AMQPUri)>> {
    // The list parser splits the same way; a `;` inside a password must be
    // written %3B in a list, so the entries line up one to one.
    let entries: Vec<&str> = raw.trim().split(';').map(str::trim).collect();
    if entries.len() != list.len() {
        bail!(
            "the broker list {list} has {} entries but its text splits into {}",
            list.len(),
            entries.len()
        );
    }
    Ok(list
        .iter()
        .zip(entries)
        .map(|(broker, entry)| (broker.clone(), to_lapin(broker, entry)))
        .collect())
}

/// `broker` as lapin's URI type, field by field. Re-parsing the text with
/// lapin would read it by other rules: lapin takes the vhost of
/// `amqp://host/` as empty (kombu: `/`), reads `connection_timeout` as
/// milliseconds (kombu: seconds), and rejects `pyamqp://`.
fn to_lapin(broker: &BrokerUri, raw: &str) -> AMQPUri {
    AMQPUri {
        scheme: if broker.is_tls() {
            AMQPScheme::AMQPS
        } else {
            AMQPScheme::AMQP
        },
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: broker.user().to_owned(),
                password: password(raw),
            },
            host: broker.host().to_owned(),
            port: broker.port(),
        },
        vhost: broker.vhost().to_owned(),
        query: AMQPQueryString {
            heartbeat: broker.heartbeat(),
            connection_timeout: broker.connection_timeout().map(millis_rounded_up),
            ..AMQPQueryString::default()
        },
    }
}

/// The decoded password of one broker URI that `BrokerUri::parse` accepted,
/// by the same rule: the authority runs from `://` to the first `/`, `?` or
/// `#`; the user information ends at its last `@` and the password starts
/// after its first `:`; empty or missing means `guest`.
fn password(raw: &str) -> String {
    let raw = raw.trim();
    let rest = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let encoded = authority
        .rfind('@')
        .and_then(|at| authority[..at].split_once(':'))
        .map_or("", |(_, password)| password);
    // The parser already rejected bad escapes and invalid UTF-8.
    let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    if decoded.is_empty() {
        DEFAULT_PASSWORD.to_owned()
    } else {
        decoded.into_owned()
    }
}

/// lapin takes whole milliseconds; rounding up keeps a tiny timeout from
/// becoming 0 ms, which fails every attempt at once.
fn millis_rounded_up(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Connects to the first broker of the list that answers, in order.
/// Returns the connection and the broker (for messages: it is redacted).
pub(crate) async fn connect(
    brokers: Vec<(BrokerUri, AMQPUri)>,
    name: &str,
) -> anyhow::Result<(Connection, BrokerUri)> {
    let mut failures = Vec::new();
    for (broker, uri) in brokers {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let timeout = broker
            .connection_timeout()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        match tokio::time::timeout(timeout, Connection::connect_uri(uri, props)).await {
            Ok(Ok(conn)) => return Ok((conn, broker)),
            Ok(Err(e)) => failures.push(format!("{broker}: {}", describe_connect(&e, &broker))),
            Err(_) => failures.push(format!(
                "{broker}: no AMQP answer within {timeout:?} (is this a RabbitMQ port?)"
            )),
        }
    }
    bail!("cannot connect: {}", failures.join("; "))
}

/// A connection failure in words, with the fix where we know it. lapin's
/// messages never hold the password: it only travels in the SASL response.
fn describe_connect(e: &lapin::Error, broker: &BrokerUri) -> String {
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

/// Whether `e` is the channel error `kind` (a channel-level refusal).
pub(crate) fn is_soft(e: &lapin::Error, kind: AMQPSoftError) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if *p.kind() == AMQPErrorKind::Soft(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(raw: &str) -> AMQPUri {
        let list = BrokerList::parse(raw).unwrap();
        let mut uris = lapin_uris(&list, raw).unwrap();
        assert_eq!(uris.len(), 1);
        uris.remove(0).1
    }

    #[test]
    fn every_field() {
        let uri = one("amqps://app:p%40ss@Rabbit:5673//logs?heartbeat=15&connection_timeout=2.5");
        assert_eq!(uri.scheme, AMQPScheme::AMQPS);
        assert_eq!(uri.authority.host, "rabbit");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.authority.userinfo.username, "app");
        assert_eq!(uri.authority.userinfo.password, "p@ss");
        assert_eq!(uri.vhost, "/logs");
        assert_eq!(uri.query.heartbeat, Some(15));
        assert_eq!(uri.query.connection_timeout, Some(2500));
    }

    #[test]
    fn vhost_rule_is_kombus() {
        for (raw, vhost) in [
            ("amqp://h", "/"),
            ("amqp://h/", "/"),
            ("amqp://h//", "/"),
            ("amqp://h/%2F", "/"),
            ("amqp://h//prod", "/prod"),
            ("amqp://h/%2Fprod", "/prod"),
            ("amqp://h/prod", "prod"),
            ("amqp://h/a%20b?heartbeat=1", "a b"),
        ] {
            assert_eq!(one(raw).vhost, vhost, "{raw}");
        }
    }

    #[test]
    fn passwords() {
        for (raw, pw) in [
            ("amqp://guest:guest@127.0.0.1:5672//", "guest"),
            ("amqp://u@h//", "guest"),
            ("amqp://u:@h//", "guest"),
            ("amqp://h//", "guest"),
            ("amqp://u:p@w@h//", "p@w"),
            ("amqp://u:a:b@h//", "a:b"),
            ("amqp://u:p%2Fw%3F%23@h:1/v?heartbeat=5", "p/w?#"),
            ("pyamqp://u:pw-s3cret-xyz@h", "pw-s3cret-xyz"),
            ("  amqp://u:sp@h//  ", "sp"),
        ] {
            assert_eq!(one(raw).authority.userinfo.password, pw, "{raw}");
        }
    }

    #[test]
    fn failover_entries_line_up() {
        let raw = "amqp://a:pa@x//; amqp://b:p%3Bb@y:5673/v";
        let list = BrokerList::parse(raw).unwrap();
        let uris = lapin_uris(&list, raw).unwrap();
        let got: Vec<(&str, &str, &str)> = uris
            .iter()
            .map(|(_, u)| {
                (
                    u.authority.host.as_str(),
                    u.authority.userinfo.password.as_str(),
                    u.vhost.as_str(),
                )
            })
            .collect();
        assert_eq!(got, [("x", "pa", "/"), ("y", "p;b", "v")]);
        assert_eq!(uris[1].0.to_string(), "amqp://b:***@y:5673/v");
    }

    #[test]
    fn timeout_rounds_up() {
        assert_eq!(millis_rounded_up(Duration::from_micros(100)), 1);
        assert_eq!(millis_rounded_up(Duration::from_micros(1500)), 2);
        assert_eq!(millis_rounded_up(Duration::from_secs(3)), 3000);
    }
}
