//! `logcollect tail`: a temporary queue bound to the exchange, printed live,
//! filtered, and re-subscribed after a lost connection.

use std::io::{self, Write as _};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use clap::Args;
use futures_util::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::AMQPSoftError;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use logcollect::{BrokerUri, Config, Level};

use crate::broker::{self, MAX_SHORT_STRING};
use crate::output::{self, Item, Layout};
use crate::select::{Glob, Selection};
use crate::style::{ColorChoice, Style};
use crate::{env_value, parse_level, setting, Common, UsageError};

/// Identity keys shown in their own column unless told otherwise.
pub(crate) const DEFAULT_IDENTITY_KEYS: &str = "project,application,subsystem";

pub(crate) const AFTER_HELP: &str = "\
Examples:
  logcollect tail
  logcollect tail --level warning --logger 'my_app::db*'
  logcollect tail --where user=ann --where job=nightly --count 10
  logcollect tail --logger test --count 1 --timeout 30
  logcollect tail --json | jq .message
  LOGCOLLECT_EXCHANGE=logs logcollect tail --durable --bind '*.billing.#'

The queue is exclusive, auto-delete and server-named: it lives as long as
this command, and the broker removes it (and its bindings) when tail exits.
So tail shows the records published after it started (--since-start says so
explicitly; the history is in Elasticsearch). Once it is bound, a line
`listening on exchange X with binding Y` goes to standard error.

Readable lines are aligned columns:
  <@timestamp> <LEVEL> [<identity>] <logger>: <message> key=value...
identity being the values of --identity-keys found in the record, joined
with '/', and key=value the other non-standard fields. A batch (a JSON array,
or JSON lines) prints one line per record. Colour is used when standard
output is a terminal and NO_COLOR is not set (--color to choose).

