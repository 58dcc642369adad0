//! `logcollect send`: records from arguments, standard input or a
//! command's output, confirmed.

use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use clap::{Args, ValueEnum};
use logcollect::{Config, FieldValue, Level, Record, Shipper, Stats};
use serde_json::Value;

use crate::exec::{self, Stream};
use crate::follow::{Follower, Next, PositionFile};
use crate::{env_value, parse_level, Common, UsageError, EXIT_FAILURE};

/// The `logger` field of records sent from the command line.
const DEFAULT_LOGGER: &str = "cli";

pub(crate) const AFTER_HELP: &str = "\
Examples:
  logcollect send --level warning --field disk=/var 'disk almost full'
  logcollect send --field version=1.10 --field attempts:=3 --field 'tags:=[\"a\",\"b\"]' done
  backup.sh 2>&1 | logcollect send --logger backup --field job=nightly
  logcollect send --logger backup --field job=nightly -- backup.sh --full
  jq -c '.events[]' report.json | logcollect send --json
  logcollect send --file /var/log/app.log --follow --position-file /var/lib/app.log.pos
  LOGCOLLECT_BROKER_URI='amqp://app:secret@rabbit//' logcollect send 'deploy done'

Without MESSAGE, every line of standard input is one record (empty lines are
skipped). --field KEY=VALUE always sends VALUE as a string (version=1.10 stays
\"1.10\", zip=01234 stays \"01234\"); --field KEY:=JSON sends JSON with its type
(n:=42, ok:=true, v:=null, list:=[1,2], obj:={\"a\":1}), as httpie does.

--json reads each line as a JSON object: `message`, `level` and `logger` are
the record's own (else MESSAGE-less records get an empty message, --level and
--logger), every other key is a field with its JSON type, and --field values
come after them (a line's own key wins). A line that is not a JSON object, or
whose level or logger is not a string or unknown, is reported with its line
number; --bad-lines fail (the default) stops there and exits 1 after shipping
the lines before it, --bad-lines skip goes on (exit 0 if the rest shipped).

--file PATH reads PATH instead of standard input (each line a record, or a
JSON object with --json). With --follow it keeps reading as the file grows,
like `tail -F`: when PATH is renamed away and created again (rotation), it
finishes the old file and reads the new one from its start; when the file is
truncated (copytruncate), it starts again from the top; while PATH is missing,
it waits for it. A line is shipped once its line break is written. Ctrl-C or
SIGTERM ends it: the records read are confirmed, then it exits.
--position-file FILE remembers how far PATH was shipped: each time the broker
has confirmed every record read so far (when send has caught up with the file,
and every 1,000 lines), and at exit. A restart with the same FILE continues
after the last confirmed line, so a stop and start neither resends nor skips a
line (a crash resends the lines after the last saved position: at least once).
If PATH was rotated while send was not running, the new file is read from its
start. Only one send may use a position file at a time.

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
    /// A field added to every record (repeatable): KEY=VALUE, the value a
    /// string; KEY:=JSON, the value typed (n:=42, ok:=true, l:=[1,2])
    #[arg(long = "field", value_name = "KEY=VALUE|KEY:=JSON", value_parser = parse_field)]
    fields: Vec<(String, FieldValue)>,
    /// Each input line is a JSON object: message, level and logger are
    /// recognised, other keys are fields with their JSON types
    #[arg(long, conflicts_with_all = ["message", "command"])]
    json: bool,
    /// With --json, what a line that is not a record does: fail (stop,
    /// exit 1) or skip (report it and go on) [default: fail]
    #[arg(long, value_name = "WHAT", requires = "json")]
    bad_lines: Option<BadLines>,
    /// Read the lines of PATH instead of standard input
    #[arg(long, value_name = "PATH", conflicts_with = "message")]
    file: Option<PathBuf>,
    /// With --file: keep reading as PATH grows, across rotation and
    /// truncation, until Ctrl-C or SIGTERM
    #[arg(long, requires = "file")]
    follow: bool,
    /// With --file: where to remember how far PATH was shipped (and
    /// confirmed), so that a restart continues there
    #[arg(long, value_name = "FILE", requires = "file")]
    position_file: Option<PathBuf>,
    /// The message (several words are joined with spaces); without it, each
    /// line of standard input is one record
    #[arg(value_name = "MESSAGE")]
    pub(crate) message: Vec<String>,
    /// Run COMMAND and ship each line of its output (after `--`)
    #[arg(
        last = true,
        value_name = "COMMAND",
        num_args = 1..,
        conflicts_with_all = ["message", "file"]
    )]
    pub(crate) command: Vec<String>,
}

