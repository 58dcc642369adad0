//! The Logstash pipeline `setup` prints: a `rabbitmq` input that consumes
//! the queue setup declares, and an `elasticsearch` output that
//! de-duplicates by record id. Pure text, no I/O.
//!
//! Option names are the rabbitmq input plugin's (logstash-integration-
//! rabbitmq). Two of its behaviours shape the text: with `exchange_type`
//! set it declares the exchange itself, with its `durable` (the queue's) and
//! `auto_delete => false`; and it declares the queue with `arguments`, which
//! RabbitMQ requires to equal the existing queue's.

use clap::ValueEnum;
use logcollect::{BrokerList, BrokerUri};

/// Logstash's `codec` for the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Codec {
    /// One record, or a JSON array of records, per message.
    #[value(name = "json")]
    Json,
    /// Newline-delimited records (`LOGCOLLECT_BATCH_FORMAT=json_lines`).
    #[value(name = "json_lines")]
    JsonLines,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::JsonLines => "json_lines",
        }
    }
}

/// The record layout the applications send, which decides where the
/// record id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Profile {
    /// Python logcollect's fields: the id is `record_id`.
    #[value(name = "logcollect")]
    Logcollect,
    /// Elastic Common Schema: the id is `event.id`.
    #[value(name = "ecs")]
    Ecs,
}

impl Profile {
    /// The record id as a Logstash field reference.
    fn id_field(self) -> &'static str {
        match self {
            Profile::Logcollect => "[record_id]",
            Profile::Ecs => "[event][id]",
        }
    }
}

/// Logstash's durable queue, as `setup` declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueSpec {
    pub(crate) name: String,
    /// `x-max-length`: beyond it RabbitMQ drops the oldest records.
    pub(crate) max_length: Option<u64>,
    /// `x-queue-type=quorum`: replicated across a cluster.
    pub(crate) quorum: bool,
}

/// One queue argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArgValue {
    Int(u64),
    Text(&'static str),
}

impl QueueSpec {
    /// The queue's arguments, in a stable order.
    pub(crate) fn arguments(&self) -> Vec<(&'static str, ArgValue)> {
        let mut args = Vec::new();
        if let Some(n) = self.max_length {
            args.push(("x-max-length", ArgValue::Int(n)));
        }
        if self.quorum {
            args.push(("x-queue-type", ArgValue::Text("quorum")));
        }
        args
    }
}

/// Where a pipeline's queue gets its records from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source<'a> {
    /// Bound to the topic exchange with `<routing_key>.#`: every record.
    Topic,
    /// One shard of `count`: bound with weight [`SHARD_WEIGHT`] to the
    /// consistent-hash exchange `exchange`, which spreads the records over
    /// the shards by message id.
    Shard {
        exchange: &'a str,
        index: u16,
        count: u16,
    },
}

/// The binding key of a shard queue on the consistent-hash exchange: its
/// weight, the number of hash buckets it owns. Every shard gets the same
/// weight, hence the same share of the records.
pub(crate) const SHARD_WEIGHT: &str = "1";

/// Everything the pipeline says.
#[derive(Debug)]
pub(crate) struct Pipeline<'a> {
    pub(crate) brokers: &'a BrokerList,
    pub(crate) exchange: &'a str,
    pub(crate) exchange_durable: bool,
    pub(crate) exchange_auto_delete: bool,
    pub(crate) routing_key: &'a str,
    pub(crate) queue: &'a QueueSpec,
    pub(crate) source: Source<'a>,
    pub(crate) codec: Codec,
    pub(crate) profile: Profile,
    /// Elasticsearch URLs.
    pub(crate) elasticsearch: &'a [String],
}

/// Lines of Logstash configuration, two spaces per level.
struct Lines(String);

impl Lines {
    fn line(&mut self, indent: usize, text: &str) {
        self.0.push_str(&"  ".repeat(indent));
        self.0.push_str(text);
        self.0.push('\n');
    }
}

