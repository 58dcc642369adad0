//! `logcollect tail`: a temporary queue bound to the exchange, printed live.

use std::io::{self, Write as _};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use futures_util::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::AMQPSoftError;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use logcollect::{BrokerUri, Config};

use crate::output::{self, Rendered};
use crate::{Common, UsageError};

/// How long closing the connection may take once we are done: the broker
/// drops the exclusive queue with the connection anyway, so don't linger.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// AMQP reply code of a normal close.
const REPLY_SUCCESS: u16 = 200;
/// AMQP's limit on a short string, such as a binding key.
const MAX_SHORT_STRING: usize = 255;

pub(crate) const AFTER_HELP: &str = "\
Examples:
  logcollect tail
  logcollect tail --bind 'logstash.my_app.#' --count 10
  logcollect tail --json | jq .message
  LOGCOLLECT_EXCHANGE=logs logcollect tail --durable --bind '*.billing.#'

The queue is exclusive, auto-delete and server-named: it lives as long as
this command, and the broker removes it (and its bindings) when tail exits.
Once it is bound, a line `listening on exchange X with binding Y` goes to
standard error. Readable lines look like
  <@timestamp> <LEVEL> <logger>: <message> key=value...
with the non-standard fields as key=value. Ctrl-C and a closed pipe
(`tail | head -1`) end it quietly with exit code 0.";

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    common: Common,
    /// Binding pattern, AMQP topic syntax (`*` one word, `#` zero or more);
    /// repeatable [default: <routing-key>.#]
    #[arg(long, value_name = "PATTERN")]
    bind: Vec<String>,
    /// Print each record's JSON body on one line instead of a readable line
    #[arg(long)]
    json: bool,
    /// Stop after N records
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

pub(crate) fn run(args: TailArgs) -> anyhow::Result<()> {
    let config = args.common.config(|b| b)?;
    let bindings = if args.bind.is_empty() {
        vec![format!("{}.#", config.routing_key())]
    } else {
        args.bind
    };
    for binding in &bindings {
        if binding.len() > MAX_SHORT_STRING {
            return Err(UsageError(format!(
                "--bind pattern is {} bytes; AMQP allows {MAX_SHORT_STRING}",
                binding.len()
            ))
            .into());
        }
    }
    let view = View {
        json: args.json,
        count: args.count,
    };
    crate::runtime()?.block_on(async {
        tokio::select! {
            result = tail(&config, &bindings, view) => result,
            // Ctrl-C is how one stops tailing: success, quietly.
            signal = tokio::signal::ctrl_c() => signal.context("cannot listen for Ctrl-C"),
        }
    })
}

/// How records are shown.
#[derive(Debug, Clone, Copy)]
struct View {
    json: bool,
    count: Option<u64>,
}

async fn tail(config: &Config, bindings: &[String], view: View) -> anyhow::Result<()> {
    let name = format!("logcollect tail pid {}", std::process::id());
    let (conn, broker) = connect_any(config, &name).await?;
    let result = listen(&conn, &broker, config, bindings, view).await;
    let _ = tokio::time::timeout(
        CLOSE_TIMEOUT,
        conn.close(REPLY_SUCCESS, "logcollect tail done".into()),
    )
    .await;
    result
}

async fn listen(
    conn: &Connection,
    broker: &BrokerUri,
    config: &Config,
    bindings: &[String],
    view: View,
) -> anyhow::Result<()> {
    let exchange = config.exchange();
    let channel = declare_exchange(conn, config).await?;
    let queue_options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare(ShortString::default(), queue_options, FieldTable::default())
        .await
        .context("cannot declare the temporary queue")?;
    for binding in bindings {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                binding.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| {
                format!("cannot bind a queue to exchange {exchange} with {binding}")
            })?;
    }
    let consume_options = BasicConsumeOptions {
        // A private, temporary queue: nobody else would get a requeued record.
        no_ack: true,
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            ShortString::default(),
            consume_options,
            FieldTable::default(),
        )
        .await
        .context("cannot consume from the temporary queue")?;
    note(&format!(
        "listening on exchange {exchange} with binding {} ({broker})",
        bindings.join(", ")
    ));

    let mut printed = 0;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.context("lost the connection to the broker")?;
        for item in output::render(&delivery.data, view.json) {
            match item {
                Rendered::Record(line) => {
                    print_line(&line)?;
                    printed += 1;
                    if view.count == Some(printed) {
                        return Ok(());
                    }
                }
                Rendered::Note(text) => note(&text),
            }
        }
    }
    bail!("the broker ended the subscription (was the queue deleted?)")
}

/// Declares the exchange as the shipper does, so tail may start first. An
/// exchange that exists with other flags is used as it is (passively).
async fn declare_exchange(conn: &Connection, config: &Config) -> anyhow::Result<Channel> {
    let exchange = config.exchange();
    let channel = conn
        .create_channel()
        .await
        .context("cannot open a channel")?;
    let options = ExchangeDeclareOptions {
        durable: config.durable(),
        auto_delete: config.auto_delete(),
        ..ExchangeDeclareOptions::default()
    };
    match channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await
    {
        Ok(()) => Ok(channel),
        Err(e) if logcollect::amqp::is_soft_error(&e, AMQPSoftError::PRECONDITIONFAILED) => {
            note(&format!(
                "exchange {exchange} already exists with other settings than topic, durable={}, \
                 auto_delete={} ({e}); listening to it as it is",
                config.durable(),
                config.auto_delete()
            ));
            // The failed declaration closed that channel.
            let channel = conn
                .create_channel()
                .await
                .context("cannot open a channel")?;
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    exchange.into(),
                    ExchangeKind::Topic,
                    passive,
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("cannot use exchange {exchange}"))?;
            Ok(channel)
        }
        Err(e) => Err(anyhow!(e).context(format!("cannot declare exchange {exchange}"))),
    }
}

/// Writes one line to standard output and flushes it, so a pipe sees each
/// record at once. A closed pipe comes back as an error that `main` treats
/// as success.
fn print_line(line: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

/// A message for the person running tail, on standard error.
fn note(text: &str) {
    let _ = writeln!(io::stderr(), "logcollect tail: {text}");
}

/// Connects to the first broker of the failover list that answers, in order.
async fn connect_any(
    config: &Config,
    name: &str,
) -> anyhow::Result<(lapin::Connection, BrokerUri)> {
    let mut failures = Vec::new();
    for broker in config.brokers().iter() {
        match logcollect::amqp::connect(config, broker, name).await {
            Ok(conn) => return Ok((conn, broker.clone())),
            Err(why) => failures.push(format!("{broker}: {why}")),
        }
    }
    anyhow::bail!("cannot connect: {}", failures.join("; "))
}