Filters: --level keeps records at or above it (TRACE < DEBUG < INFO <
WARNING < ERROR < CRITICAL; records with an unknown level are kept).
--logger is a glob on logger names ('*' any text, '?' one character, '::'
and '.' alike); without --bind, the queue is bound to the narrowest routing
keys that cover the globs (rk.app.# for app::db*), and every record is
matched against the glob too. --where KEY=VALUE compares the text of the
record's field (a dotted KEY reaches into objects: log.level). Every filter
given must hold; a body that is not a JSON record is skipped by any filter.

If the connection is lost (broker restart), tail says so on standard error,
reconnects with backoff and subscribes again; records published meanwhile
are not shown. Ctrl-C, --count and a closed pipe (`tail | head -1`) end it
quietly with exit code 0; a broker that cannot be reached at start, 1.
--timeout SECS ends it after that long: with exit code 1 and a message when
--count records have not all been printed by then, else quietly with 0.";

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Binding pattern, AMQP topic syntax (`*` one word, `#` zero or more);
    /// repeatable [default: <routing-key>.#, or what --logger narrows it to]
    #[arg(long, value_name = "PATTERN")]
    bind: Vec<String>,
    /// Only records at this level or above: trace, debug, info, warning,
    /// error, critical
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    level: Option<Level>,
    /// Only records whose logger matches this glob (`app::db*`, `app.*`);
    /// repeatable: any of them
    #[arg(long = "logger", value_name = "GLOB")]
    loggers: Vec<String>,
    /// Only records whose field KEY has the text VALUE; repeatable: all of them
    #[arg(long = "where", value_name = "KEY=VALUE", value_parser = crate::parse_key_value)]
    wheres: Vec<(String, String)>,
    /// Print each record's JSON on one line instead of a readable line
    #[arg(long)]
    json: bool,
    /// Stop after N records (after filtering)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after SECS seconds; a failure (exit code 1) if --count records
    /// have not all been printed by then
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Only records published after tail started. That is always so (the
    /// queue is new); the flag exists to say it explicitly
    #[arg(long)]
    since_start: bool,
    /// Fields shown as the identity column, in order, comma-separated
    /// [env: LOGCOLLECT_IDENTITY_KEYS] [default: project,application,subsystem]
    #[arg(long, value_name = "KEYS")]
    identity_keys: Option<String>,
    /// Colour: auto (when standard output is a terminal and NO_COLOR is not
    /// set), always or never [env: LOGCOLLECT_COLOR] [default: auto]
    #[arg(long, value_name = "WHEN")]
    color: Option<ColorChoice>,
}

/// What to bind, what to keep and how to print it.
#[derive(Debug)]
struct Plan {
    bindings: Vec<String>,
    selection: Selection,
    json: bool,
    count: Option<u64>,
    layout: Layout,
}

pub(crate) fn run(args: TailArgs) -> anyhow::Result<()> {
    let config = args.common.config(|b| b)?;
    let globs: Vec<Glob> = args.loggers.iter().map(|g| Glob::new(g)).collect();
    let bindings = if !args.bind.is_empty() {
        args.bind
    } else if !globs.is_empty() {
        let mut keys: Vec<String> = globs
            .iter()
            .map(|g| g.binding(config.routing_key()))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    } else {
        vec![format!("{}.#", config.routing_key())]
    };
    for binding in &bindings {
        if binding.len() > MAX_SHORT_STRING {
            return Err(UsageError(format!(
                "binding key {binding:?} is {} bytes; AMQP allows {MAX_SHORT_STRING}",
                binding.len()
            ))
            .into());
        }
    }
    let color = setting(args.color, "LOGCOLLECT_COLOR", ColorChoice::Auto, |s| {
        <ColorChoice as clap::ValueEnum>::from_str(s, true)
    })?;
    let identity_keys = args
        .identity_keys
        .or_else(|| env_value("LOGCOLLECT_IDENTITY_KEYS"))
        .unwrap_or_else(|| DEFAULT_IDENTITY_KEYS.to_owned());
    let identity_keys = identity_keys
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    let mut plan = Plan {
        bindings,
        selection: Selection {
            min_level: args.level,
            loggers: globs,
            wheres: args.wheres,
        },
        json: args.json,
        count: args.count,
        layout: Layout::new(Style::new(color.enabled()), identity_keys),
    };
    let mut printed = 0;
    // `None`: the timeout ran out first.
    let ended = crate::runtime()?.block_on(async {
        tokio::select! {
            result = tail(&config, &mut plan, &mut printed) => Some(result),
            // Ctrl-C is how one stops tailing: success, quietly.
            signal = tokio::signal::ctrl_c() => Some(signal.context("cannot listen for Ctrl-C")),
            () = sleep_for(args.timeout) => None,
        }
    });
    match (ended, plan.count) {
        (Some(result), _) => result,
        (None, Some(count)) => Err(anyhow!(
            "--timeout {} s ran out with {printed} of {count} records printed (--count {count})",
            args.timeout.unwrap_or_default()
        )),
        // Nothing was asked but to watch for that long.
        (None, None) => Ok(()),
    }
}

/// Sleeps `secs` seconds, or forever when there is no timeout.
async fn sleep_for(secs: Option<u64>) {
    match secs {
        Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
        None => std::future::pending().await,
    }
}

/// Why listening stopped.
#[derive(Debug)]
enum Stop {
    /// `--count` reached.
    Done,
    /// Standard output failed (a closed pipe, which `main` treats as success).
    Output(anyhow::Error),
    /// Subscribing failed.
    Refused(anyhow::Error),
    /// The subscription worked, then was lost.
    Lost(anyhow::Error),
}

/// Listens until `plan` is done, counting the records printed in `printed`.
async fn tail(config: &Config, plan: &mut Plan, printed: &mut u64) -> anyhow::Result<()> {
    let name = format!("logcollect tail pid {}", std::process::id());
    // The first connection must work: a typo in the URI should fail at once,
    // not retry forever.
    let (mut conn, mut broker) = broker::connect_any(config, &name).await?;
    let mut subscribed = false;
    let mut backoff = Backoff::new(config);
    loop {
        let stop = listen(&conn, &broker, config, plan, printed, &mut subscribed).await;
        broker::close(&conn, "logcollect tail done").await;
        let why = match stop {
            Stop::Done => return Ok(()),
            Stop::Output(e) => return Err(e),
            // Refused before ever listening (no permission, say): retrying
            // would not help.
            Stop::Refused(e) if !subscribed && !is_lost(&e) => return Err(e),
            // Still refused after a reconnection: keep the delay growing.
            Stop::Refused(e) => e,
            Stop::Lost(e) => {
                // It worked for a while: start again from the shortest delay.
                backoff.reset();
                e
            }
        };
        backoff.say(&format!(
            "lost the subscription at {broker} ({}); reconnecting",
            crate::chain_text(&why)
        ));
        (conn, broker) = reconnect(config, &name, &mut backoff).await;
    }
}

/// Delays between attempts, doubling from `reconnect_min` to
/// `reconnect_max`, and notes that are not repeated word for word (a broker
/// restart takes several attempts).
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    delay: Duration,
    last_note: String,
}

impl Backoff {
    fn new(config: &Config) -> Backoff {
        Backoff {
            min: config.reconnect_min(),
            max: config.reconnect_max(),
            delay: config.reconnect_min(),
            last_note: String::new(),
        }
    }

    fn reset(&mut self) {
        self.delay = self.min;
        self.last_note.clear();
    }