impl Pipeline<'_> {
    /// The binding key: every logger under the routing-key prefix.
    pub(crate) fn key(&self) -> String {
        format!("{}.#", self.routing_key)
    }

    /// The pipeline as a file of its own (`conf.d/logcollect.conf`): what it
    /// reads, a word on Logstash's persistent queue, then the pipeline.
    pub(crate) fn render(&self) -> String {
        let mut out = Lines(String::new());
        out.line(
            0,
            "# Logstash pipeline for logcollect, as printed by `logcollect setup`.",
        );
        self.describe(&mut out);
        for text in [
            "# Give it a persistent queue (queue.type: persisted in logstash.yml, or for this",
            "# pipeline in pipelines.yml; `logcollect setup --shards 1` prints one): the rabbitmq",
            "# input acknowledges a message once its event is in Logstash's queue, so with the",
            "# default in-memory queue a crash of Logstash loses the events it holds.",
        ] {
            out.line(0, text);
        }
        self.body(&mut out);
        out.0
    }

    /// The pipeline alone, for `config.string` in pipelines.yml.
    pub(crate) fn render_body(&self) -> String {
        let mut out = Lines(String::new());
        self.describe(&mut out);
        self.body(&mut out);
        out.0
    }

    /// Comment lines: where the records come from.
    fn describe(&self, out: &mut Lines) {
        out.line(
            0,
            &format!(
                "# Records arrive on topic exchange {} with routing keys {}.<logger>;",
                quote(self.exchange),
                self.routing_key
            ),
        );
        match self.source {
            Source::Topic => out.line(
                0,
                &format!(
                    "# durable queue {} keeps them while Logstash is away.",
                    quote(&self.queue.name)
                ),
            ),
            Source::Shard {
                exchange,
                index,
                count,
            } => {
                out.line(
                    0,
                    &format!(
                        "# consistent-hash exchange {} spreads them by message id over {count} queues;",
                        quote(exchange)
                    ),
                );
                out.line(
                    0,
                    &format!(
                        "# this is shard {index} of {count}: durable queue {} keeps its share while",
                        quote(&self.queue.name)
                    ),
                );
                out.line(0, "# Logstash is away.");
            }
        }
    }

    fn body(&self, out: &mut Lines) {
        out.line(0, "input {");
        out.line(1, "rabbitmq {");
        self.connection(out);
        self.queue_lines(out);
        self.codec(out);
        out.line(1, "}");
        out.line(0, "}");
        self.output(out);
    }

    /// Where the broker is and who logs in.
    fn connection(&self, out: &mut Lines) {
        let first = self.brokers.first();
        let hosts = self.hosts();
        if hosts.len() == 1 {
            out.line(2, &format!("host => {}", quote(&hosts[0])));
        } else {
            let list: Vec<String> = hosts.iter().map(|h| quote(h)).collect();
            out.line(2, &format!("host => [{}]", list.join(", ")));
        }
        let others = self.other_brokers();
        if !others.is_empty() {
            out.line(
                2,
                &format!(
                    "# Not listed: {} (another port, vhost, user or TLS setting than the first broker).",
                    others.join(", ")
                ),
            );
        }
        out.line(2, &format!("port => {}", first.port()));
        out.line(2, &format!("vhost => {}", quote(first.vhost())));
        out.line(2, &format!("user => {}", quote(first.user())));
        out.line(
            2,
            "# Logstash reads ${RABBITMQ_PASSWORD} from its environment or keystore:",
        );
        out.line(2, "# keep the password out of this file.");
        out.line(2, "password => \"${RABBITMQ_PASSWORD}\"");
        if first.is_tls() {
            out.line(
                2,
                "# The plugin does not verify the broker's certificate unless given",
            );
            out.line(
                2,
                "# ssl_certificate_path (PKCS12) and ssl_certificate_password.",
            );
            out.line(2, "ssl => true");
        }
        if let Some(heartbeat) = first.heartbeat() {
            out.line(2, &format!("heartbeat => {heartbeat}"));
        }
        if let Some(timeout) = first.connection_timeout() {
            out.line(2, &format!("connection_timeout => {}", timeout.as_millis()));
        }
    }

    /// The exchange the queue is bound to, and the queue as declared.
    fn queue_lines(&self, out: &mut Lines) {
        match self.source {
            Source::Topic => {
                out.line(2, &format!("exchange => {}", quote(self.exchange)));
                if self.exchange_durable && !self.exchange_auto_delete {
                    // Logstash declares it with durable => true (the queue's) and
                    // auto_delete => false: the same as ours, so it can re-create it.
                    out.line(2, "exchange_type => \"topic\"");
                } else {
                    for text in [
                        "# No exchange_type: with it, Logstash declares the exchange itself, durable and",
                        &format!(
                            "# not auto-delete, which RabbitMQ refuses for this exchange (durable={},",
                            self.exchange_durable
                        ),
                        &format!(
                            "# auto_delete={}). With LOGCOLLECT_DURABLE=true for the applications and for",
                            self.exchange_auto_delete
                        ),
                        "# setup, the exchange is durable and setup adds exchange_type => \"topic\".",
                    ] {
                        out.line(2, text);
                    }
                }
            }
            Source::Shard { exchange, .. } => {
                out.line(
                    2,
                    "# Bound to the consistent-hash exchange with its weight as key, as setup did,",
                );
                out.line(
                    2,
                    "# so a queue deleted by hand comes back bound. No exchange_type: Logstash cannot",
                );
                out.line(
                    2,
                    "# declare the exchange's hash-property argument; setup declares it.",
                );
                out.line(2, &format!("exchange => {}", quote(exchange)));
            }
        }
        out.line(2, &format!("queue => {}", quote(&self.queue.name)));
        out.line(2, "durable => true");
        let args = self.queue.arguments();
        if !args.is_empty() {
            out.line(
                2,
                "# The queue's arguments: Logstash must declare it with the same ones.",
            );
            out.line(2, "arguments => {");
            for (key, value) in args {
                let value = match value {
                    ArgValue::Int(n) => n.to_string(),
                    ArgValue::Text(t) => quote(t),
                };
                out.line(3, &format!("{} => {value}", quote(key)));
            }
            out.line(2, "}");
        }
        let key = match self.source {
            Source::Topic => self.key(),
            Source::Shard { .. } => SHARD_WEIGHT.to_owned(),
        };
        out.line(2, &format!("key => {}", quote(&key)));
    }

    fn codec(&self, out: &mut Lines) {
        match self.codec {
            Codec::Json => out.line(
                2,
                "# One record per message, or a JSON array of records (LOGCOLLECT_BATCH above 1).",
            ),
            Codec::JsonLines => {
                out.line(
                    2,
                    "# json_lines needs every message to end with a newline: set LOGCOLLECT_BATCH",
                );
                out.line(
                    2,
                    "# above 1 and LOGCOLLECT_BATCH_FORMAT=json_lines for the applications.",
                );
            }
        }
        // Logstash 8 runs pipelines in ECS mode by default, where the json
        // codec copies each one-record message into [event][original].
        out.line(
            2,
            "# The records are complete: the codec adds nothing to them (in ECS mode the json",
        );
        out.line(
            2,
            "# codec would copy each message into [event][original], doubling what is stored).",
        );
        out.line(2, &format!("codec => {} {{", self.codec.name()));
        out.line(3, "ecs_compatibility => \"disabled\"");
        out.line(2, "}");
    }

    fn output(&self, out: &mut Lines) {
        out.line(0, "output {");
        out.line(1, "elasticsearch {");
        let es: Vec<String> = self.elasticsearch.iter().map(|u| quote(u)).collect();
        out.line(2, &format!("hosts => [{}]", es.join(", ")));
        match self.profile {
            Profile::Logcollect => {
                for text in [
                    "# Daily logstash-* indices with Logstash's ILM rollover (not the logs-*-* data",
                    "# streams ECS mode would pick); load deploy/elasticsearch/logcollect-template.json",
                    "# for their mappings.",
                ] {
                    out.line(2, text);
                }
                out.line(2, "ecs_compatibility => \"disabled\"");
                for text in [
                    "# Delivery is at least once: a record sent twice keeps its id, so the copy",
                    "# overwrites the first instead of adding a duplicate.",
                ] {
                    out.line(2, text);
                }
            }
            Profile::Ecs => {
                for text in [
                    "# ECS profile: data stream logs-<data_stream.dataset>-default, one per service",
                    "# (each record says data_stream.dataset = event.dataset = <service>.log; records",
                    "# without a service go to logs-generic-default), mapped by Elasticsearch's",
                    "# built-in logs-*-* template.",
                ] {
                    out.line(2, text);
                }
                out.line(2, "ecs_compatibility => \"v8\"");
                out.line(2, "data_stream => \"true\"");
                for text in [
                    "# Delivery is at least once; a data stream only takes `create`, so a record sent",
                    "# twice (same id) is refused with 409 and the first copy stays. Not an error:",
                ] {
                    out.line(2, text);
                }
                out.line(
                    2,
                    "silence_errors_in_log => [\"version_conflict_engine_exception\"]",
                );
                out.line(2, "# The record id is event.id.");
            }
        }
        out.line(
            2,
            &format!("document_id => \"%{{{}}}\"", self.profile.id_field()),
        );
        out.line(1, "}");
        out.line(0, "}");
    }

    /// The `host` values: every broker that shares the first one's port,
    /// vhost, user and TLS setting (the plugin takes one of each), in order,
    /// once each.
    fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for b in self.brokers.iter().filter(|b| self.compatible(b)) {
            let host = logstash_host(b);
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        hosts
    }

    fn other_brokers(&self) -> Vec<String> {
        self.brokers
            .iter()
            .filter(|b| !self.compatible(b))
            .map(BrokerUri::address)
            .collect()
    }

    fn compatible(&self, b: &BrokerUri) -> bool {
        let first = self.brokers.first();
        b.port() == first.port()
            && b.vhost() == first.vhost()
            && b.user() == first.user()
            && b.is_tls() == first.is_tls()
    }
}