/// What `--json` does with a line that is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BadLines {
    /// Stop reading; what was read before is shipped; exit 1.
    Fail,
    /// Report the line on standard error and go on.
    Skip,
}

/// `KEY=VALUE` (a string, whatever it looks like) or `KEY:=JSON` (typed).
fn parse_field(s: &str) -> Result<(String, FieldValue), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!(
            "{s:?} has no '=': expected KEY=VALUE (a string) or KEY:=JSON, e.g. user=ann, n:=3"
        ));
    };
    let (key, typed) = match key.strip_suffix(':') {
        Some(key) => (key, true),
        None => (key, false),
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!(
            "{s:?} has an empty key: expected KEY=VALUE or KEY:=JSON, e.g. user=ann"
        ));
    }
    if !typed {
        return Ok((key.to_owned(), FieldValue::Str(value.to_owned())));
    }
    let json: Value = serde_json::from_str(value).map_err(|e| {
        format!(
            "{s:?}: {value:?} is not JSON ({e}); for a string write {key}={value} or {key}:='\"text\"'"
        )
    })?;
    Ok((key.to_owned(), field_value(json)))
}

/// A JSON value as a record field, with its type.
fn field_value(v: Value) -> FieldValue {
    match v {
        Value::Null => FieldValue::Null,
        Value::Bool(b) => FieldValue::Bool(b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                FieldValue::I64(i)
            } else if let Some(u) = n.as_u64() {
                FieldValue::U64(u)
            } else {
                FieldValue::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => FieldValue::Str(s),
        Value::Array(items) => FieldValue::Array(items.into_iter().map(field_value).collect()),
        Value::Object(map) => {
            FieldValue::Object(map.into_iter().map(|(k, v)| (k, field_value(v))).collect())
        }
    }
}

/// The JSON type of `v`, in words.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The record of one `--json` line: `message`, `level` and `logger` from
/// the line (else the template's), its other keys as fields, then the
/// template's fields (`--field`; the line's own keys win).
fn json_record(line: &str, template: &Record) -> Result<Record, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(map) = value else {
        return Err(format!("{} is not a JSON object", json_type(&value)));
    };
    let mut record = Record::new(template.level, template.logger.clone(), String::new());
    for (key, value) in map {
        match (key.as_str(), value) {
            ("message", Value::String(s)) => record.message = s,
            ("message", Value::Null) => {}
            // A number or an object as the message: its JSON text.
            ("message", other) => record.message = other.to_string(),
            ("level", Value::String(s)) => record.level = parse_level(&s)?,
            ("level", other) => {
                return Err(format!(
                    "\"level\" is {}, not a level name",
                    json_type(&other)
                ))
            }
            ("logger", Value::String(s)) => record.logger = s,
            ("logger", other) => {
                return Err(format!("\"logger\" is {}, not a string", json_type(&other)))
            }
            (_, value) => record.fields.push((key, field_value(value))),
        }
    }
    record.fields.extend(template.fields.iter().cloned());
    Ok(record)
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
    // With --json each line may bring its own level: those filtered out
    // are counted and said at the end instead.
    let mut levels = if args.json { vec![] } else { vec![args.level] };
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

    // With --follow, Ctrl-C and SIGTERM end the reading, not the process:
    // what was read is still confirmed (and its position saved).
    let stop = if args.follow {
        stop_on_signals()?
    } else {
        Arc::new(AtomicBool::new(false))
    };
    // Opened (and locked) before anything is shipped: a second send on the
    // same position file would ship the same lines.
    let mut positions = match &args.position_file {
        Some(path) => Some(PositionFile::open(path)?),
        None => None,
    };
    let mut follower = match &args.file {
        Some(path) => Some(
            Follower::open(
                path,
                args.follow,
                positions.as_ref().and_then(PositionFile::saved),
            )
            .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };

    let shipper = Shipper::new(config.clone())?;
    let mut template = Record::new(args.level, args.logger.clone(), String::new());
    template.fields = args.fields.clone();
    let mut feed = Feed {
        shipper: &shipper,
        config: &config,
        template,
        json: args.json,
        bad_lines: args.bad_lines.unwrap_or(BadLines::Fail),
        patient: args.follow,
        stop: &stop,
        sent: 0,
        stalled: false,
        skipped: 0,
        bad: 0,
        filtered: 0,
    };
    let outcome = if running {
        let (out, err) = (args.level, args.stderr_level);
        exec::run(&args.command, |stream, line| {
            let level = if stream == Stream::Stdout { out } else { err };
            feed.submit_at(level, line);
        })
        .map(Some)
    } else if let Some(follower) = &mut follower {
        feed.file(follower, positions.as_mut())
            .map(|()| None)
            .with_context(|| format!("reading {}", follower.path().display()))
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
    let (bad, filtered) = (feed.bad, feed.filtered);
    // Confirms arrive until the deadline; what is left then is counted in
    // the stats, which the verdict below reads.
    let _ = shipper.shutdown(config.shutdown_timeout());
    let verdict = verdict(&config, &args.logger, &shipper.stats(), sent, stalled)
        .and_then(|()| not_shipped(&config, skipped));
    if verdict.is_ok() {
        // Everything read was confirmed: a restart goes on after it; after a
        // bad line that stopped reading, at that line.
        if let (Some(positions), Some(follower)) = (&mut positions, &follower) {
            let stopped_at_bad_line = outcome
                .as_ref()
                .is_err_and(|e| e.downcast_ref::<BadLine>().is_some());
            let position = if stopped_at_bad_line {
                follower.position_before_last()
            } else {
                follower.position()
            };
            positions
                .save(position)
                .context("cannot save the position")?;
        }
    }
    if filtered > 0 {
        note(&format!(
            "{filtered} records were not sent: their level is filtered out by LOGCOLLECT_LEVEL"
        ));
    }
    if bad > 0 && args.bad_lines == Some(BadLines::Skip) {
        note(&format!("{bad} bad lines skipped (--bad-lines skip)"));
    }
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

/// A message for the person running send, on standard error.
fn note(text: &str) {
    let _ = writeln!(io::stderr(), "logcollect send: {text}");
}

/// A flag set by Ctrl-C (SIGINT) or SIGTERM, which from then on no longer
/// end the process: the caller stops reading, and what was read is shipped.
#[cfg(unix)]
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = crate::runtime()?;
    let (mut interrupt, mut terminate) = {
        let _inside = runtime.enter();
        (
            signal(SignalKind::interrupt()).context("cannot catch Ctrl-C")?,
            signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        )
    };
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("logcollect-signals".to_owned())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            });
            flag.store(true, Ordering::SeqCst);
        })
        .context("cannot start the signal thread")?;
    Ok(stop)
}

