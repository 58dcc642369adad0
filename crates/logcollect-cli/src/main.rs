//! `logcollect`: ship records from scripts and cron jobs (`send`), watch
//! what reaches the exchange (`tail`), check a broker end to end (`doctor`)
//! and prepare it for Logstash (`setup`).
//!
//! Every command reads the same `LOGCOLLECT_*` environment as the library
//! (`logcollect::ConfigBuilder::env`); command-line flags win over it.
//! Settings only the CLI has (`--queue`, `--color`…) read their own
//! `LOGCOLLECT_*` variable, blank meaning unset as in the library.
//!
//! Exit codes are listed in `exit_codes!` (and `--help`). A closed standard
//! output (`tail | head -1`) is success, as in ripgrep.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod broker;
mod doctor;
mod exec;
mod follow;
mod output;
mod pipeline;
mod select;
mod send;
mod setup;
mod shards;
mod style;
mod tail;

use std::fmt;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use logcollect::{Config, ConfigBuilder, ErrorKind, Level};

/// Exit code of a usage or configuration error (clap uses it too).
const EXIT_USAGE: u8 = 2;
/// Exit code of a runtime failure: records not confirmed, broker unreachable.
const EXIT_FAILURE: u8 = 1;

/// The exit codes, in the top command's `--help` (a macro, so that
/// `concat!` can take it).
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0  success; also tail stopped by Ctrl-C, --count, --timeout (without
     --count) or a closed pipe
  1  failure: records not confirmed or unroutable, broker unreachable,
     a doctor check failed (the configuration check included), setup
     found an incompatible exchange or queue, tail's --timeout ran out
     before --count records were printed
  2  usage or configuration error (bad flag, URI or LOGCOLLECT_* value)
  send -- COMMAND: the command's status when it failed (128+N when killed
     by signal N), else 1 if records were not confirmed, else 0;
     126 when COMMAND cannot be run, 127 when it is not found"
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "logcollect",
    version,
    about = "Ship records to the logcollect RabbitMQ exchange, watch it, check and set up the broker",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = concat!(
    "\
Examples:
  logcollect setup > /etc/logstash/conf.d/logcollect.conf
  logcollect doctor
  logcollect tail --level warning
  logcollect send -- ./backup.sh --full

Settings come from the LOGCOLLECT_* environment variables, as in the
library (LOGCOLLECT_BROKER_URI, LOGCOLLECT_EXCHANGE, LOGCOLLECT_ROUTING_KEY,
LOGCOLLECT_DURABLE, LOGCOLLECT_AUTO_DELETE, LOGCOLLECT_LEVEL,
LOGCOLLECT_SHUTDOWN_TIMEOUT, ...), plus LOGCOLLECT_QUEUE, LOGCOLLECT_PROFILE,
LOGCOLLECT_ELASTICSEARCH, LOGCOLLECT_IDENTITY_KEYS and LOGCOLLECT_COLOR for
the CLI's own settings; flags win over them. Passwords are never printed.

",
    exit_codes!()
);

#[derive(Debug, Subcommand)]
enum Command {
    /// Ship MESSAGE, each line of standard input, or each line a COMMAND
    /// prints, as records, and wait for the broker to confirm every one.
    #[command(after_help = send::AFTER_HELP)]
    Send(send::SendArgs),
    /// Print the records published to the exchange as they arrive.
    #[command(after_help = tail::AFTER_HELP)]
    Tail(tail::TailArgs),
    /// Check the way from here to Logstash: URI, TCP, login, vhost,
    /// exchange, bound queue, consumer, and a round trip.
    #[command(after_help = doctor::AFTER_HELP)]
    Doctor(doctor::DoctorArgs),
    /// Declare the exchange and Logstash's durable queue, bind it, and print
    /// the matching Logstash pipeline.
    #[command(after_help = setup::AFTER_HELP)]
    Setup(setup::SetupArgs),
    /// Print the completion script of a shell on standard output.
    #[command(after_help = COMPLETIONS_HELP)]
    Completions {
        /// bash, zsh, fish, elvish or powershell
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of logcollect, or of one of its commands,
    /// on standard output.
    #[command(after_help = MAN_HELP)]
    Man {
        /// send, tail, doctor, setup or completions [default: the page of
        /// logcollect itself, which lists them]
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
}

const COMPLETIONS_HELP: &str = "\
Examples:
  logcollect completions bash > /etc/bash_completion.d/logcollect
  logcollect completions zsh > \"${fpath[1]}/_logcollect\"
  logcollect completions fish > ~/.config/fish/completions/logcollect.fish";

const MAN_HELP: &str = "\
Examples:
  logcollect man | man -l -
  logcollect man send > /usr/local/share/man/man1/logcollect-send.1";

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Send(_) => "send",
            Command::Tail(_) => "tail",
            Command::Doctor(_) => "doctor",
            Command::Setup(_) => "setup",
            Command::Completions { .. } => "completions",
            Command::Man { .. } => "man",
        }
    }
}

