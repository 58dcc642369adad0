//! `logcollect send`: records from arguments, standard input or a
//! command's output, confirmed.

use std::io::{self, BufRead as _, Write as _};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use clap::Args;
use logcollect::{Config, FieldValue, Level, Record, Shipper, Stats};

use crate::exec::{self, Stream};
use crate::{env_value, parse_key_value, parse_level, Common, UsageError, EXIT_FAILURE};

/// The `logger` field of records sent from the command line.
const DEFAULT_LOGGER: &str = "cli";

pub(crate) const AFTER_HELP: &str = "\
Examples:
  logcollect send --level warning --field disk=/var 'disk almost full'
  backup.sh 2>&1 | logcollect send --logger backup --field job=nightly
  logcollect send --logger backup --field job=nightly -- backup.sh --full
  LOGCOLLECT_BROKER_URI='amqp://app:secret@rabbit//' logcollect send 'deploy done'

Without MESSAGE, every line of standard input is one record (empty lines are
skipped). Values of --field are typed: 42, 1.5, true, false and null are sent
as JSON numbers, booleans and null; anything else as a string.

With `-- COMMAND [ARGS...]`, send runs COMMAND (with our standard input) and
ships each non-empty line it writes: standard output at --level (info),
standard error at --stderr-level (warning), while copying both to its own
standard output and error. Ctrl-C goes to COMMAND; send stays to ship its
last lines.

Exits 0 once the broker has confirmed every record, 1 when some were not
confirmed within LOGCOLLECT_SHUTDOWN_TIMEOUT (default 5 s) or could not be
routed to any queue, 2 on a usage or configuration error. With COMMAND, a
failing COMMAND's status wins (128+N when signal N killed it); when COMMAND
succeeded but records were not confirmed, 1; 127 when COMMAND is not found,
126 when it cannot be run.";

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Level of the records (of COMMAND's standard output lines): trace,
    /// debug, info, warning, error or critical
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_level)]
    level: Level,
    /// Level of the lines COMMAND writes to standard error
    #[arg(long, value_name = "LEVEL", default_value = "warning", value_parser = parse_level)]
    stderr_level: Level,
    /// The records' `logger` field; the routing key is <routing-key>.<NAME>
    #[arg(long, value_name = "NAME", default_value = DEFAULT_LOGGER)]
    logger: String,
    /// A field added to every record (repeatable)
    #[arg(long = "field", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    fields: Vec<(String, String)>,
    /// The message (several words are joined with spaces); without it, each
    /// line of standard input is one record
    #[arg(value_name = "MESSAGE")]
    pub(crate) message: Vec<String>,
    /// Run COMMAND and ship each line of its output (after `--`)
    #[arg(
        last = true,
        value_name = "COMMAND",
        num_args = 1..,
        conflicts_with = "message"
    )]
    pub(crate) command: Vec<String>,
}