    /// Waits for the current delay, then doubles it.
    async fn wait(&mut self) {
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(self.max);
    }

    fn say(&mut self, text: &str) {
        if text != self.last_note {
            note(text);
            self.last_note = text.to_owned();
        }
    }
}

/// Whether a failure to subscribe is the connection going away (worth
/// retrying even before the first subscription) rather than a refusal.
fn is_lost(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<lapin::Error>().is_some_and(|e| {
            e.is_io_error()
                || matches!(
                    e.kind(),
                    lapin::ErrorKind::InvalidConnectionState(_)
                        | lapin::ErrorKind::InvalidChannelState(..)
                        | lapin::ErrorKind::MissingHeartbeatError
                )
        })
    })
}

/// Connects again, forever, waiting as `backoff` says between attempts.
async fn reconnect(config: &Config, name: &str, backoff: &mut Backoff) -> (Connection, BrokerUri) {
    loop {
        backoff.wait().await;
        match broker::connect_any(config, name).await {
            Ok(found) => return found,
            Err(e) => backoff.say(&format!("{}; still trying", crate::chain_text(&e))),
        }
    }
}

async fn listen(
    conn: &Connection,
    broker: &BrokerUri,
    config: &Config,
    plan: &mut Plan,
    printed: &mut u64,
    subscribed: &mut bool,
) -> Stop {
    let mut consumer = match subscribe(conn, config, &plan.bindings).await {
        Ok(consumer) => consumer,
        Err(e) => return Stop::Refused(e),
    };
    let exchange = config.exchange();
    let bindings = plan.bindings.join(", ");
    if std::mem::replace(subscribed, true) {
        note(&format!(
            "reconnected; listening on exchange {exchange} with binding {bindings} ({broker}); \
             records published while disconnected are not shown"
        ));
    } else {
        note(&format!(
            "listening on exchange {exchange} with binding {bindings} ({broker})"
        ));
    }
    while let Some(delivery) = consumer.next().await {
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => return Stop::Lost(anyhow!(e).context("lost the connection to the broker")),
        };
        for item in output::split(&delivery.data) {
            match show(plan, &item) {
                Ok(false) => {}
                Ok(true) => {
                    *printed += 1;
                    if plan.count == Some(*printed) {
                        return Stop::Done;
                    }
                }
                Err(e) => return Stop::Output(e),
            }
        }
    }
    Stop::Lost(anyhow!(
        "the broker ended the subscription (was the queue deleted?)"
    ))
}

/// Prints `item` if the filters keep it; whether it was printed (and so
/// counts towards `--count`).
fn show(plan: &mut Plan, item: &Item) -> anyhow::Result<bool> {
    let wanted = match item {
        Item::Record { record, .. } => {
            !plan.selection.is_active() || plan.selection.matches(record)
        }
        // A filter cannot read anything but a JSON record.
        _ => !plan.selection.is_active(),
    };
    if !wanted {
        return Ok(false);
    }
    let line = match item {
        Item::Record { raw, .. } | Item::NotObject(raw) if plan.json => raw.clone(),
        Item::NotJson(text) if plan.json => {
            // Standard output stays one JSON value per line.
            note(&format!("skipped a message that is not JSON: {text}"));
            return Ok(false);
        }
        _ => plan.layout.line(item),
    };
    print_line(&line)?;
    Ok(true)
}

/// Declares the exchange (if need be), a temporary queue, its bindings, and
/// starts consuming.
async fn subscribe(
    conn: &Connection,
    config: &Config,
    bindings: &[String],
) -> anyhow::Result<lapin::Consumer> {
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
    channel
        .basic_consume(
            queue.name().clone(),
            ShortString::default(),
            consume_options,
            FieldTable::default(),
        )
        .await
        .context("cannot consume from the temporary queue")
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
                 auto_delete={} ({}); listening to it as it is",
                config.durable(),
                config.auto_delete(),
                broker::reason(&e)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(selection: Selection, json: bool) -> Plan {
        Plan {
            bindings: vec![],
            selection,
            json,
            count: None,
            layout: Layout::new(Style::new(false), vec![]),
        }
    }

    #[test]
    fn filters_skip_what_they_cannot_read() {
        let level = Selection {
            min_level: Some(Level::Info),
            ..Selection::default()
        };
        let mut p = plan(level, false);
        // Not printed, so `show` never touches stdout here.
        assert!(!show(&mut p, &Item::NotJson("x".into())).unwrap());
        assert!(!show(&mut p, &Item::NotObject("1".into())).unwrap());
        let items = output::split(br#"{"levelname":"DEBUG"}"#);
        assert!(!show(&mut p, &items[0]).unwrap());
    }
}