#[cfg(not(unix))]
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    Ok(Arc::new(AtomicBool::new(false)))
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

/// Lines between two saved positions while a file is read without pause:
/// a crash resends at most this many (plus what the last wait covered).
const SAVE_EVERY: u64 = 1000;

/// How often a followed file is looked at again once everything in it was
/// read: new lines show up within this, at the cost of a `stat` per tick.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Hands records to the shipper.
struct Feed<'a> {
    shipper: &'a Shipper,
    config: &'a Config,
    /// Level, logger and fields of every record; the message changes.
    template: Record,
    /// `--json`: each line is a JSON object.
    json: bool,
    bad_lines: BadLines,
    /// Wait for the broker for as long as it takes (`--follow`: the file
    /// keeps what was not read), instead of giving up after a timeout.
    patient: bool,
    /// Set by Ctrl-C or SIGTERM while following.
    stop: &'a AtomicBool,
    /// Records handed over (accepted or not).
    sent: u64,
    /// The broker confirmed nothing for a whole timeout while the queue was
    /// full: reading stopped (or, for a command, shipping did).
    stalled: bool,
    /// Lines not handed over once stalled (a command's output keeps coming).
    skipped: u64,
    /// `--json` lines that were not records.
    bad: u64,
    /// `--json` records below `LOGCOLLECT_LEVEL`, not sent.
    filtered: u64,
}

/// Why reading stopped early.
#[derive(Debug)]
struct BadLine(String);

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadLine {}

