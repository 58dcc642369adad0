//! `logcollect tail`: a temporary queue bound to the exchange, printed live,
//! filtered, and re-subscribed after a lost connection.

use std::io::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use clap::Args;
use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::AMQPSoftError;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection};
use logcollect::amqp::is_soft_error;
use logcollect::{BrokerUri, Config, Level};

use crate::broker::{self, MAX_SHORT_STRING};
use crate::output::{self, Item, Layout};
use crate::select::{Glob, Selection};
use crate::style::{ColorChoice, Style};
use crate::{env_value, parse_level, setting, Common, UsageError};

/// Identity keys shown in their own column unless told otherwise.
pub(crate) const DEFAULT_IDENTITY_KEYS: &str = "project,application,subsystem";
/// Default `--max-length`: records the temporary queue keeps for a reader
/// that is behind (`x-max-length`). At a few hundred bytes a record, a few
/// MiB of the broker's memory; a screenful is all a person reads anyway.
pub(crate) const DEFAULT_MAX_LENGTH: u32 = 10_000;
/// Default `--max-bytes` (`x-max-length-bytes`): the same bound in bytes,
/// for large records (up to `max_record_bytes`, 1 MiB by default, each).
pub(crate) const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Messages the broker hands tail before it waits for acknowledgements:
/// all that leaves the bounded queue while the terminal is slow. Enough
/// to keep a fast terminal busy between round trips.
const PREFETCH: u16 = 100;
/// Lines waiting in tail's memory for standard output.
const PRINT_BUFFER: usize = 256;
/// How often tail looks again for an exchange that does not exist yet.
const EXCHANGE_POLL: Duration = Duration::from_secs(1);
/// Bounds of the queue that receives what the temporary queue drops, only
/// to count it (its consumer never waits for the terminal). They matter
/// only when tail itself stops (suspended): then at most this much waits.
/// How often tail says the records the broker dropped while no record
/// arrives to say them in line with.
const SKIPPED_TICK: Duration = Duration::from_millis(250);
const SKIPPED_MAX_LENGTH: u32 = 100_000;
const SKIPPED_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// How long tail, once done, waits for the lines it still holds to be
/// written (a terminal that is paused would keep it forever).
const PRINT_DRAIN: Duration = Duration::from_secs(2);

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

Tail is safe on a production broker: it never creates the exchange (when it
does not exist yet, tail says so and waits for it), and its queue is bounded.
When the terminal (or `less`, or a paused pipe) reads slower than records
arrive, the broker keeps at most --max-length records (--max-bytes bytes) for
tail and drops the oldest; tail counts them and says `skipped N records`
on standard error where the gap is.

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
    /// Records the broker keeps for tail while it is behind; older ones are
    /// dropped (and counted) [default: 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_length: Option<u32>,
    /// The same bound in bytes of message bodies [default: 67108864]
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64))]
    max_bytes: Option<u64>,
}

