//! `logcollect setup`: the exchange, Logstash's durable queue and its
//! binding, declared idempotently; then the matching Logstash pipeline.

use std::io::{self, Write as _};

use anyhow::{anyhow, Context as _};
use clap::{Args, ValueEnum as _};
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::AMQPSoftError;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use logcollect::amqp::is_soft_error;
use logcollect::{BatchFormat, Config};

use crate::broker::{self, Inequivalent, MAX_SHORT_STRING};
use crate::pipeline::{
    pipelines_yml, ArgValue, Codec, Pipeline, Profile, QueueSpec, Source, SHARD_WEIGHT,
};
use crate::shards::{self, Shards};
use crate::{env_value, setting, Common, UsageError};

/// The queue Logstash consumes, unless told otherwise.
pub(crate) const DEFAULT_QUEUE: &str = "logstash";
/// Where the pipeline sends the records, unless told otherwise.
pub(crate) const DEFAULT_ELASTICSEARCH: &str = "http://localhost:9200";

pub(crate) const AFTER_HELP: &str = "\
Examples:
  logcollect setup > /etc/logstash/conf.d/logcollect.conf
  LOGCOLLECT_DURABLE=true logcollect setup --max-length 1000000
  logcollect setup --quorum --queue logs --codec json_lines
  logcollect setup --print-only --profile ecs
  logcollect setup --shards 4 --quorum > /etc/logstash/pipelines.yml

Declares the topic exchange (with the durable and auto-delete settings the
applications use), a durable queue (--queue) with the optional arguments
x-max-length (--max-length) and x-queue-type=quorum (--quorum), and binds it
with <routing-key>.#. What exists already with the same settings is left as
it is, so setup can run any number of times. What exists with other
settings is reported (what differs, and how to fix it) and left alone:
setup never deletes anything.

Then prints, on standard output, the Logstash pipeline for that queue: a
rabbitmq input (the password as ${RABBITMQ_PASSWORD}, which Logstash reads
from its environment or keystore) and an elasticsearch output that uses the
record id as document id, so a record delivered twice is stored once
(--profile ecs: the id is event.id). What setup did goes to standard error.
--print-only prints the pipeline without connecting.

--shards N (2 to 64) spreads the records over N queues instead of one: a
durable consistent-hash exchange <queue>.shards (plugin
rabbitmq_consistent_hash_exchange, enabled on every node; it hashes each
message's id, so the shards get even shares whatever logs them), the
queues <queue>-shard-1 to -N bound to it with equal weights, and its
binding to the exchange with <routing-key>.#. It then prints a
pipelines.yml: one pipeline per shard, each with a persistent queue, to
run in one Logstash or spread over several. --shards 1 keeps the one
queue and prints it as a pipelines.yml with a persistent queue. Queues of
an earlier layout that would still take records are named, not deleted.

Exits 0 when everything is in place, 1 when the broker cannot be reached or
an existing exchange or queue is incompatible, 2 on a usage error.";

#[derive(Debug, Args)]
pub(crate) struct SetupArgs {
    #[command(flatten)]
    common: Common,
    /// The durable queue Logstash consumes
    /// [env: LOGCOLLECT_QUEUE] [default: logstash]
    #[arg(long, value_name = "NAME")]
    queue: Option<String>,
    /// Cap the queue at N records (`x-max-length`); RabbitMQ then drops the
    /// oldest while Logstash is away
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64))]
    max_length: Option<u64>,
    /// Make it a quorum queue (`x-queue-type=quorum`), replicated in a cluster
    #[arg(long)]
    quorum: bool,
    /// Logstash codec: json, or json_lines for batches in the json_lines
    /// format [default: json_lines when LOGCOLLECT_BATCH_FORMAT=json_lines, else json]
    #[arg(long, value_name = "CODEC")]
    codec: Option<Codec>,
    /// The record profile the applications send: logcollect, or ecs (the
    /// record id is then event.id) [env: LOGCOLLECT_PROFILE] [default: logcollect]
    #[arg(long, value_name = "PROFILE")]
    profile: Option<Profile>,
    /// Elasticsearch URL(s) of the pipeline's output, comma-separated
    /// [env: LOGCOLLECT_ELASTICSEARCH] [default: http://localhost:9200]
    #[arg(long, value_name = "URL")]
    elasticsearch: Option<String>,
    /// Spread the records over N queues, one Logstash pipeline each,
    /// through a consistent-hash exchange (plugin
    /// rabbitmq_consistent_hash_exchange) hashing the message id; print a
    /// pipelines.yml with a persistent queue per pipeline
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=i64::from(shards::MAX_SHARDS)))]
    shards: Option<u16>,
    /// Only print the pipeline; do not connect to the broker
    #[arg(long)]
    print_only: bool,
}

