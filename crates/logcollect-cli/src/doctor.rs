//! `logcollect doctor`: the way from here to Logstash, checked step by step,
//! one line per check, each failure with its fix.
//!
//! Everything goes through AMQP, so it works against any broker the
//! applications can reach (the management HTTP API is often not exposed).
//! Two records are published to the real exchange, both with logger
//! `logcollect.doctor`: the binding probe and the round trip. They reach
//! Logstash like any record, and are encoded by the library (in the
//! configured profile), so they are what an application would send;
//! `--no-publish` leaves both out.

use std::fmt;
use std::io::{self, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures_util::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::protocol::AMQPSoftError;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation, Connection, ExchangeKind};
use logcollect::amqp::is_soft_error;
use logcollect::{BrokerUri, Config, Level, Record};

use crate::broker::{self, Inequivalent};
use crate::shards::{self, Shards};
use crate::style::{self, ColorChoice, Style};
use crate::{setting, Common, EXIT_FAILURE};

/// The logger of the records doctor publishes; the routing key is
/// `<routing_key>.logcollect.doctor`.
pub(crate) const DOCTOR_LOGGER: &str = "logcollect.doctor";
/// The round trip's message, so it is easy to find (and ignore) in Kibana.
pub(crate) const ROUND_TRIP_MESSAGE: &str = "logcollect doctor round trip";
/// The binding probe's message.
const PROBE_MESSAGE: &str = "logcollect doctor binding probe";
/// Default bound on each check's wait for the broker. A healthy local broker
/// answers in milliseconds; 5 s leaves room for a remote one, and the whole
/// run stays short when something hangs.
const DEFAULT_TIMEOUT_SECS: f64 = 5.0;

pub(crate) const AFTER_HELP: &str = "\
Examples:
  logcollect doctor
  LOGCOLLECT_BROKER_URI='amqps://app:secret@rabbit.example//logs' logcollect doctor
  logcollect doctor --queue logstash-prod --timeout 10
  logcollect doctor --shards 4
  logcollect doctor --no-publish
  logcollect doctor --json | jq -r 'select(.status == \"fail\") | .fix'

Checks, in order, one line each (✓ passed, ✗ failed with the fix, - skipped
because an earlier check failed):
  configuration   the settings and the broker URI parse
  TCP host:port   every broker of the failover list is reachable
  AMQP login      the user and password are accepted
  vhost           the vhost exists and the user may use it
  exchange        it is a topic exchange with the expected durable and
                  auto-delete settings (a missing one is fine: the
                  applications declare it on first connect)
  binding         a queue is bound for <routing-key>.logcollect.doctor
                  (a probe published with `mandatory` is not returned)
  consumer        the queue Logstash reads (--queue) has a consumer
  shards          with --shards N (the layout of `setup --shards N`), instead
                  of the consumer check: the consistent-hash exchange
                  <queue>.shards exists and its plugin is enabled...
  consumer <q>    ...and every shard queue <queue>-shard-1 to -N has a
                  consumer
  round trip      a record published to the exchange comes back on a
                  temporary queue bound with its exact routing key

Both the probe and the round-trip record (logger logcollect.doctor, message
`logcollect doctor round trip`) also reach Logstash's queue, like any record;
they are encoded by the library in the configured profile (LOGCOLLECT_PROFILE),
exactly as an application would send them. --no-publish publishes nothing
(binding and round trip are then skipped).
The password is never printed.

Exits 0 when every check passes, 1 when one fails (the configuration check
included), 2 on a usage error in doctor's own flags.";

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    common: Common,
    /// The queue Logstash consumes, checked for a consumer
    /// [env: LOGCOLLECT_QUEUE] [default: logstash]
    #[arg(long, value_name = "NAME")]
    queue: Option<String>,
    /// Check the layout of `setup --shards N` instead of one queue: the
    /// consistent-hash exchange and its plugin, and a consumer on every shard
    /// (1: the one queue, as without the flag)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=i64::from(shards::MAX_SHARDS)))]
    shards: Option<u16>,
    /// Publish nothing (for a production exchange whose every record
    /// reaches Elasticsearch): the binding and round-trip checks are skipped
    #[arg(long)]
    no_publish: bool,
    /// How long each check may wait for the broker, in seconds [default: 5]
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// Colour: auto (when standard output is a terminal and NO_COLOR is not
    /// set), always or never [env: LOGCOLLECT_COLOR] [default: auto]
    #[arg(long, value_name = "WHEN")]
    color: Option<ColorChoice>,
    /// One JSON object per line instead of text: {"check", "status" (pass,
    /// fail or skip), "detail", "fix"}, then {"passed", "failed"}
    #[arg(long)]
    json: bool,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 3600.0 => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 3600")),
    }
}