/// What to bind, what to keep and how to print it.
#[derive(Debug)]
struct Plan {
    bindings: Vec<String>,
    selection: Selection,
    json: bool,
    count: Option<u64>,
    layout: Layout,
    /// `x-max-length` and `x-max-length-bytes` of the temporary queue.
    max_length: u32,
    max_bytes: u64,
    /// Records the broker dropped for us, counted as they arrive.
    skipped: Arc<AtomicU64>,
    /// How many of them were reported.
    skipped_said: u64,
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
        max_length: args.max_length.unwrap_or(DEFAULT_MAX_LENGTH),
        max_bytes: args.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
        skipped: Arc::new(AtomicU64::new(0)),
        skipped_said: 0,
    };
    let mut printed = 0;
    let mut printer = Printer::start()?;
    // `None`: the timeout ran out first; `Some(None)`: Ctrl-C.
    let ended = crate::runtime()?.block_on(async {
        tokio::select! {
            result = tail(&config, &mut plan, &printer, &mut printed) => Some(Some(result)),
            // Ctrl-C is how one stops tailing: success, quietly.
            signal = tokio::signal::ctrl_c() => match signal {
                Ok(()) => Some(None),
                Err(e) => Some(Some(Err(anyhow!(e).context("cannot listen for Ctrl-C")))),
            },
            () = sleep_for(args.timeout) => None,
        }
    });
    // What was taken from the broker is printed before tail ends (within a
    // bound: Ctrl-C on a paused terminal must not hang).
    printer.finish(PRINT_DRAIN)?;
    let ended = ended.map(|e| e.unwrap_or(Ok(())));
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
async fn tail(
    config: &Config,
    plan: &mut Plan,
    printer: &Printer,
    printed: &mut u64,
) -> anyhow::Result<()> {
    let name = format!("logcollect tail pid {}", std::process::id());
    // The first connection must work: a typo in the URI should fail at once,
    // not retry forever.
    let (mut conn, mut broker) = broker::connect_any(config, &name).await?;
    let mut subscribed = false;
    let mut backoff = Backoff::new(config);
    loop {
        let stop = listen(
            &conn,
            &broker,
            config,
            plan,
            printer,
            printed,
            &mut subscribed,
        )
        .await;
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
    printer: &Printer,
    printed: &mut u64,
    subscribed: &mut bool,
) -> Stop {
    let subscription = match subscribe(conn, config, plan).await {
        Ok(subscription) => subscription,
        Err(e) => return Stop::Refused(e),
    };
    let Subscription {
        mut consumer,
        queue,
        counter,
    } = subscription;
    // The counter ends with this subscription (its channel goes with it).
    let _counter = AbortOnDrop(counter);
    let exchange = config.exchange();
    let bindings = plan.bindings.join(", ");
    let bound = format!(
        "queue {queue} keeps at most {} records ({} bytes) while tail is behind",
        plan.max_length, plan.max_bytes
    );
    if std::mem::replace(subscribed, true) {
        note(&format!(
            "reconnected; listening on exchange {exchange} with binding {bindings} ({broker}); \
             records published while disconnected are not shown; {bound}"
        ));
    } else {
        note(&format!(
            "listening on exchange {exchange} with binding {bindings} ({broker}); {bound}"
        ));
    }
    // Records the broker drops are counted on their own channel, and may be
    // counted after the last record tail prints: while no record comes, the
    // count is said on this tick, so no skip goes unsaid at a quiet moment.
    let mut quiet = tokio::time::interval(SKIPPED_TICK);
    quiet.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = tokio::select! {
            next = consumer.next() => next,
            // Standard output failed (a closed pipe): nothing more to do,
            // even if no record comes to find out.
            () = printer.closed() => return Stop::Output(printer.failure()),
            _ = quiet.tick() => {
                if let Err(e) = say_skipped(plan, printer).await {
                    return Stop::Output(e);
                }
                continue;
            }
        };
        let Some(delivery) = next else {
            break;
        };
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => return Stop::Lost(anyhow!(e).context("lost the connection to the broker")),
        };
        for item in output::split(&delivery.data) {
            let Some(line) = render(plan, &item) else {
                continue;
            };
            if let Err(e) = say_skipped(plan, printer).await {
                return Stop::Output(e);
            }
            if let Err(e) = printer.print(Out::Line(line)).await {
                return Stop::Output(e);
            }
            *printed += 1;
            if plan.count == Some(*printed) {
                let _ = say_skipped(plan, printer).await;
                return Stop::Done;
            }
        }
        // Only now may the broker send another: the record is ours (in the
        // print buffer), and what tail has not taken stays in the bounded
        // queue, never in the broker's memory on its way to us.
        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
            return Stop::Lost(anyhow!(e).context("lost the connection to the broker"));
        }
    }
    Stop::Lost(anyhow!(
        "the broker ended the subscription (was the queue deleted?)"
    ))
}

/// Tells, in line with the records, how many the broker dropped since the
/// last time.
async fn say_skipped(plan: &mut Plan, printer: &Printer) -> anyhow::Result<()> {
    let now = plan.skipped.load(Ordering::Relaxed);
    if now <= plan.skipped_said {
        return Ok(());
    }
    let n = now - plan.skipped_said;
    plan.skipped_said = now;
    printer
        .print(Out::Note(format!(
            "skipped {} here: the reader was slower than they arrived, and the queue keeps at \
             most {} records ({} bytes); --max-length raises that",
            crate::count(u32::try_from(n).unwrap_or(u32::MAX), "record"),
            plan.max_length,
            plan.max_bytes
        )))
        .await
}