pub(crate) fn run(args: SendArgs) -> anyhow::Result<u8> {
    let message = if args.message.is_empty() {
        None
    } else {
        let message = args.message.join(" ");
        if message.trim().is_empty() {
            return Err(UsageError(
                "MESSAGE is empty; give some text, or no MESSAGE to read standard input".to_owned(),
            )
            .into());
        }
        Some(message)
    };
    let running = !args.command.is_empty();
    // The library's default level (info) would silently drop `--level
    // debug`; here the level is chosen per command, so only an explicit
    // LOGCOLLECT_LEVEL filters.
    let level_from_env = env_value("LOGCOLLECT_LEVEL");
    let config = args.common.config(|b| {
        if level_from_env.is_some() {
            b
        } else {
            b.level("trace")
        }
    })?;
    let mut levels = vec![args.level];
    if running {
        levels.push(args.stderr_level);
    }
    for level in levels {
        if !config.filter().enabled(&args.logger, level) {
            return Err(UsageError(format!(
                "{level} records from logger {:?} are filtered out by LOGCOLLECT_LEVEL={:?}, \
                 so nothing would be sent; raise the level or change LOGCOLLECT_LEVEL",
                args.logger,
                level_from_env.unwrap_or_default()
            ))
            .into());
        }
    }

    let shipper = Shipper::new(config.clone())?;
    let template = args.fields.iter().fold(
        Record::new(args.level, args.logger.clone(), String::new()),
        |record, (k, v)| record.field(k.clone(), FieldValue::infer(v)),
    );
    let mut feed = Feed {
        shipper: &shipper,
        config: &config,
        template,
        sent: 0,
        stalled: false,
        skipped: 0,
    };
    let outcome = if running {
        let (out, err) = (args.level, args.stderr_level);
        exec::run(&args.command, |stream, line| {
            let level = if stream == Stream::Stdout { out } else { err };
            feed.submit_at(level, line);
        })
        .map(Some)
    } else {
        match message {
            Some(message) => {
                feed.submit(message);
                Ok(None)
            }
            None => feed
                .stdin()
                .map(|()| None)
                .context("reading standard input"),
        }
    };
    let (sent, stalled, skipped) = (feed.sent, feed.stalled, feed.skipped);
    // Confirms arrive until the deadline; what is left then is counted in
    // the stats, which the verdict below reads.
    let _ = shipper.shutdown(config.shutdown_timeout());
    let verdict = verdict(&config, &args.logger, &shipper.stats(), sent, stalled)
        .and_then(|()| not_shipped(&config, skipped));
    match outcome {
        Ok(None) => verdict.map(|()| 0),
        Ok(Some(status)) => match verdict {
            Ok(()) => Ok(status),
            Err(e) => {
                // COMMAND's own failure is the news; ours comes after it.
                let _ = writeln!(io::stderr(), "logcollect send: {}", crate::chain_text(&e));
                Ok(if status == 0 { EXIT_FAILURE } else { status })
            }
        },
        // What was read before the failure was shipped (or not): say that
        // first, then why reading stopped.
        Err(e) => {
            verdict?;
            Err(e)
        }
    }
}

/// COMMAND's lines that were never handed to the shipper.
fn not_shipped(config: &Config, skipped: u64) -> anyhow::Result<()> {
    if skipped == 0 {
        return Ok(());
    }
    Err(anyhow!(
        "{skipped} lines of COMMAND's output were not shipped: the broker confirmed nothing \
         for {} while the queue was full",
        secs(config.shutdown_timeout())
    ))
}

/// Hands records to the shipper.
struct Feed<'a> {
    shipper: &'a Shipper,
    config: &'a Config,
    /// Level, logger and fields of every record; the message changes.
    template: Record,
    /// Records handed over (accepted or not).
    sent: u64,
    /// The broker confirmed nothing for a whole timeout while the queue was
    /// full: reading stopped (or, for a command, shipping did).
    stalled: bool,
    /// Lines not handed over once stalled (a command's output keeps coming).
    skipped: u64,
}

impl Feed<'_> {
    /// Ships each non-empty line of standard input, as it arrives (so
    /// `tail -f app.log | logcollect send` streams).
    fn stdin(&mut self) -> io::Result<()> {
        let mut input = io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if input.read_until(b'\n', &mut buf)? == 0 {
                return Ok(());
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            if !self.submit(line.to_owned()) {
                return Ok(());
            }
        }
    }

    /// Submits one record at the template's level; `false` when the broker
    /// has stalled and reading should stop.
    fn submit(&mut self, message: String) -> bool {
        let level = self.template.level;
        self.submit_at(level, message)
    }

    /// Submits one record at `level`; `false` when the broker has stalled
    /// (the line is then only counted in `skipped`).
    fn submit_at(&mut self, level: Level, message: String) -> bool {
        if self.stalled {
            self.skipped += 1;
            return false;
        }
        // The shipper's queue drops what does not fit, which is right for an
        // application but not for a pipe we can simply stop reading: wait
        // for confirms instead. Fewer pending records than the queue holds
        // guarantees room, since only this thread submits.
        let capacity = self.config.queue_capacity() as u64;
        if self.shipper.stats().pending() >= capacity
            && self.shipper.flush(self.config.shutdown_timeout()).is_err()
        {
            self.stalled = true;
            self.skipped += 1;
            return false;
        }
        let mut record = self.template.clone();
        record.level = level;
        record.message = message;
        self.sent += 1;
        // A refusal is counted in the stats, which `verdict` reads.
        let _ = self.shipper.submit(&record);
        true
    }
}