pub(crate) fn run(args: SetupArgs) -> anyhow::Result<()> {
    let config = args.common.config(|b| b)?;
    let queue = QueueSpec {
        name: queue_name(args.queue)?,
        max_length: args.max_length,
        quorum: args.quorum,
    };
    let codec = match args.codec {
        Some(codec) => codec,
        None => match config.batch_format() {
            BatchFormat::JsonLines => Codec::JsonLines,
            _ => Codec::Json,
        },
    };
    let profile = setting(
        args.profile,
        "LOGCOLLECT_PROFILE",
        Profile::Logcollect,
        |s| Profile::from_str(s, true),
    )?;
    let elasticsearch: Vec<String> = args
        .elasticsearch
        .or_else(|| env_value("LOGCOLLECT_ELASTICSEARCH"))
        .unwrap_or_else(|| DEFAULT_ELASTICSEARCH.to_owned())
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if elasticsearch.is_empty() {
        return Err(UsageError("--elasticsearch has no URL".to_owned()).into());
    }
    let shards = args
        .shards
        .map(|n| Shards::new(&queue.name, n))
        .transpose()?;
    if !args.print_only {
        crate::runtime()?.block_on(declare(&config, &queue, shards.as_ref()))?;
    }
    let pipeline = |queue, source| Pipeline {
        brokers: config.brokers(),
        exchange: config.exchange(),
        exchange_durable: config.durable(),
        exchange_auto_delete: config.auto_delete(),
        routing_key: config.routing_key(),
        queue,
        source,
        codec,
        profile,
        elasticsearch: &elasticsearch,
    };
    let text = match &shards {
        None => pipeline(&queue, Source::Topic).render(),
        Some(shards) if shards.count() == 1 => pipelines_yml(&[pipeline(&queue, Source::Topic)]),
        Some(shards) => {
            let exchange = shards.exchange();
            let specs: Vec<(u16, QueueSpec)> = shards
                .queues()
                .map(|(index, name)| {
                    let spec = QueueSpec {
                        name,
                        ..queue.clone()
                    };
                    (index, spec)
                })
                .collect();
            let pipelines: Vec<Pipeline<'_>> = specs
                .iter()
                .map(|(index, spec)| {
                    let source = Source::Shard {
                        exchange: &exchange,
                        index: *index,
                        count: shards.count(),
                    };
                    pipeline(spec, source)
                })
                .collect();
            pipelines_yml(&pipelines)
        }
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

/// `--queue`, else `LOGCOLLECT_QUEUE`, else `logstash`; a valid AMQP name.
pub(crate) fn queue_name(flag: Option<String>) -> Result<String, UsageError> {
    let name = flag
        .or_else(|| env_value("LOGCOLLECT_QUEUE"))
        .unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
    if name.is_empty() || name.len() > MAX_SHORT_STRING {
        return Err(UsageError(format!(
            "queue name {name:?} must be 1 to {MAX_SHORT_STRING} bytes"
        )));
    }
    if name.starts_with("amq.") {
        return Err(UsageError(format!(
            "queue name {name:?}: names starting with amq. are reserved by RabbitMQ"
        )));
    }
    Ok(name)
}

async fn declare(
    config: &Config,
    queue: &QueueSpec,
    shards: Option<&Shards>,
) -> anyhow::Result<()> {
    let name = format!("logcollect setup pid {}", std::process::id());
    let (conn, _broker) = broker::connect_any(config, &name).await?;
    let result = declare_on(&conn, config, queue, shards).await;
    broker::close(&conn, "logcollect setup done").await;
    result
}

async fn declare_on(
    conn: &Connection,
    config: &Config,
    queue: &QueueSpec,
    shards: Option<&Shards>,
) -> anyhow::Result<()> {
    let channel = declare_exchange(conn, config).await?;
    let key = format!("{}.#", config.routing_key());
    match shards.filter(|s| s.count() > 1) {
        None => {
            declare_queue(conn, &channel, queue).await?;
            bind_queue(&channel, &queue.name, config.exchange(), &key).await
        }
        Some(shards) => declare_shards(conn, &channel, config, queue, shards).await,
    }
}

/// Our topic exchange, as the applications declare it; the channel it was
/// declared on.
async fn declare_exchange(conn: &Connection, config: &Config) -> anyhow::Result<Channel> {
    let exchange = config.exchange();
    let flags = format!(
        "topic, durable={}, auto_delete={}",
        config.durable(),
        config.auto_delete()
    );
    // Passive first, only to say "created" or "already there".
    let existed = exchange_exists(conn, exchange).await?;
    let channel = channel(conn).await?;
    let options = ExchangeDeclareOptions {
        durable: config.durable(),
        auto_delete: config.auto_delete(),
        ..ExchangeDeclareOptions::default()
    };
    if let Err(e) = channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await
    {
        return Err(if is_soft_error(&e, AMQPSoftError::PRECONDITIONFAILED) {
            exchange_conflict(config, &e)
        } else {
            anyhow!(e).context(format!("cannot declare exchange {exchange:?}"))
        });
    }
    note(&format!(
        "exchange {exchange:?} ({flags}): {}",
        if existed { "already there" } else { "declared" }
    ));
    if !config.durable() {
        note(&format!(
            "exchange {exchange:?} is not durable: a broker restart removes it and the queue's \
             binding; set LOGCOLLECT_DURABLE=true for the applications and for setup"
        ));
    }
    Ok(channel)
}

/// A durable queue with `queue`'s arguments.
async fn declare_queue(
    conn: &Connection,
    channel: &Channel,
    queue: &QueueSpec,
) -> anyhow::Result<()> {
    // Passive first (on a channel of its own), to say "created" or "already
    // there", and how many messages a conflicting queue holds.
    let existing = queue_state(conn, &queue.name).await?;
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.name.as_str().into(), options, arguments(queue))
        .await;
    let declared = match declared {
        Ok(q) => q,
        Err(e) => {
            return Err(if is_soft_error(&e, AMQPSoftError::PRECONDITIONFAILED) {
                queue_conflict(queue, existing.map(|(messages, _)| messages), &e)
            } else {
                anyhow!(e).context(format!("cannot declare queue {:?}", queue.name))
            });
        }
    };
    let mut described = vec!["durable".to_owned()];
    for (key, value) in queue.arguments() {
        described.push(match value {
            ArgValue::Int(n) => format!("{key}={n}"),
            ArgValue::Text(t) => format!("{key}={t}"),
        });
    }
    note(&format!(
        "queue {:?} ({}): {}; {} ready, {}",
        queue.name,
        described.join(", "),
        if existing.is_some() {
            "already there"
        } else {
            "declared"
        },
        crate::count(declared.message_count(), "message"),
        crate::count(declared.consumer_count(), "consumer")
    ));
    Ok(())
}

/// Binds queue `queue` to `exchange` with `key` (idempotent).
async fn bind_queue(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> anyhow::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| {
            format!("cannot bind queue {queue:?} to exchange {exchange:?} with {key}")
        })?;
    note(&format!(
        "queue {queue:?} bound to exchange {exchange:?} with key {key}"
    ));
    Ok(())
}