/// The line to print for `item`, if the filters keep it (and so it counts
/// towards `--count`).
fn render(plan: &mut Plan, item: &Item) -> Option<String> {
    let wanted = match item {
        Item::Record { record, .. } => {
            !plan.selection.is_active() || plan.selection.matches(record)
        }
        // A filter cannot read anything but a JSON record.
        _ => !plan.selection.is_active(),
    };
    if !wanted {
        return None;
    }
    match item {
        Item::Record { raw, .. } | Item::NotObject(raw) if plan.json => Some(raw.clone()),
        Item::NotJson(text) if plan.json => {
            // Standard output stays one JSON value per line.
            note(&format!("skipped a message that is not JSON: {text}"));
            None
        }
        _ => Some(plan.layout.line(item)),
    }
}

/// A bound, consuming subscription.
struct Subscription {
    consumer: lapin::Consumer,
    /// The temporary queue's name (server-made).
    queue: String,
    /// The task counting what the broker drops from it.
    counter: tokio::task::JoinHandle<()>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for the exchange (declared passively: tail never creates it),
/// declares the bounded temporary queue and the one that counts what it
/// drops, binds, and starts consuming both.
async fn subscribe(
    conn: &Connection,
    config: &Config,
    plan: &Plan,
) -> anyhow::Result<Subscription> {
    let exchange = config.exchange();
    let channel = wait_for_exchange(conn, exchange).await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .context("cannot set the prefetch count")?;
    let temporary = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    // What the bounded queue drops is dead-lettered here, only to be
    // counted: drop-head dead-letters the records it drops.
    let skipped = channel
        .queue_declare(
            ShortString::default(),
            temporary,
            bounded(SKIPPED_MAX_LENGTH, SKIPPED_MAX_BYTES),
        )
        .await
        .context("cannot declare the temporary queue")?;
    let mut arguments = bounded(plan.max_length, plan.max_bytes);
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(skipped.name().as_str())),
    );
    let queue = channel
        .queue_declare(ShortString::default(), temporary, arguments)
        .await
        .context("cannot declare the temporary queue")?;
    for binding in &plan.bindings {
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
        // Acknowledged once printed (or buffered for printing): with the
        // prefetch bound, that is what keeps the backlog in the bounded queue.
        no_ack: false,
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    let mut dropped = channel
        .basic_consume(
            skipped.name().clone(),
            ShortString::default(),
            consume_options,
            FieldTable::default(),
        )
        .await
        .context("cannot consume from the temporary queue")?;
    let count = Arc::clone(&plan.skipped);
    let counter = tokio::spawn(async move {
        while let Some(Ok(delivery)) = dropped.next().await {
            let records = output::split(&delivery.data).len() as u64;
            count.fetch_add(records, Ordering::Relaxed);
            if delivery.ack(BasicAckOptions::default()).await.is_err() {
                return;
            }
        }
    });
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            ShortString::default(),
            consume_options,
            FieldTable::default(),
        )
        .await
        .context("cannot consume from the temporary queue")?;
    Ok(Subscription {
        consumer,
        queue: queue.name().as_str().to_owned(),
        counter,
    })
}

/// `x-max-length` and `x-max-length-bytes`, dropping the oldest beyond them.
fn bounded(max_length: u32, max_bytes: u64) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(i64::from(max_length)),
    );
    arguments.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(i64::try_from(max_bytes).unwrap_or(i64::MAX)),
    );
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("drop-head")),
    );
    arguments
}

