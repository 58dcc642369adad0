//! Shards (`setup --shards N`, `doctor --shards N`): the records spread over
//! N durable queues, one Logstash pipeline each, by RabbitMQ's
//! consistent-hash exchange (plugin `rabbitmq_consistent_hash_exchange`),
//! bound to our topic exchange with `<routing_key>.#`.
//!
//! The exchange hashes the AMQP `message_id` (argument `hash-property`),
//! which is each record's (or batch's) own UUIDv7: the spread is even
//! whatever the loggers, so one busy logger cannot make one shard hot, as
//! hashing the routing key (the logger name, the plugin's default) would.
//! Each queue is bound with the same weight, so each owns the same number of
//! the exchange's hash buckets.

use lapin::options::ExchangeDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::broker::MAX_SHORT_STRING;
use crate::UsageError;

/// The plugin that provides the exchange type.
pub(crate) const PLUGIN: &str = "rabbitmq_consistent_hash_exchange";
/// The exchange type the plugin adds.
pub(crate) const EXCHANGE_TYPE: &str = "x-consistent-hash";
/// What the exchange hashes: the message property every record carries.
pub(crate) const HASH_PROPERTY: &str = "message_id";
/// Most shards `--shards` takes. Each shard costs a queue, a Logstash
/// pipeline with its workers and a persistent queue of up to 1 GB on disk;
/// 64 is beyond what the nodes and cores of a cluster can use, and keeps a
/// typo (`--shards 1000`) from declaring a thousand queues.
pub(crate) const MAX_SHARDS: u16 = 64;

/// The names of a sharded layout for Logstash's queue `queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shards {
    queue: String,
    count: u16,
}

impl Shards {
    /// `count` shards named after `queue` (a valid queue name); an error
    /// when the derived names would not fit AMQP's 255 bytes.
    pub(crate) fn new(queue: &str, count: u16) -> Result<Shards, UsageError> {
        let shards = Shards {
            queue: queue.to_owned(),
            count,
        };
        let longest = shards.queue(count).len().max(shards.exchange().len());
        if longest > MAX_SHORT_STRING {
            return Err(UsageError(format!(
                "queue name {queue:?} is too long for shards: {:?} would be {longest} bytes, \
                 AMQP allows {MAX_SHORT_STRING}; pick a shorter --queue",
                shards.queue(count)
            )));
        }
        Ok(shards)
    }

    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    /// The consistent-hash exchange: `<queue>.shards`.
    pub(crate) fn exchange(&self) -> String {
        format!("{}.shards", self.queue)
    }

    /// Shard `index`'s queue (1-based): `<queue>-shard-<index>`; also its
    /// Logstash pipeline id.
    pub(crate) fn queue(&self, index: u16) -> String {
        format!("{}-shard-{index}", self.queue)
    }

    /// `(index, queue)` of every shard, in order.
    pub(crate) fn queues(&self) -> impl Iterator<Item = (u16, String)> + '_ {
        (1..=self.count).map(|i| (i, self.queue(i)))
    }

    /// The exchange's arguments: hash the message id.
    pub(crate) fn exchange_arguments() -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("hash-property"),
            AMQPValue::LongString(LongString::from(HASH_PROPERTY)),
        );
        args
    }

    /// Declares the consistent-hash exchange on `channel` as setup does:
    /// durable, hashing the message id. A broker without the plugin closes
    /// the connection ([`is_unknown_exchange_type`]).
    pub(crate) async fn declare_exchange(&self, channel: &Channel) -> lapin::Result<()> {
        let options = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange().as_str().into(),
                ExchangeKind::Custom(EXCHANGE_TYPE.to_owned()),
                options,
                Shards::exchange_arguments(),
            )
            .await
    }
}

/// Whether the broker refused a declaration because it has no such exchange
/// type: the plugin is not enabled (`COMMAND_INVALID - unknown exchange type
/// 'x-consistent-hash'`, which also closes the connection).
pub(crate) fn is_unknown_exchange_type(said: &str) -> bool {
    said.contains("unknown exchange type")
}

/// What to do when the plugin is missing.
pub(crate) fn enable_plugin() -> String {
    format!("enable the plugin: `rabbitmq-plugins enable {PLUGIN}` (on every node of a cluster)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let s = Shards::new("logstash", 3).unwrap();
        assert_eq!(s.exchange(), "logstash.shards");
        let queues: Vec<_> = s.queues().collect();
        assert_eq!(
            queues,
            [
                (1, "logstash-shard-1".to_owned()),
                (2, "logstash-shard-2".to_owned()),
                (3, "logstash-shard-3".to_owned())
            ]
        );
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn names_must_fit() {
        // "-shard-64" adds 9 bytes: a 246-byte queue name still fits.
        assert!(Shards::new(&"q".repeat(246), 64).is_ok());
        let e = Shards::new(&"q".repeat(247), 64).unwrap_err();
        assert!(e.0.contains("too long for shards"), "{e}");
        assert!(Shards::new(&"q".repeat(247), 9).is_ok());
    }

    #[test]
    fn hashes_the_message_id() {
        let args = Shards::exchange_arguments();
        assert_eq!(
            args.inner().get("hash-property"),
            Some(&AMQPValue::LongString("message_id".into()))
        );
    }

    #[test]
    fn recognises_the_missing_plugin() {
        assert!(is_unknown_exchange_type(
            "COMMAND_INVALID - unknown exchange type 'x-consistent-hash'"
        ));
        assert!(!is_unknown_exchange_type("NOT_FOUND - no exchange 'x'"));
        assert!(
            enable_plugin().contains("rabbitmq-plugins enable rabbitmq_consistent_hash_exchange")
        );
    }
}