/// The consistent-hash exchange, the shard queues bound to it, then (so no
/// record arrives before every shard is bound) its binding to our exchange;
/// and a word on queues of an earlier layout that still take records.
async fn declare_shards(
    conn: &Connection,
    channel: &Channel,
    config: &Config,
    queue: &QueueSpec,
    shards: &Shards,
) -> anyhow::Result<()> {
    let hash = shards.exchange();
    let existed = exchange_exists(conn, &hash).await?;
    if let Err(e) = shards.declare_exchange(channel).await {
        let said = broker::reason(&e);
        if shards::is_unknown_exchange_type(&said) {
            return Err(anyhow!(
                "the broker has no {} exchange type ({said}); setup declared exchange {:?} and \
                 nothing else. To fix: {}, then run setup again",
                shards::EXCHANGE_TYPE,
                config.exchange(),
                shards::enable_plugin()
            ));
        }
        return Err(match Inequivalent::parse(&said) {
            Some(diff) => anyhow!(
                "exchange {hash:?} already exists with {} {} where setup declares {}; setup \
                 changed nothing there. To fix: delete it (`rabbitmqadmin delete exchange \
                 name={hash}`) and run setup again, or pick another --queue",
                diff.arg,
                diff.current,
                diff.wanted
            ),
            None => anyhow!(e).context(format!("cannot declare exchange {hash:?}")),
        });
    }
    note(&format!(
        "exchange {hash:?} ({}, durable, hash-property={}): {}",
        shards::EXCHANGE_TYPE,
        shards::HASH_PROPERTY,
        if existed { "already there" } else { "declared" }
    ));
    for (_, name) in shards.queues() {
        let shard = QueueSpec {
            name,
            ..queue.clone()
        };
        declare_queue(conn, channel, &shard).await?;
        bind_queue(channel, &shard.name, &hash, SHARD_WEIGHT).await?;
    }
    let key = format!("{}.#", config.routing_key());
    let exchange = config.exchange();
    channel
        .exchange_bind(
            hash.as_str().into(),
            exchange.into(),
            key.as_str().into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| {
            format!("cannot bind exchange {hash:?} to exchange {exchange:?} with {key}")
        })?;
    note(&format!(
        "exchange {hash:?} bound to exchange {exchange:?} with key {key}: {} shards",
        shards.count()
    ));
    leftovers(conn, config, queue, shards).await
}