/// A channel on which the exchange was found: declared passively, so tail
/// never creates it (nor fights over its flags). While it does not exist,
/// tail says so once and looks again every [`EXCHANGE_POLL`].
async fn wait_for_exchange(conn: &Connection, exchange: &str) -> anyhow::Result<Channel> {
    let mut waiting = false;
    loop {
        let channel = conn
            .create_channel()
            .await
            .context("cannot open a channel")?;
        match logcollect::amqp::check_exchange(&channel, exchange).await {
            Ok(()) => {
                if waiting {
                    note(&format!("exchange {exchange} exists now"));
                }
                return Ok(channel);
            }
            Err(e) if is_soft_error(&e, AMQPSoftError::NOTFOUND) => {
                if !std::mem::replace(&mut waiting, true) {
                    note(&format!(
                        "exchange {exchange} does not exist yet; waiting for it (the applications \
                         declare it when they first connect, and so does `logcollect setup`)"
                    ));
                }
                tokio::time::sleep(EXCHANGE_POLL).await;
            }
            Err(e) => return Err(anyhow!(e).context(format!("cannot look up exchange {exchange}"))),
        }
    }
}

/// What the printer thread writes.
#[derive(Debug)]
enum Out {
    /// A record's line, to standard output.
    Line(String),
    /// A note, to standard error, in its place among the lines.
    Note(String),
}

/// The thread that writes to standard output, so that a terminal that
/// stops reading blocks it alone: tail goes on counting what the broker
/// drops, and the AMQP connection stays served.
#[derive(Debug)]
struct Printer {
    lines: Option<tokio::sync::mpsc::Sender<Out>>,
    /// The thread's end: `Err` when writing failed (a closed pipe).
    done: std::sync::mpsc::Receiver<io::Result<()>>,
    /// The thread's end was received already.
    ended: std::cell::Cell<bool>,
}

impl Printer {
    fn start() -> anyhow::Result<Printer> {
        let (lines, mut rx) = tokio::sync::mpsc::channel::<Out>(PRINT_BUFFER);
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("logcollect-print".to_owned())
            .spawn(move || {
                let result = loop {
                    match rx.blocking_recv() {
                        None => break Ok(()),
                        Some(Out::Line(line)) => {
                            if let Err(e) = print_line(&line) {
                                break Err(e);
                            }
                        }
                        Some(Out::Note(text)) => note(&text),
                    }
                };
                let _ = done_tx.send(result);
            })
            .context("cannot start the printing thread")?;
        Ok(Printer {
            lines: Some(lines),
            done,
            ended: std::cell::Cell::new(false),
        })
    }

    /// Queues `out` for printing, waiting while the buffer is full. An
    /// error when the printer has stopped (standard output failed).
    async fn print(&self, out: Out) -> anyhow::Result<()> {
        let Some(lines) = &self.lines else {
            return Err(anyhow!("tail has stopped printing"));
        };
        if lines.send(out).await.is_ok() {
            return Ok(());
        }
        Err(self.failure())
    }

    /// Resolves when the thread has stopped taking lines.
    async fn closed(&self) {
        match &self.lines {
            Some(lines) => lines.closed().await,
            None => std::future::pending().await,
        }
    }

    /// Why the thread stopped: the write error it reports.
    fn failure(&self) -> anyhow::Error {
        self.ended.set(true);
        match self.done.recv_timeout(PRINT_DRAIN) {
            Ok(Err(e)) => anyhow!(e).context("cannot write to standard output"),
            _ => anyhow!("the printing thread stopped"),
        }
    }

    /// Lets the thread write what it holds, waiting at most `limit`.
    fn finish(&mut self, limit: Duration) -> anyhow::Result<()> {
        drop(self.lines.take());
        if self.ended.get() {
            return Ok(());
        }
        match self.done.recv_timeout(limit) {
            Ok(Err(e)) => Err(anyhow!(e).context("cannot write to standard output")),
            // Written; or the reader is paused, and tail was told to end.
            _ => Ok(()),
        }
    }
}

/// Writes one line to standard output and flushes it, so a pipe sees each
/// record at once. A closed pipe comes back as an error that `main` treats
/// as success.
fn print_line(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush())
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
            max_length: DEFAULT_MAX_LENGTH,
            max_bytes: DEFAULT_MAX_BYTES,
            skipped: Arc::default(),
            skipped_said: 0,
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
        assert_eq!(render(&mut p, &Item::NotJson("x".into())), None);
        assert_eq!(render(&mut p, &Item::NotObject("1".into())), None);
        let items = output::split(br#"{"levelname":"DEBUG"}"#);
        assert_eq!(render(&mut p, &items[0]), None);
    }
}