/// The connection settings every command shares.
#[derive(Debug, Args)]
struct Common {
    /// Broker URI, Celery style; `;` separates a failover list
    /// [env: LOGCOLLECT_BROKER_URI] [default: amqp://guest:guest@127.0.0.1:5672//].
    /// Prefer the variable for a URI with a password: arguments are visible in `ps`.
    #[arg(long, value_name = "URI")]
    broker_uri: Option<String>,
    /// Exchange the records go to [env: LOGCOLLECT_EXCHANGE] [default: logstash]
    #[arg(long, value_name = "NAME")]
    exchange: Option<String>,
    /// Routing-key prefix; records are routed as <PREFIX>.<logger>
    /// [env: LOGCOLLECT_ROUTING_KEY] [default: logstash]
    #[arg(long, value_name = "PREFIX")]
    routing_key: Option<String>,
    /// Declare the exchange durable (`--durable=false` to override the
    /// environment) [env: LOGCOLLECT_DURABLE] [default: false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    durable: Option<bool>,
    /// Declare the exchange auto-delete [env: LOGCOLLECT_AUTO_DELETE] [default: false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    auto_delete: Option<bool>,
}

impl Common {
    /// The configuration: these flags, then `LOGCOLLECT_*` for what they
    /// leave unset (code settings win), with `adjust` applied last.
    fn config(
        &self,
        adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
    ) -> anyhow::Result<Config> {
        let mut builder = Config::builder();
        if let Some(uri) = &self.broker_uri {
            builder = builder.broker_uri(uri.clone());
        }
        if let Some(exchange) = &self.exchange {
            builder = builder.exchange(exchange.clone());
        }
        if let Some(routing_key) = &self.routing_key {
            builder = builder.routing_key(routing_key.clone());
        }
        if let Some(durable) = self.durable {
            builder = builder.durable(durable);
        }
        if let Some(auto_delete) = self.auto_delete {
            builder = builder.auto_delete(auto_delete);
        }
        Ok(adjust(builder.env()?).build()?)
    }
}

/// A `LOGCOLLECT_*` variable as `ConfigBuilder::env` reads it: blank is unset.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A setting only the CLI has: the flag, else the variable `var` (blank is
/// unset), else `default`. A bad variable is a usage error naming it.
fn setting<T>(
    flag: Option<T>,
    var: &str,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, UsageError> {
    if let Some(value) = flag {
        return Ok(value);
    }
    match env_value(var) {
        Some(text) => {
            parse(text.trim()).map_err(|why| UsageError(format!("{var}={text:?}: {why}")))
        }
        None => Ok(default),
    }
}

fn parse_level(s: &str) -> Result<Level, String> {
    s.parse().map_err(|_| {
        format!("unknown level {s:?}: expected trace, debug, info, warning, error or critical")
    })
}

/// `KEY=VALUE`, the key trimmed and not empty.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        Some(_) => Err(format!(
            "{s:?} has an empty key: expected KEY=VALUE, e.g. user=ann"
        )),
        None => Err(format!(
            "{s:?} has no '=': expected KEY=VALUE, e.g. user=ann"
        )),
    }
}

/// A mistake in how the command was called: exit code 2.
#[derive(Debug)]
struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A failure with an exit code of its own (`send -- COMMAND` that cannot
/// be run: 126 or 127).
#[derive(Debug)]
struct CodedError {
    code: u8,
    message: String,
}

impl fmt::Display for CodedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodedError {}

/// The exit code for a failure: 2 for usage and configuration errors, else 1.
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<UsageError>().is_some() {
        return EXIT_USAGE;
    }
    if let Some(coded) = err.downcast_ref::<CodedError>() {
        return coded.code;
    }
    match err
        .downcast_ref::<logcollect::Error>()
        .map(logcollect::Error::kind)
    {
        Some(ErrorKind::InvalidUri | ErrorKind::InvalidConfig | ErrorKind::InvalidEnv) => {
            EXIT_USAGE
        }
        _ => EXIT_FAILURE,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = cli.command.name();
    // Ok: the exit code, whatever needed saying said already.
    let result = match cli.command {
        Command::Send(args) => send::run(args),
        Command::Tail(args) => tail::run(args).map(|()| 0),
        Command::Doctor(args) => doctor::run(args),
        Command::Setup(args) => setup::run(args).map(|()| 0),
        Command::Completions { shell } => completions(shell).map(|()| 0),
        Command::Man { command } => man(command.as_deref()).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // Whoever read our output has seen enough (`tail | head -1`).
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // `eprintln!` panics when stderr is closed; there is nobody to tell then.
            let _ = writeln!(std::io::stderr(), "logcollect {name}: {}", chain_text(&err));
            ExitCode::from(exit_code(&err))
        }
    }
}