impl Feed<'_> {
    /// Ships each non-empty line of standard input, as it arrives (so
    /// `tail -f app.log | logcollect send` streams).
    fn stdin(&mut self) -> anyhow::Result<()> {
        let stdin = io::stdin();
        if stdin.is_terminal() {
            // Otherwise a forgotten MESSAGE looks like a hang.
            note(&format!(
                "reading {} from the terminal, one per line; Ctrl-D ends (or give MESSAGE)",
                if self.json { "JSON records" } else { "records" }
            ));
        }
        let mut input = stdin.lock();
        let mut buf = Vec::new();
        let mut number = 0;
        loop {
            buf.clear();
            if input.read_until(b'\n', &mut buf)? == 0 {
                return Ok(());
            }
            number += 1;
            let line = String::from_utf8_lossy(&buf);
            let line = line.strip_suffix('\n').unwrap_or(&line);
            if !self.line(number, line)? {
                return Ok(());
            }
        }
    }

    /// Ships the lines of a file (`--file`), following it with `--follow`,
    /// and saves the position in `positions` whenever the broker has
    /// confirmed everything read.
    fn file(
        &mut self,
        follower: &mut Follower,
        mut positions: Option<&mut PositionFile>,
    ) -> anyhow::Result<()> {
        let mut since_save = 0;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            match follower.next()? {
                Next::Line { number, text } => {
                    if !self.line(number, &text)? {
                        return Ok(());
                    }
                    since_save += 1;
                    if since_save >= SAVE_EVERY {
                        self.save(follower, positions.as_deref_mut())?;
                        since_save = 0;
                    }
                }
                Next::Idle => {
                    if since_save > 0 {
                        self.save(follower, positions.as_deref_mut())?;
                        since_save = 0;
                    }
                    std::thread::sleep(FOLLOW_POLL);
                }
                Next::End => return Ok(()),
            }
        }
    }

    /// Waits until every record read so far is confirmed, then saves the
    /// position after the last of them. Not confirmed yet (the broker is
    /// away): nothing is saved, a later save covers it.
    fn save(
        &mut self,
        follower: &Follower,
        positions: Option<&mut PositionFile>,
    ) -> anyhow::Result<()> {
        let Some(positions) = positions else {
            return Ok(());
        };
        if self.shipper.flush(self.config.shutdown_timeout()).is_ok()
            && self.shipper.stats().lost() == 0
        {
            positions
                .save(follower.position())
                .context("cannot save the position")?;
        }
        Ok(())
    }

    /// One input line (without its line break), line `number` of the input;
    /// `false` when reading should stop.
    fn line(&mut self, number: u64, line: &str) -> anyhow::Result<bool> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            return Ok(true);
        }
        if !self.json {
            return Ok(self.submit(line.to_owned()));
        }
        match json_record(line, &self.template) {
            Ok(record) => Ok(self.submit_record(record)),
            Err(why) => {
                self.bad += 1;
                let shown: String = line.chars().take(80).collect();
                let more = if shown.len() < line.len() { "…" } else { "" };
                match self.bad_lines {
                    BadLines::Skip => {
                        note(&format!("line {number}: {why}; skipped: {shown}{more}"));
                        Ok(true)
                    }
                    BadLines::Fail => Err(BadLine(format!(
                        "line {number}: {why}: {shown}{more} (lines before it were sent; \
                         --bad-lines skip goes on past such lines)"
                    ))
                    .into()),
                }
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
        let mut record = self.template.clone();
        record.level = level;
        record.message = message;
        self.submit_record(record)
    }

    /// Submits `record`; `false` when the broker has stalled (the record is
    /// then only counted in `skipped`).
    fn submit_record(&mut self, record: Record) -> bool {
        if self.stalled {
            self.skipped += 1;
            return false;
        }
        if !self.config.filter().enabled(&record.logger, record.level) {
            // Only --json records get here: the level of the others was
            // checked at start.
            self.filtered += 1;
            return true;
        }
        // The shipper's queue drops what does not fit, which is right for an
        // application but not for a pipe we can simply stop reading: wait
        // for confirms instead. Fewer pending records than the queue holds
        // guarantees room, since only this thread submits.
        let capacity = self.config.queue_capacity() as u64;
        let mut said = false;
        while self.shipper.stats().pending() >= capacity
            && self.shipper.flush(self.config.shutdown_timeout()).is_err()
        {
            if !self.patient || self.stop.load(Ordering::SeqCst) {
                self.stalled = true;
                self.skipped += 1;
                return false;
            }
            if !std::mem::replace(&mut said, true) {
                note(&format!(
                    "the broker confirmed nothing for {}; waiting for it (the file keeps \
                     what is not read yet)",
                    secs(self.config.shutdown_timeout())
                ));
            }
        }
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
            logcollect::amqp::routing_key(config, logger),
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
    fn fields_are_strings_unless_typed() {
        let f = parse_field;
        assert_eq!(
            f("version=1.10"),
            Ok(("version".into(), FieldValue::Str("1.10".into())))
        );
        assert_eq!(
            f("zip=01234"),
            Ok(("zip".into(), FieldValue::Str("01234".into())))
        );
        assert_eq!(
            f(" k =a=b"),
            Ok(("k".into(), FieldValue::Str("a=b".into())))
        );
        assert_eq!(f("k="), Ok(("k".into(), FieldValue::Str(String::new()))));
        assert_eq!(f("n:=42"), Ok(("n".into(), FieldValue::I64(42))));
        assert_eq!(f("x:=1.10"), Ok(("x".into(), FieldValue::F64(1.1))));
        assert_eq!(f("ok:=true"), Ok(("ok".into(), FieldValue::Bool(true))));
        assert_eq!(f("v:=null"), Ok(("v".into(), FieldValue::Null)));
        assert_eq!(
            f("big:=18446744073709551615"),
            Ok(("big".into(), FieldValue::U64(u64::MAX)))
        );
        assert_eq!(
            f(r#"o:={"a":[1,"b"]}"#),
            Ok((
                "o".into(),
                FieldValue::Object(vec![(
                    "a".into(),
                    FieldValue::Array(vec![FieldValue::I64(1), FieldValue::Str("b".into())])
                )])
            ))
        );
        assert_eq!(
            f(r#"s:="01""#),
            Ok(("s".into(), FieldValue::Str("01".into())))
        );
        assert!(f("n:=abc").unwrap_err().contains("is not JSON"));
        assert!(f("kv").unwrap_err().contains("KEY=VALUE"));
        assert!(f("=v").unwrap_err().contains("empty key"));
        assert!(f(":=1").unwrap_err().contains("empty key"));
    }

    #[test]
    fn json_lines_become_records() {
        let template = Record::new(Level::Info, "cli", "").field("job", "nightly");
        let r = json_record(
            r#"{"message":"hi","level":"warning","logger":"app::db","n":3,"ok":true,"job":"mine"}"#,
            &template,
        )
        .unwrap();
        assert_eq!(r.message, "hi");
        assert_eq!(r.level, Level::Warning);
        assert_eq!(r.logger, "app::db");
        // The line's keys first, so that they win over --field.
        assert_eq!(
            r.fields,
            [
                ("job".to_owned(), FieldValue::Str("mine".into())),
                ("n".to_owned(), FieldValue::I64(3)),
                ("ok".to_owned(), FieldValue::Bool(true)),
                ("job".to_owned(), FieldValue::Str("nightly".into())),
            ]
        );
        let r = json_record(r#"{"a":1}"#, &template).unwrap();
        assert_eq!(
            (r.level, r.logger.as_str(), r.message.as_str()),
            (Level::Info, "cli", "")
        );
        let r = json_record(r#"{"message":{"x":1}}"#, &template).unwrap();
        assert_eq!(r.message, r#"{"x":1}"#);
        assert!(json_record("not json", &template)
            .unwrap_err()
            .starts_with("not JSON"));
        assert_eq!(
            json_record("[1]", &template).unwrap_err(),
            "an array is not a JSON object"
        );
        assert!(json_record(r#"{"level":"loud"}"#, &template)
            .unwrap_err()
            .contains("unknown level"));
        assert!(json_record(r#"{"level":3}"#, &template)
            .unwrap_err()
            .contains("a number, not a level name"));
        assert!(json_record(r#"{"logger":null}"#, &template)
            .unwrap_err()
            .contains("null, not a string"));
    }

    #[test]
    fn seconds() {
        assert_eq!(secs(Duration::from_secs(5)), "5s");
        assert_eq!(secs(Duration::from_millis(500)), "0.5s");
    }
}