/// Queues of an earlier layout that still take records nobody may read:
/// the unsharded queue (if still bound, it gets every record too), and
/// shards beyond `shards` (bound to the hash exchange, they get their share).
/// Reported, never deleted.
async fn leftovers(
    conn: &Connection,
    config: &Config,
    queue: &QueueSpec,
    shards: &Shards,
) -> anyhow::Result<()> {
    if let Some((messages, consumers)) = queue_state(conn, &queue.name).await? {
        note(&format!(
            "queue {:?} of an unsharded setup is still there ({}, {}): while it is bound to \
             exchange {:?} it gets every record besides the shards; once Logstash no longer \
             reads it, delete it (`rabbitmqctl delete_queue {}`)",
            queue.name,
            crate::count(messages, "message"),
            crate::count(consumers, "consumer"),
            config.exchange(),
            queue.name
        ));
    }
    for extra in shards.count() + 1..=shards::MAX_SHARDS {
        let name = shards.queue(extra);
        if name.len() > MAX_SHORT_STRING {
            break;
        }
        let Some((messages, consumers)) = queue_state(conn, &name).await? else {
            break;
        };
        note(&format!(
            "queue {name:?} of a setup with more shards is still there ({}, {}): while it is \
             bound to exchange {:?} it gets its share of the records; once Logstash no longer \
             reads it, delete it (`rabbitmqctl delete_queue {name}`)",
            crate::count(messages, "message"),
            crate::count(consumers, "consumer"),
            shards.exchange()
        ));
    }
    Ok(())
}

async fn channel(conn: &Connection) -> anyhow::Result<Channel> {
    conn.create_channel().await.context("cannot open a channel")
}

/// Whether the exchange exists (a passive declaration, on a channel of its
/// own, since a refusal closes it).
async fn exchange_exists(conn: &Connection, exchange: &str) -> anyhow::Result<bool> {
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    match channel(conn)
        .await?
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            passive,
            FieldTable::default(),
        )
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if is_soft_error(&e, AMQPSoftError::NOTFOUND) => Ok(false),
        Err(e) => Err(anyhow!(e).context(format!("cannot look up exchange {exchange:?}"))),
    }
}