/// Logstash's `pipelines.yml` for `pipelines` (one per shard, or one), each
/// inline (`config.string`) with a persistent queue; its id is its queue's
/// name.
pub(crate) fn pipelines_yml(pipelines: &[Pipeline<'_>]) -> String {
    let mut out = Lines(String::new());
    let count = pipelines.len();
    out.line(
        0,
        &format!(
            "# Logstash pipelines for logcollect, as printed by `logcollect setup --shards {count}`."
        ),
    );
    if let Some(Pipeline {
        source: Source::Shard { exchange, .. },
        ..
    }) = pipelines.first()
    {
        for text in [
            &format!(
                "# Consistent-hash exchange {} spreads the records by message id over {count}",
                quote(exchange)
            ),
            "# durable queues, one pipeline each. Run them all in one Logstash (this file as its",
            "# pipelines.yml, in its settings directory) or spread them over several Logstash",
            "# instances, each with the entries of its shards: every shard needs a consumer",
            &format!("# (`logcollect doctor --shards {count}` checks)."),
        ] {
            out.line(0, text);
        }
    } else {
        out.line(
            0,
            "# Save it as pipelines.yml in Logstash's settings directory (e.g. /etc/logstash).",
        );
    }
    for text in [
        "# Each pipeline has a persistent queue: the rabbitmq input acknowledges a message once",
        "# its event is in Logstash's queue, and on disk a crash of Logstash does not lose it.",
        "# Each takes up to queue.max_bytes (default 1gb) of disk under path.data/queue/<id>.",
        "# Logstash's docs: events written since the last checkpoint (queue.checkpoint.writes,",
        "# default 1024) can be lost in an abnormal shutdown; `queue.checkpoint.writes: 1`",
        "# closes that gap at a cost in throughput.",
        "# Each pipeline runs pipeline.workers workers (default: one per CPU core): with several",
        "# pipelines in one Logstash, consider fewer.",
    ] {
        out.line(0, text);
    }
    for p in pipelines {
        out.line(0, &format!("- pipeline.id: {}", yaml_string(&p.queue.name)));
        out.line(1, "queue.type: persisted");
        out.line(1, "config.string: |");
        for l in p.render_body().lines() {
            out.line(2, l);
        }
    }
    out.0
}

/// A YAML double-quoted string (never a number, boolean or null).
fn yaml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The host for Logstash: a loopback address is written `localhost`, the
/// conventional name for "this machine" (wherever Logstash runs).
fn logstash_host(b: &BrokerUri) -> String {
    let host = b.host();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        "localhost".to_owned()
    } else {
        host.to_owned()
    }
}