pub(crate) fn run(args: DoctorArgs) -> anyhow::Result<u8> {
    let color = setting(args.color, "LOGCOLLECT_COLOR", ColorChoice::Auto, |s| {
        <ColorChoice as clap::ValueEnum>::from_str(s, true)
    })?;
    let queue = crate::setup::queue_name(args.queue)?;
    // One shard is the one queue (`setup --shards 1` keeps it).
    let shards = args
        .shards
        .filter(|n| *n > 1)
        .map(|n| Shards::new(&queue, n))
        .transpose()?;
    let timeout = args
        .timeout
        .unwrap_or(Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS));
    let mut report = Report {
        style: Style::new(color.enabled()),
        json: args.json,
        failed: 0,
        passed: 0,
    };
    let config = match args.common.config(|b| b) {
        Ok(config) => config,
        Err(e) => {
            report.fail(
                "configuration",
                crate::chain_text(&e),
                "correct the flag or LOGCOLLECT_* variable named above",
            )?;
            for check in [
                "TCP",
                "AMQP login",
                "vhost",
                "exchange",
                "binding",
                "consumer",
                "round trip",
            ] {
                report.skip(check, "no usable configuration")?;
            }
            // A failed check like any other (the configuration is what
            // doctor is asked to check), so 1, not the usual 2.
            return Ok(EXIT_FAILURE);
        }
    };
    let brokers = config.brokers();
    report.pass(
        "configuration",
        format!(
            "broker URI {} parses ({} broker{} in the failover list); exchange {:?}, routing keys {}.<logger>",
            brokers.first(),
            brokers.len(),
            if brokers.len() == 1 { "" } else { "s" },
            config.exchange(),
            config.routing_key()
        ),
    )?;
    let doctor = Doctor {
        config: &config,
        no_publish: args.no_publish,
        queue,
        shards,
        timeout,
    };
    crate::runtime()?.block_on(doctor.checks(&mut report))?;
    report.summary()?;
    Ok(if report.failed == 0 { 0 } else { EXIT_FAILURE })
}

/// The lines printed so far.
#[derive(Debug)]
struct Report {
    style: Style,
    /// `--json`: one object per line.
    json: bool,
    failed: usize,
    passed: usize,
}

impl Report {
    /// One check's line as JSON.
    fn json_line(
        &mut self,
        check: &str,
        status: &str,
        detail: String,
        fix: Option<String>,
    ) -> anyhow::Result<()> {
        let line = serde_json::json!({
            "check": check,
            "status": status,
            "detail": detail,
            "fix": fix,
        });
        self.print(&line.to_string())
    }

    fn pass(&mut self, check: &str, what: impl fmt::Display) -> anyhow::Result<()> {
        self.passed += 1;
        if self.json {
            return self.json_line(check, "pass", what.to_string(), None);
        }
        let mark = self.style.paint(style::GREEN, "✓");
        self.print(&format!("{mark} {check}: {what}"))
    }

    fn fail(
        &mut self,
        check: &str,
        what: impl fmt::Display,
        fix: impl fmt::Display,
    ) -> anyhow::Result<()> {
        self.failed += 1;
        if self.json {
            return self.json_line(check, "fail", what.to_string(), Some(fix.to_string()));
        }
        let mark = self.style.paint(style::RED, "✗");
        self.print(&format!("{mark} {check}: {what} — fix: {fix}"))
    }

    fn skip(&mut self, check: &str, why: &str) -> anyhow::Result<()> {
        if self.json {
            return self.json_line(check, "skip", why.to_owned(), None);
        }
        let mark = self.style.paint(style::DIM, "-");
        self.print(&format!("{mark} {check}: skipped ({why})"))
    }

    fn summary(&mut self) -> anyhow::Result<()> {
        if self.json {
            let line = serde_json::json!({"passed": self.passed, "failed": self.failed});
            return self.print(&line.to_string());
        }
        let text = if self.failed == 0 {
            format!("all {} checks passed", self.passed)
        } else {
            format!(
                "{} check{} failed, {} passed",
                self.failed,
                if self.failed == 1 { "" } else { "s" },
                self.passed
            )
        };
        self.print(&text)
    }

