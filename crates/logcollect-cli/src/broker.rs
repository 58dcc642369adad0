//! What `tail`, `doctor` and `setup` share about talking to the broker.

use std::time::Duration;

use lapin::Connection;
use logcollect::{BrokerUri, Config};

/// How long closing a connection may take once we are done: the broker
/// cleans up after a dropped connection anyway, so don't linger.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// AMQP reply code of a normal close.
const REPLY_SUCCESS: u16 = 200;
/// AMQP's limit on a short string: names and binding keys.
pub(crate) const MAX_SHORT_STRING: usize = 255;

/// Connects to the first broker of the failover list that answers, in order.
pub(crate) async fn connect_any(
    config: &Config,
    name: &str,
) -> anyhow::Result<(Connection, BrokerUri)> {
    let mut failures = Vec::new();
    for broker in config.brokers().iter() {
        match logcollect::amqp::connect(config, broker, name).await {
            Ok(conn) => return Ok((conn, broker.clone())),
            Err(why) => failures.push(format!("{broker}: {why}")),
        }
    }
    anyhow::bail!("cannot connect: {}", failures.join("; "))
}

/// Closes `conn` politely, without waiting long for the broker's answer.
pub(crate) async fn close(conn: &Connection, why: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close(REPLY_SUCCESS, why.into())).await;
}

/// The broker's own words for a refused operation (`NOT_FOUND - no exchange
/// 'x' in vhost '/'`), or lapin's description of any other failure.
pub(crate) fn reason(e: &lapin::Error) -> String {
    logcollect::amqp::reply_text(e).unwrap_or_else(|| e.to_string())
}

/// What a `PRECONDITION_FAILED` says differs between a declaration and the
/// existing exchange or queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inequivalent {
    /// The property or argument: `type`, `durable`, `x-max-length`…
    pub(crate) arg: String,
    /// What we declared (`none` when we did not set it).
    pub(crate) wanted: String,
    /// What the existing one has (`none` when it has no such argument).
    pub(crate) current: String,
}

impl Inequivalent {
    /// Reads RabbitMQ's `inequivalent arg 'durable' for exchange 'x' in vhost
    /// '/': received 'false' but current is 'true'` (and the `received none
    /// but current is the value '10' of type 'long'` form of arguments).
    pub(crate) fn parse(message: &str) -> Option<Inequivalent> {
        let rest = &message[message.find("inequivalent arg '")? + "inequivalent arg '".len()..];
        let arg = &rest[..rest.find('\'')?];
        let rest = &rest[rest.find("received ")? + "received ".len()..];
        let (wanted, current) = rest.split_once(" but current is ")?;
        Some(Inequivalent {
            arg: arg.to_owned(),
            wanted: value_text(wanted),
            current: value_text(current),
        })
    }
}

/// `'true'` → `true`; `the value '10' of type 'long'` → `10`; `none` stays.
fn value_text(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("the value ").unwrap_or(s);
    match s.strip_prefix('\'').and_then(|s| s.split_once('\'')) {
        Some((quoted, _)) => quoted.to_owned(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inequivalent_flags() {
        let m = "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'ex' in vhost '/': \
                 received 'topic' but current is 'direct'";
        assert_eq!(
            Inequivalent::parse(m),
            Some(Inequivalent {
                arg: "type".into(),
                wanted: "topic".into(),
                current: "direct".into()
            })
        );
        let m = "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': \
                 received 'true' but current is 'false'";
        let i = Inequivalent::parse(m).unwrap();
        assert_eq!(
            (i.arg.as_str(), i.wanted.as_str(), i.current.as_str()),
            ("durable", "true", "false")
        );
    }

    #[test]
    fn inequivalent_arguments() {
        let m =
            "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/': \
                 received none but current is the value '400000' of type 'long'";
        let i = Inequivalent::parse(m).unwrap();
        assert_eq!(
            (i.arg.as_str(), i.wanted.as_str(), i.current.as_str()),
            ("x-max-length", "none", "400000")
        );
        let m = "inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received the value \
                 'quorum' of type 'longstr' but current is none";
        let i = Inequivalent::parse(m).unwrap();
        assert_eq!((i.wanted.as_str(), i.current.as_str()), ("quorum", "none"));
        assert_eq!(Inequivalent::parse("NOT_FOUND - no queue 'q'"), None);
    }
}
