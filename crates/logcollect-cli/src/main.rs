//! `logcollect`: ship records from scripts and cron jobs (`send`) and watch
//! what reaches the exchange (`tail`).
//!
//! Both commands read the same `LOGCOLLECT_*` environment as the library
//! (`logcollect::ConfigBuilder::env`); command-line flags win over it.
//!
//! Exit codes: 0 success, 1 records not confirmed or another runtime
//! failure, 2 usage or configuration error. A closed standard output (`tail |
//! head -1`) is success, as in ripgrep.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod output;
mod send;
mod tail;

use std::fmt;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use logcollect::{Config, ConfigBuilder, ErrorKind};

/// Exit code of a usage or configuration error (clap uses it too).
const EXIT_USAGE: u8 = 2;
/// Exit code of a runtime failure: records not confirmed, broker unreachable.
const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "logcollect",
    version,
    about = "Ship records to the logcollect RabbitMQ exchange and watch it",
    after_help = "Settings come from the LOGCOLLECT_* environment variables \
                  (LOGCOLLECT_BROKER_URI, LOGCOLLECT_EXCHANGE, LOGCOLLECT_ROUTING_KEY, \
                  LOGCOLLECT_DURABLE, LOGCOLLECT_LEVEL, LOGCOLLECT_SHUTDOWN_TIMEOUT, ...); \
                  flags win over them.\n\n\
                  Exit codes: 0 success, 1 records not confirmed or broker failure, \
                  2 usage or configuration error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ship MESSAGE, or each line of standard input, as a record and wait
    /// for the broker to confirm every one.
    #[command(after_help = send::AFTER_HELP)]
    Send(send::SendArgs),
    /// Print the records published to the exchange as they arrive.
    #[command(after_help = tail::AFTER_HELP)]
    Tail(tail::TailArgs),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Send(_) => "send",
            Command::Tail(_) => "tail",
        }
    }
}

/// The connection settings both commands share.
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

/// A mistake in how the command was called: exit code 2.
#[derive(Debug)]
struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The exit code for a failure: 2 for usage and configuration errors, else 1.
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<UsageError>().is_some() {
        return EXIT_USAGE;
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
    let result = match cli.command {
        Command::Send(args) => send::run(args),
        Command::Tail(args) => tail::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output has seen enough (`tail | head -1`).
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // `eprintln!` panics when stderr is closed; there is nobody to tell then.
            let _ = writeln!(std::io::stderr(), "logcollect {name}: {err:#}");
            ExitCode::from(exit_code(&err))
        }
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
    use clap::CommandFactory as _;

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
    fn durable_flag_forms() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["logcollect", "send"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Send(a) => (a.common.durable, a.message),
                Command::Tail(_) => unreachable!(),
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