    fn print(&mut self, line: &str) -> anyhow::Result<()> {
        let mut out = io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .context("cannot write to standard output")
    }
}

/// How an AMQP connection attempt ended.
enum Login {
    Open(Connection),
    /// The user name or password was refused.
    Refused(String),
    /// Logged in, but the vhost is missing or forbidden.
    Vhost(String),
    /// Anything else (timeout, TLS…), in words.
    Failed(String),
}

/// What the exchange check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExchangeState {
    /// Exists (with the expected settings or not): publishing works.
    Exists,
    /// Does not exist yet.
    Missing,
    /// Unusable (no permission…).
    Unusable,
}

struct Doctor<'a> {
    config: &'a Config,
    /// `--no-publish`.
    no_publish: bool,
    queue: String,
    /// `--shards`: check these queues, not `queue`.
    shards: Option<Shards>,
    timeout: Duration,
}

impl Doctor<'_> {
    async fn checks(&self, report: &mut Report) -> anyhow::Result<()> {
        let mut reachable = Vec::new();
        for broker in self.config.brokers().iter() {
            let check = format!("TCP {}", broker.address());
            match self.tcp(broker).await {
                Ok(elapsed) => {
                    report.pass(&check, format!("reachable ({})", millis(elapsed)))?;
                    reachable.push(broker);
                }
                Err((what, fix)) => report.fail(&check, what, fix)?,
            }
        }
        let Some((&broker, others)) = reachable.split_first() else {
            for check in [
                "AMQP login",
                "vhost",
                "exchange",
                "binding",
                "consumer",
                "round trip",
            ] {
                report.skip(check, "no broker reachable")?;
            }
            return Ok(());
        };
        let user = broker.user();
        let vhost = broker.vhost();
        let conn = match self.login(broker).await {
            Login::Open(conn) => {
                report.pass(
                    "AMQP login",
                    format!("user {user:?} logged in at {}", broker.address()),
                )?;
                report.pass("vhost", format!("{vhost:?} is open to user {user:?}"))?;
                conn
            }
            Login::Refused(said) => {
                report.fail(
                    "AMQP login",
                    format!("{} refused user {user:?} ({said})", broker.address()),
                    "check the user name and password in LOGCOLLECT_BROKER_URI (percent-encode \
                     @ : / ? # ; in them); RabbitMQ's guest user may only log in from localhost",
                )?;
                for check in ["vhost", "exchange", "binding", "consumer", "round trip"] {
                    report.skip(check, "not logged in")?;
                }
                return Ok(());
            }
            Login::Vhost(said) => {
                report.pass(
                    "AMQP login",
                    format!("user {user:?} accepted by {}", broker.address()),
                )?;
                if said.contains("not found") {
                    report.fail(
                        "vhost",
                        format!("{vhost:?} does not exist ({said})"),
                        format!(
                            "create it (`rabbitmqctl add_vhost {vhost}`) or correct the URI's \
                             path: amqp://host//name is vhost /name, amqp://host/name is name"
                        ),
                    )?;
                } else {
                    report.fail(
                        "vhost",
                        format!("user {user:?} may not use vhost {vhost:?} ({said})"),
                        format!(
                            "grant access: rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*'"
                        ),
                    )?;
                }
                for check in ["exchange", "binding", "consumer", "round trip"] {
                    report.skip(check, "vhost not open")?;
                }
                return Ok(());
            }
            Login::Failed(why) => {
                report.fail(
                    "AMQP login",
                    format!("{}: {why}", broker.address()),
                    "check that this is RabbitMQ's AMQP port (5672, or 5671 for amqps://) and \
                     the TLS settings (LOGCOLLECT_TLS_CA_FILE)",
                )?;
                for check in ["vhost", "exchange", "binding", "consumer", "round trip"] {
                    report.skip(check, "no AMQP connection")?;
                }
                return Ok(());
            }
        };
        let result = self.on_connection(&conn, broker, report).await;
        broker::close(&conn, "logcollect doctor done").await;
        result?;
        // The failover list's other brokers: the applications move to them
        // after a loss, so they must let the same user in too.
        for other in others {
            self.other_login(other, report).await?;
        }
        Ok(())
    }

    /// Login and vhost at a broker of the failover list other than the one
    /// checked in full, on one line.
    async fn other_login(&self, broker: &BrokerUri, report: &mut Report) -> anyhow::Result<()> {
        let check = format!("AMQP login {}", broker.address());
        let (user, vhost) = (broker.user(), broker.vhost());
        match self.login(broker).await {
            Login::Open(conn) => {
                broker::close(&conn, "logcollect doctor done").await;
                report.pass(
                    &check,
                    format!("user {user:?} logged in, vhost {vhost:?} open (failover broker)"),
                )
            }
            Login::Refused(said) => report.fail(
                &check,
                format!("refused user {user:?} ({said})"),
                "give this broker the same users as the first (a cluster shares them; separate \
                 brokers need `rabbitmqctl add_user`)",
            ),
            Login::Vhost(said) => report.fail(
                &check,
                format!("user {user:?} cannot use vhost {vhost:?} here ({said})"),
                format!(
                    "create the vhost and grant access on this broker: rabbitmqctl add_vhost \
                     {vhost}; rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*'"
                ),
            ),
            Login::Failed(why) => report.fail(
                &check,
                why,
                "check that this is RabbitMQ's AMQP port and the TLS settings",
            ),
        }
    }

    async fn on_connection(
        &self,
        conn: &Connection,
        broker: &BrokerUri,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let exchange = self.exchange(conn, report).await?;
        let key = logcollect::amqp::routing_key(self.config, DOCTOR_LOGGER);
        let ex = self.config.exchange();
        match exchange {
            ExchangeState::Exists if self.no_publish => {
                report.skip("binding", "--no-publish: only a published probe can tell")?;
            }
            ExchangeState::Exists => match self.bounded(self.probe(conn, &key)).await {
                Ok(Confirmation::Ack(None)) => report.pass(
                    "binding",
                    format!("a queue is bound to exchange {ex:?} for routing key {key}"),
                )?,
                Ok(Confirmation::Ack(Some(_))) => report.fail(
                    "binding",
                    format!(
                        "no queue is bound to exchange {ex:?} for routing key {key}: the broker \
                         drops every record"
                    ),
                    format!(
                        "run `logcollect setup` (binds queue {:?} with {}.#)",
                        self.queue,
                        self.config.routing_key()
                    ),
                )?,
                Ok(_) => report.fail(
                    "binding",
                    "the broker refused the probe (nack)",
                    "look at the broker's log: a disk or memory alarm?",
                )?,
                Err(why) => report.fail(
                    "binding",
                    format!("cannot publish to exchange {ex:?}: {why}"),
                    "grant the user write permission on the exchange",
                )?,
            },
            ExchangeState::Missing => report.fail(
                "binding",
                format!("no queue is bound: exchange {ex:?} does not exist yet"),
                "run `logcollect setup`",
            )?,
            ExchangeState::Unusable => report.skip("binding", "exchange unusable")?,
        }
        match &self.shards {
            None => self.consumer(conn, report, "consumer", &self.queue).await?,
            Some(shards) => {
                self.shard_exchange(conn, broker, shards, report).await?;
                for (_, queue) in shards.queues() {
                    self.consumer(conn, report, &format!("consumer {queue}"), &queue)
                        .await?;
                }
            }
        }
        if self.no_publish {
            report.skip("round trip", "--no-publish")?;
        } else if exchange == ExchangeState::Exists {
            match self.bounded(self.round_trip(conn, &key)).await {
                Ok(elapsed) => report.pass(
                    "round trip",
                    format!(
                        "a record published to {key} came back in {}",
                        millis(elapsed)
                    ),
                )?,
                Err(why) => report.fail(
                    "round trip",
                    why,
                    "look at the broker's log; retry with a longer --timeout",
                )?,
            }
        } else {
            report.skip("round trip", "no usable exchange")?;
        }
        Ok(())
    }

    /// Resolves and connects; the time the connection took.
    async fn tcp(&self, broker: &BrokerUri) -> Result<Duration, (String, String)> {
        let address = broker.address();
        let host_port = (broker.host().to_owned(), broker.port());
        let resolved = tokio::time::timeout(self.timeout, tokio::net::lookup_host(host_port)).await;
        let addrs: Vec<_> = match resolved {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                return Err((
                    format!("cannot resolve host {:?}: {e}", broker.host()),
                    "check the host name in LOGCOLLECT_BROKER_URI and DNS".to_owned(),
                ))
            }
            Err(_) => {
                return Err((
                    format!(
                        "no DNS answer for {:?} within {:?}",
                        broker.host(),
                        self.timeout
                    ),
                    "check DNS".to_owned(),
                ))
            }
        };
        let mut last = String::from("no address");
        for addr in addrs {
            let start = Instant::now();
            match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_stream)) => return Ok(start.elapsed()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err((
                        format!("connection refused at {address}"),
                        "start RabbitMQ there, or correct the host and port in \
                         LOGCOLLECT_BROKER_URI"
                            .to_owned(),
                    ))
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer within {:?}", self.timeout),
            }
        }
        Err((
            format!("cannot connect to {address}: {last}"),
            "check the host, the port and the network path (a firewall dropping packets?)"
                .to_owned(),
        ))
    }

    async fn login(&self, broker: &BrokerUri) -> Login {
        use logcollect::amqp::ConnectErrorKind;
        let name = format!("logcollect doctor pid {}", std::process::id());
        match logcollect::amqp::connect_within(self.config, broker, &name, self.timeout).await {
            Ok(conn) => Login::Open(conn),
            Err(e) => {
                let said = e.broker_said().map_or_else(|| e.to_string(), str::to_owned);
                match e.kind() {
                    ConnectErrorKind::LoginRefused => Login::Refused(said),
                    ConnectErrorKind::VhostNotAllowed => Login::Vhost(said),
                    _ => Login::Failed(e.to_string()),
                }
            }
        }
    }

    async fn exchange(
        &self,
        conn: &Connection,
        report: &mut Report,
    ) -> anyhow::Result<ExchangeState> {
        let ex = self.config.exchange();
        let wanted = format!(
            "topic, durable={}, auto_delete={}",
            self.config.durable(),
            self.config.auto_delete()
        );
        // Passive first: it tells "missing" apart, and ignores type and flags.
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let found = self.declare_exchange(conn, ex, passive).await;
        match found {
            Ok(()) => {}
            Err(Failure::Amqp(e)) if is_soft_error(&e, AMQPSoftError::NOTFOUND) => {
                report.pass(
                    "exchange",
                    format!(
                        "{ex:?} does not exist yet: it will be declared on first connect ({wanted})"
                    ),
                )?;
                return Ok(ExchangeState::Missing);
            }
            Err(why) => {
                report.fail(
                    "exchange",
                    format!("cannot look up exchange {ex:?}: {why}"),
                    "grant the user permissions on the vhost (rabbitmqctl set_permissions)",
                )?;
                return Ok(ExchangeState::Unusable);
            }
        }
        // It exists: declaring it as the applications do is a no-op when it
        // matches, and PRECONDITION_FAILED (saying what differs) when not.
        let options = ExchangeDeclareOptions {
            durable: self.config.durable(),
            auto_delete: self.config.auto_delete(),
            ..ExchangeDeclareOptions::default()
        };
        let declared = self.declare_exchange(conn, ex, options).await;
        match declared {
            Ok(()) => report.pass("exchange", format!("{ex:?} exists ({wanted})"))?,
            Err(Failure::Amqp(e))
                if is_soft_error(&e, AMQPSoftError::PRECONDITIONFAILED) =>
            {
                let said = broker::reason(&e);
                match Inequivalent::parse(&said) {
                    Some(diff) if diff.arg == "type" => report.fail(
                        "exchange",
                        format!(
                            "{ex:?} is a {} exchange; logcollect routes by topic ({said})",
                            diff.current
                        ),
                        format!(
                            "delete it (management UI, or `rabbitmqadmin delete exchange \
                             name={ex}`) and run `logcollect setup`, or use another \
                             LOGCOLLECT_EXCHANGE"
                        ),
                    )?,
                    Some(diff) => report.fail(
                        "exchange",
                        format!(
                            "{ex:?} has {} {} where the applications declare {}; they publish to \
                             it as it is, with a warning on every connect",
                            diff.arg, diff.current, diff.wanted
                        ),
                        format!(
                            "set LOGCOLLECT_{}={} for the applications (and here), or delete the \
                             exchange and run `logcollect setup`",
                            diff.arg.to_ascii_uppercase(),
                            diff.current
                        ),
                    )?,
                    None => report.fail(
                        "exchange",
                        format!("{ex:?} exists with other settings than {wanted} ({said})"),
                        "delete it and run `logcollect setup`, or match its settings",
                    )?,
                }
            }
            Err(why) => report.fail(
                "exchange",
                format!("{ex:?} exists but cannot be declared: {why}; the applications declare it on every connect"),
                "grant the user configure permission on it (rabbitmqctl set_permissions)",
            )?,
        }
        Ok(ExchangeState::Exists)
    }

    /// Publishes the binding probe with `mandatory`: returned means unroutable.
    async fn probe(&self, conn: &Connection, key: &str) -> Result<Confirmation, Failure> {
        let channel = logcollect::amqp::confirm_channel(conn).await?;
        let (body, properties, _) = self.record(PROBE_MESSAGE)?;
        let confirm = channel
            .basic_publish(
                self.config.exchange().into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &body,
                properties,
            )
            .await?
            .await?;
        Ok(confirm)
    }

    async fn consumer(
        &self,
        conn: &Connection,
        report: &mut Report,
        check: &str,
        queue: &str,
    ) -> anyhow::Result<()> {
        let setup = match &self.shards {
            None => "logcollect setup".to_owned(),
            Some(s) => format!("logcollect setup --shards {}", s.count()),
        };
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let found = self
            .bounded(async {
                let channel = conn.create_channel().await?;
                channel
                    .queue_declare(queue.into(), passive, FieldTable::default())
                    .await
            })
            .await;
        match found {
            Ok(q) if q.consumer_count() > 0 => report.pass(
                check,
                format!(
                    "queue {queue:?} has {} ({} waiting)",
                    crate::count(q.consumer_count(), "consumer"),
                    crate::count(q.message_count(), "message")
                ),
            ),
            Ok(q) => report.fail(
                check,
                format!(
                    "queue {queue:?} has no consumer ({} waiting)",
                    crate::count(q.message_count(), "message")
                ),
                format!(
                    "is Logstash running? Its rabbitmq input must consume queue {queue:?} \
                     (`{setup} --print-only` prints the pipeline)"
                ),
            ),
            Err(Failure::Amqp(e)) if is_soft_error(&e, AMQPSoftError::NOTFOUND) => report.fail(
                check,
                format!("queue {queue:?} does not exist"),
                format!("run `{setup}`, or give the queue Logstash consumes with --queue"),
            ),
            Err(why) => report.fail(
                check,
                format!("cannot look up queue {queue:?}: {why}"),
                "grant the user permissions on the vhost (rabbitmqctl set_permissions)",
            ),
        }
    }

    /// The consistent-hash exchange of `setup --shards`: it exists, and
    /// declaring it as setup does works, which proves the plugin is enabled
    /// (a broker without it closes the connection: a connection of its own).
    async fn shard_exchange(
        &self,
        conn: &Connection,
        broker: &BrokerUri,
        shards: &Shards,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let hash = shards.exchange();
        let setup = format!("run `logcollect setup --shards {}`", shards.count());
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        match self.declare_exchange(conn, &hash, passive).await {
            Ok(()) => {}
            Err(Failure::Amqp(e)) if is_soft_error(&e, AMQPSoftError::NOTFOUND) => {
                return report.fail(
                    "shards",
                    format!("exchange {hash:?} does not exist: no record reaches the shards"),
                    setup,
                );
            }
            Err(why) => {
                return report.fail(
                    "shards",
                    format!("cannot look up exchange {hash:?}: {why}"),
                    "grant the user permissions on the vhost (rabbitmqctl set_permissions)",
                );
            }
        }
        let name = format!("logcollect doctor pid {} (shards)", std::process::id());
        let own = match logcollect::amqp::connect_within(self.config, broker, &name, self.timeout)
            .await
        {
            Ok(own) => own,
            Err(e) => {
                return report.fail(
                    "shards",
                    format!("cannot open a second connection to check exchange {hash:?}: {e}"),
                    "retry with a longer --timeout",
                )
            }
        };
        let declared = self
            .bounded(async {
                let channel = own.create_channel().await?;
                shards.declare_exchange(&channel).await
            })
            .await;
        broker::close(&own, "logcollect doctor done").await;
        match declared {
            Ok(()) => report.pass(
                "shards",
                format!(
                    "exchange {hash:?} is a {} exchange (plugin {} enabled), hashing {}",
                    shards::EXCHANGE_TYPE,
                    shards::PLUGIN,
                    shards::HASH_PROPERTY
                ),
            ),
            Err(Failure::Amqp(e)) if shards::is_unknown_exchange_type(&broker::reason(&e)) => {
                report.fail(
                    "shards",
                    format!(
                        "the broker has no {} exchange type ({}): exchange {hash:?} routes nothing",
                        shards::EXCHANGE_TYPE,
                        broker::reason(&e)
                    ),
                    shards::enable_plugin(),
                )
            }
            Err(Failure::Amqp(e)) if is_soft_error(&e, AMQPSoftError::PRECONDITIONFAILED) => report
                .fail(
                    "shards",
                    format!(
                        "exchange {hash:?} is not what setup declares ({})",
                        broker::reason(&e)
                    ),
                    format!("delete it (`rabbitmqadmin delete exchange name={hash}`) and {setup}"),
                ),
            Err(why) => report.fail(
                "shards",
                format!("cannot declare exchange {hash:?}: {why}"),
                "grant the user configure permission on it (rabbitmqctl set_permissions)",
            ),
        }
    }

    /// A temporary queue bound with the exact routing key, one record
    /// published, and the time until it came back.
    async fn round_trip(&self, conn: &Connection, key: &str) -> Result<Duration, Failure> {
        let channel = logcollect::amqp::confirm_channel(conn).await?;
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let queue = channel
            .queue_declare(ShortString::default(), options, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                self.config.exchange().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consume = BasicConsumeOptions {
            no_ack: true,
            exclusive: true,
            ..BasicConsumeOptions::default()
        };
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                ShortString::default(),
                consume,
                FieldTable::default(),
            )
            .await?;
        let (body, properties, id) = self.record(ROUND_TRIP_MESSAGE)?;
        let start = Instant::now();
        let confirm = channel
            .basic_publish(
                self.config.exchange().into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &body,
                properties,
            )
            .await?
            .await?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            return Err(Failure::Other(format!(
                "the broker did not route the record to the temporary queue ({confirm:?})"
            )));
        }
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery?;
            let ours = delivery
                .properties
                .message_id()
                .as_ref()
                .is_some_and(|m| m.as_str() == id);
            if ours {
                return Ok(start.elapsed());
            }
        }
        Err(Failure::Other(
            "the broker ended the temporary queue's subscription".to_owned(),
        ))
    }

    /// The record the library's shipper would publish for `message` (logger
    /// `logcollect.doctor`, level info), in the configured profile, with its
    /// AMQP properties and its id.
    fn record(&self, message: &str) -> Result<(Vec<u8>, BasicProperties, String), Failure> {
        let record = Record::new(Level::Info, DOCTOR_LOGGER, message);
        let encoded = logcollect::amqp::encode_record(self.config, &record)
            .ok_or_else(|| Failure::Other("the library did not encode the record".to_owned()))?;
        let properties = logcollect::amqp::message_properties(self.config, &encoded.id);
        Ok((
            encoded.body,
            properties,
            encoded.id.hyphenated().to_string(),
        ))
    }

    /// `work`, or a failure after `--timeout`.
    /// Declares `ex` as a topic exchange with `options` on a fresh channel
    /// (a refused declaration closes its channel), within the time limit.
    async fn declare_exchange(
        &self,
        conn: &Connection,
        ex: &str,
        options: ExchangeDeclareOptions,
    ) -> Result<(), Failure> {
        self.bounded(async {
            let channel = conn.create_channel().await?;
            channel
                .exchange_declare(
                    ex.into(),
                    ExchangeKind::Topic,
                    options,
                    FieldTable::default(),
                )
                .await
        })
        .await
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, impl Into<Failure>>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(Failure::Other(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

/// Why one check's conversation with the broker failed.
#[derive(Debug)]
enum Failure {
    Amqp(lapin::Error),
    Other(String),
}

impl From<lapin::Error> for Failure {
    fn from(e: lapin::Error) -> Failure {
        Failure::Amqp(e)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Amqp(e) => f.write_str(&broker::reason(e)),
            Failure::Other(text) => f.write_str(text),
        }
    }
}

/// `3.2 ms`.
fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }
}