/// A Logstash string literal. Logstash keeps backslashes literally unless
/// `config.support_escapes` is on, so a value holding `"` is single-quoted
/// instead (names with both quotes are not worth supporting).
fn quote(s: &str) -> String {
    if s.contains('"') && !s.contains('\'') {
        format!("'{s}'")
    } else {
        format!("\"{}\"", s.replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(
        uri: &str,
        durable: bool,
        queue: &QueueSpec,
        codec: Codec,
        profile: Profile,
    ) -> String {
        let brokers = BrokerList::parse(uri).unwrap();
        Pipeline {
            brokers: &brokers,
            exchange: "logs",
            exchange_durable: durable,
            exchange_auto_delete: false,
            routing_key: "rk",
            queue,
            source: Source::Topic,
            codec,
            profile,
            elasticsearch: &["http://es:9200".to_owned()],
        }
        .render()
    }

    /// The lines that are not comments.
    fn code(text: &str) -> String {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn queue() -> QueueSpec {
        QueueSpec {
            name: "lq".into(),
            max_length: None,
            quorum: false,
        }
    }

    #[test]
    fn names_what_setup_declared() {
        let text = render(
            "amqp://app:s3cret@rabbit.example:5673//logs",
            false,
            &queue(),
            Codec::Json,
            Profile::Logcollect,
        );
        for want in [
            "host => \"rabbit.example\"\n",
            "port => 5673\n",
            "vhost => \"/logs\"\n",
            "user => \"app\"\n",
            "password => \"${RABBITMQ_PASSWORD}\"\n",
            "exchange => \"logs\"\n",
            "queue => \"lq\"\n",
            "durable => true\n",
            "key => \"rk.#\"\n",
            "codec => json {\n      ecs_compatibility => \"disabled\"\n    }\n",
            "hosts => [\"http://es:9200\"]\n",
            "ecs_compatibility => \"disabled\"\n",
            "document_id => \"%{[record_id]}\"\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!code(&text).contains("exchange_type =>"), "{text}");
        assert!(!code(&text).contains("ssl =>"), "{text}");
        assert!(!code(&text).contains("arguments"), "{text}");
        assert!(!code(&text).contains("data_stream"), "{text}");
        assert!(text.contains("queue.type: persisted"), "{text}");
    }

    #[test]
    fn durable_exchange_gets_exchange_type() {
        let text = render(
            "amqp://h//",
            true,
            &queue(),
            Codec::Json,
            Profile::Logcollect,
        );
        assert!(text.contains("    exchange_type => \"topic\"\n"), "{text}");
    }

    #[test]
    fn codec_profile_and_arguments() {
        let q = QueueSpec {
            name: "lq".into(),
            max_length: Some(1000),
            quorum: true,
        };
        let text = render(
            "amqps://h?heartbeat=30&connection_timeout=2.5",
            false,
            &q,
            Codec::JsonLines,
            Profile::Ecs,
        );
        assert!(text.contains("codec => json_lines {\n"), "{text}");
        assert!(
            text.contains("document_id => \"%{[event][id]}\"\n"),
            "{text}"
        );
        // ECS: the data stream per service, duplicates refused quietly.
        for want in [
            "    ecs_compatibility => \"v8\"\n",
            "    data_stream => \"true\"\n",
            "    silence_errors_in_log => [\"version_conflict_engine_exception\"]\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        assert!(
            text.contains(
                "    arguments => {\n      \"x-max-length\" => 1000\n      \"x-queue-type\" => \"quorum\"\n    }\n"
            ),
            "{text}"
        );
        assert!(text.contains("port => 5671\n"), "{text}");
        assert!(text.contains("ssl => true\n"), "{text}");
        assert!(text.contains("heartbeat => 30\n"), "{text}");
        assert!(text.contains("connection_timeout => 2500\n"), "{text}");
    }

    #[test]
    fn hosts_of_a_failover_list() {
        let text = render(
            "amqp://127.0.0.1//;amqp://b//;amqp://c:5999//",
            false,
            &queue(),
            Codec::Json,
            Profile::Logcollect,
        );
        assert!(text.contains("host => [\"localhost\", \"b\"]\n"), "{text}");
        assert!(text.contains("# Not listed: c:5999 "), "{text}");
        assert!(render(
            "amqp://[::1]//",
            false,
            &queue(),
            Codec::Json,
            Profile::Logcollect
        )
        .contains("host => \"localhost\"\n"));
    }

    #[test]
    fn balanced_braces() {
        let text = render(
            "amqp://h//",
            false,
            &queue(),
            Codec::Json,
            Profile::Logcollect,
        );
        let mut code = code(&text);
        // Logstash's own references, `${VAR}` and `%{[field]}`, are not blocks.
        for open in ["${", "%{"] {
            while let Some(start) = code.find(open) {
                let end = start + code[start..].find('}').unwrap();
                code.replace_range(start..=end, "");
            }
        }
        assert_eq!(
            code.matches('{').count(),
            code.matches('}').count(),
            "{text}"
        );
        // input, rabbitmq, codec, output, elasticsearch.
        assert_eq!(code.matches('{').count(), 5, "{text}");
    }

    fn pipeline<'a>(
        brokers: &'a BrokerList,
        queue: &'a QueueSpec,
        source: Source<'a>,
    ) -> Pipeline<'a> {
        Pipeline {
            brokers,
            exchange: "logs",
            exchange_durable: true,
            exchange_auto_delete: false,
            routing_key: "rk",
            queue,
            source,
            codec: Codec::Json,
            profile: Profile::Logcollect,
            elasticsearch: &[],
        }
    }

    #[test]
    fn a_shard_reads_its_queue_from_the_hash_exchange() {
        let brokers = BrokerList::parse("amqp://h//").unwrap();
        let q = QueueSpec {
            name: "lq-shard-2".into(),
            max_length: None,
            quorum: true,
        };
        let source = Source::Shard {
            exchange: "lq.shards",
            index: 2,
            count: 3,
        };
        let text = pipeline(&brokers, &q, source).render_body();
        let code = code(&text);
        for want in [
            "    exchange => \"lq.shards\"\n",
            "    queue => \"lq-shard-2\"\n",
            "    key => \"1\"\n",
            "      \"x-queue-type\" => \"quorum\"\n",
        ] {
            assert!(code.contains(want), "{want:?} missing from\n{text}");
        }
        // Never bound to the topic exchange (it would get every record),
        // never declaring the hash exchange without its argument.
        assert!(!code.contains("exchange => \"logs\""), "{text}");
        assert!(!code.contains("exchange_type"), "{text}");
        assert!(!code.contains("rk.#"), "{text}");
        assert!(text.contains("this is shard 2 of 3"), "{text}");
    }

    #[test]
    fn pipelines_yml_holds_each_pipeline_with_a_persistent_queue() {
        let brokers = BrokerList::parse("amqp://h//").unwrap();
        let queues: Vec<QueueSpec> = (1..=2)
            .map(|i| QueueSpec {
                name: format!("lq-shard-{i}"),
                max_length: Some(5),
                quorum: false,
            })
            .collect();
        let pipelines: Vec<Pipeline<'_>> = queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let source = Source::Shard {
                    exchange: "lq.shards",
                    index: i as u16 + 1,
                    count: 2,
                };
                pipeline(&brokers, q, source)
            })
            .collect();
        let yml = pipelines_yml(&pipelines);
        let entries: Vec<&str> = yml.split("\n- pipeline.id: ").skip(1).collect();
        assert_eq!(entries.len(), 2, "{yml}");
        for (entry, p) in entries.iter().zip(&pipelines) {
            let mut lines = entry.lines();
            assert_eq!(lines.next(), Some(format!("\"{}\"", p.queue.name).as_str()));
            assert_eq!(lines.next(), Some("  queue.type: persisted"));
            assert_eq!(lines.next(), Some("  config.string: |"));
            // The block scalar is the pipeline, indented by four spaces.
            let body: String = lines
                .map(|l| format!("{}\n", l.strip_prefix("    ").expect(l)))
                .collect();
            assert_eq!(body, p.render_body());
        }
        assert!(yml
            .lines()
            .take_while(|l| !l.starts_with('-'))
            .all(|l| l.starts_with('#')));
        assert!(yml.contains("doctor --shards 2"), "{yml}");
    }

    #[test]
    fn yaml_strings() {
        assert_eq!(yaml_string("q-1"), "\"q-1\"");
        assert_eq!(yaml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(yaml_string("t\tx"), "\"t\\u0009x\"");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a"), "\"a\"");
        assert_eq!(quote("a\"b"), "'a\"b'");
        assert_eq!(quote("a\"b'c"), "\"a\\\"b'c\"");
    }
}