/// `(messages, consumers)` of the queue if it exists.
async fn queue_state(conn: &Connection, queue: &str) -> anyhow::Result<Option<(u32, u32)>> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel(conn)
        .await?
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(q) => Ok(Some((q.message_count(), q.consumer_count()))),
        Err(e) if is_soft_error(&e, AMQPSoftError::NOTFOUND) => Ok(None),
        Err(e) => Err(anyhow!(e).context(format!("cannot look up queue {queue:?}"))),
    }
}

/// The queue's arguments as AMQP values.
pub(crate) fn arguments(queue: &QueueSpec) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in queue.arguments() {
        let value = match value {
            // RabbitMQ compares integer arguments by value, whatever the width.
            ArgValue::Int(n) => AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
            ArgValue::Text(t) => AMQPValue::LongString(LongString::from(t)),
        };
        table.insert(ShortString::from(key), value);
    }
    table
}

fn exchange_conflict(config: &Config, e: &lapin::Error) -> anyhow::Error {
    let exchange = config.exchange();
    let said = broker::reason(e);
    let Some(diff) = Inequivalent::parse(&said) else {
        return anyhow!(
            "exchange {exchange:?} already exists with other settings than topic, durable={}, \
             auto_delete={} ({said}); setup changed nothing",
            config.durable(),
            config.auto_delete()
        );
    };
    let fix = match diff.arg.as_str() {
        "durable" => format!(
            "set LOGCOLLECT_DURABLE={} (or --durable={}) to match it, for the applications too",
            diff.current, diff.current
        ),
        "auto_delete" => format!(
            "set LOGCOLLECT_AUTO_DELETE={} (or --auto-delete={}) to match it",
            diff.current, diff.current
        ),
        _ => format!(
            "logcollect needs a topic exchange: delete exchange {exchange:?} (management UI or \
             `rabbitmqadmin delete exchange name={exchange}`) and run setup again, or use \
             another --exchange"
        ),
    };
    anyhow!(
        "exchange {exchange:?} already exists with {} {} where setup declares {}; setup \
         changed nothing. To fix: {fix}",
        diff.arg,
        diff.current,
        diff.wanted
    )
}

fn queue_conflict(queue: &QueueSpec, messages: Option<u32>, e: &lapin::Error) -> anyhow::Error {
    let name = &queue.name;
    let said = broker::reason(e);
    let held = messages.map_or_else(String::new, |n| {
        format!(" (it holds {})", crate::count(n, "message"))
    });
    let delete = format!(
        "delete queue {name:?}{held} with the management UI or `rabbitmqctl delete_queue {name}` \
         and run setup again, or pick another --queue"
    );
    let Some(diff) = Inequivalent::parse(&said) else {
        return anyhow!(
            "queue {name:?} already exists with other settings ({said}); setup changed and \
             deleted nothing. To fix: {delete}"
        );
    };
    let flag = match diff.arg.as_str() {
        "x-max-length" if diff.current != "none" => {
            format!("pass --max-length {} to match it, or ", diff.current)
        }
        "x-max-length" => "leave out --max-length to match it, or ".to_owned(),
        "x-queue-type" if diff.current == "quorum" => "pass --quorum to match it, or ".to_owned(),
        "x-queue-type" => "leave out --quorum to match it, or ".to_owned(),
        _ => String::new(),
    };
    anyhow!(
        "queue {name:?} already exists with {} {} where setup declares {}; setup changed and \
         deleted nothing. To fix: {flag}{delete}",
        diff.arg,
        diff.current,
        diff.wanted
    )
}

/// What setup did, on standard error (standard output is the pipeline).
fn note(text: &str) {
    let _ = writeln!(io::stderr(), "logcollect setup: {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        assert_eq!(queue_name(Some("q".into())).unwrap(), "q");
        assert!(queue_name(Some(String::new())).is_err());
        assert!(queue_name(Some("x".repeat(256))).is_err());
        assert!(queue_name(Some("amq.q".into())).is_err());
    }

    #[test]
    fn queue_arguments() {
        let q = QueueSpec {
            name: "q".into(),
            max_length: Some(10),
            quorum: true,
        };
        let table = arguments(&q);
        assert_eq!(
            table.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(
            table.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        let plain = QueueSpec {
            quorum: false,
            max_length: None,
            ..q
        };
        assert!(arguments(&plain).inner().is_empty());
    }
}