/// Success only when every record sent was confirmed and routed.
fn verdict(
    config: &Config,
    logger: &str,
    stats: &Stats,
    sent: u64,
    stalled: bool,
) -> anyhow::Result<()> {
    let timeout = secs(config.shutdown_timeout());
    if stats.unroutable > 0 {
        let prefix = config.routing_key();
        return Err(anyhow!(
            "{} of {sent} records were unroutable: no queue is bound to exchange {:?} for routing \
             key {:?}, so the broker discarded them; bind a queue to exchange {} with key {prefix}.#",
            stats.unroutable,
            config.exchange(),
            routing_key(prefix, logger),
            config.exchange(),
        ));
    }
    let delivered = stats.confirmed.min(sent);
    if delivered < sent || stats.lost() > 0 {
        let why = stats
            .last_error
            .clone()
            .unwrap_or_else(|| "the broker did not answer".to_owned());
        let stopped = if stalled {
            format!(" (stopped reading input after {sent} records: the queue was full)")
        } else {
            String::new()
        };
        return Err(anyhow!(
            "{} of {sent} records not confirmed within {timeout}{stopped}: {why}",
            sent - delivered
        ));
    }
    if stalled {
        return Err(anyhow!(
            "stopped reading input after {sent} records, all confirmed: the queue stayed full \
             for {timeout} (the broker confirms too slowly; raise LOGCOLLECT_SHUTDOWN_TIMEOUT)"
        ));
    }
    Ok(())
}

/// The routing key the core uses for `logger`: `<prefix>.<logger>`, `::` as
/// `.`, `root` for an empty logger.
fn routing_key(prefix: &str, logger: &str) -> String {
    let logger = if logger.is_empty() { "root" } else { logger };
    format!("{prefix}.{}", logger.replace("::", "."))
}

/// `5s`, `0.5s`.
fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::builder()
            .exchange("ex")
            .routing_key("rk")
            .shutdown_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    fn stats(f: impl FnOnce(&mut Stats)) -> Stats {
        let mut s = Stats::default();
        f(&mut s);
        s
    }

    #[test]
    fn verdict_success() {
        let s = stats(|s| {
            s.accepted = 3;
            s.confirmed = 3;
        });
        verdict(&config(), "cli", &s, 3, false).unwrap();
        verdict(&config(), "cli", &Stats::default(), 0, false).unwrap();
    }

    #[test]
    fn verdict_unroutable() {
        let s = stats(|s| {
            s.accepted = 2;
            s.confirmed = 2;
            s.unroutable = 2;
        });
        let e = verdict(&config(), "a::b", &s, 2, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 of 2 records were unroutable"), "{e}");
        assert!(e.contains("\"rk.a.b\""), "{e}");
        assert!(
            e.contains("bind a queue to exchange ex with key rk.#"),
            "{e}"
        );
    }

    #[test]
    fn verdict_not_confirmed() {
        let s = stats(|s| {
            s.accepted = 10;
            s.confirmed = 7;
            s.undelivered_at_shutdown = 3;
            s.last_error = Some("connection refused at h:1".into());
        });
        let e = verdict(&config(), "cli", &s, 10, false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "3 of 10 records not confirmed within 5s: connection refused at h:1"
        );
        // Refused by a full queue: never accepted, still a failure.
        let s = stats(|s| {
            s.accepted = 9;
            s.confirmed = 9;
            s.dropped_queue_full = 1;
        });
        let e = verdict(&config(), "cli", &s, 10, false)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("1 of 10 records not confirmed"), "{e}");
        let s = stats(|s| {
            s.accepted = 4;
            s.confirmed = 4;
        });
        let e = verdict(&config(), "cli", &s, 4, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("stopped reading input after 4 records, all confirmed"),
            "{e}"
        );
        let s = stats(|s| {
            s.accepted = 4;
            s.confirmed = 1;
            s.undelivered_at_shutdown = 3;
        });
        let e = verdict(&config(), "cli", &s, 4, true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "3 of 4 records not confirmed within 5s (stopped reading input after 4 records: \
             the queue was full): the broker did not answer"
        );
    }

    #[test]
    fn routing_keys() {
        assert_eq!(routing_key("logstash", "cli"), "logstash.cli");
        assert_eq!(routing_key("rk", "my_app::db"), "rk.my_app.db");
        assert_eq!(routing_key("rk", ""), "rk.root");
    }

    #[test]
    fn seconds() {
        assert_eq!(secs(Duration::from_secs(5)), "5s");
        assert_eq!(secs(Duration::from_millis(500)), "0.5s");
    }
}