/// `logcollect completions SHELL`.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "logcollect", &mut text);
    print_all(&text)
}

/// `logcollect man [COMMAND]`: the page of the command, or of logcollect.
fn man(command: Option<&str>) -> anyhow::Result<()> {
    let top = Cli::command();
    let (page, title) = match command {
        None => (top, "logcollect".to_owned()),
        Some(name) => {
            let Some(sub) = top.find_subcommand(name) else {
                let names: Vec<&str> = top.get_subcommands().map(clap::Command::get_name).collect();
                return Err(UsageError(format!(
                    "no command {name:?}: expected one of {}",
                    names.join(", ")
                ))
                .into());
            };
            // Named as man pages of subcommands are: logcollect-send(1).
            let title = format!("logcollect-{}", sub.get_name());
            (sub.clone().version(env!("CARGO_PKG_VERSION")), title)
        }
    };
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .title(title)
        .render(&mut text)
        .context("cannot render the manual page")?;
    print_all(&text)
}

/// Writes `bytes` to standard output (a closed pipe is success, in `main`).
fn print_all(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

/// `err` and its causes, `: `-separated as `{:#}` writes them, but without
/// a cause whose text is already there: lapin's errors repeat their source
/// (`protocol error: AMQP soft error: X: AMQP soft error: X`).
fn chain_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// `1 message`, `2 messages`.
fn count(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Builds a single-threaded tokio runtime for one command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exit_codes() {
        let usage = anyhow::Error::new(UsageError("bad".into()));
        assert_eq!(exit_code(&usage), EXIT_USAGE);
        assert_eq!(exit_code(&usage.context("while doing x")), EXIT_USAGE);
        let bad_uri = Config::builder()
            .broker_uri("http://x")
            .build()
            .unwrap_err();
        assert_eq!(exit_code(&anyhow::Error::new(bad_uri)), EXIT_USAGE);
        let bad_level = Config::builder().level("loud").build().unwrap_err();
        assert_eq!(exit_code(&anyhow::Error::new(bad_level)), EXIT_USAGE);
        assert_eq!(exit_code(&anyhow::anyhow!("not confirmed")), EXIT_FAILURE);
    }

    #[test]
    fn chains_without_repeats() {
        let e = anyhow::anyhow!("inner")
            .context("outer: inner")
            .context("top");
        assert_eq!(chain_text(&e), "top: outer: inner");
        let e = anyhow::anyhow!("a").context("b");
        assert_eq!(chain_text(&e), "b: a");
    }

    #[test]
    fn settings_come_from_flag_then_variable_then_default() {
        let parse = |s: &str| s.parse::<u32>().map_err(|e| e.to_string());
        let unset = "LOGCOLLECT_TEST_SURELY_UNSET_VARIABLE";
        assert_eq!(setting(Some(1), unset, 3, parse).unwrap(), 1);
        assert_eq!(setting(None, unset, 3, parse).unwrap(), 3);
        // PATH is set in any test environment and is not a number.
        let e = setting(None, "PATH", 3, parse).unwrap_err().to_string();
        assert!(e.starts_with("PATH=\""), "{e}");
        assert_eq!(setting(Some(1), "PATH", 3, parse).unwrap(), 1);
    }

    #[test]
    fn key_values() {
        assert_eq!(parse_key_value("k=v"), Ok(("k".into(), "v".into())));
        assert_eq!(parse_key_value(" k =a=b"), Ok(("k".into(), "a=b".into())));
        assert_eq!(parse_key_value("k="), Ok(("k".into(), String::new())));
        assert!(parse_key_value("kv").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_key_value("=v").unwrap_err().contains("empty key"));
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("warning"), Ok(Level::Warning));
        assert_eq!(parse_level("WARN"), Ok(Level::Warning));
        assert_eq!(parse_level("critical"), Ok(Level::Critical));
        assert!(parse_level("loud").unwrap_err().contains("expected trace"));
        assert!(
            parse_level("off").is_err(),
            "off is a filter, not a record level"
        );
    }

    #[test]
    fn durable_flag_forms() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["logcollect", "send"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Send(a) => (a.common.durable, a.message),
                _ => unreachable!(),
            }
        };
        assert_eq!(parse(&["hi"]), (None, vec!["hi".to_owned()]));
        // Without `=`, the next word is the message, not the flag's value.
        assert_eq!(
            parse(&["--durable", "hi"]),
            (Some(true), vec!["hi".to_owned()])
        );
        assert_eq!(parse(&["--durable=no", "hi"]).0, Some(false));
        assert_eq!(parse(&["--durable=1", "hi"]).0, Some(true));
    }
}
