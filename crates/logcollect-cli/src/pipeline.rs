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

/// Everything the pipeline says.
#[derive(Debug)]
pub(crate) struct Pipeline<'a> {
    pub(crate) brokers: &'a BrokerList,
    pub(crate) exchange: &'a str,
    pub(crate) exchange_durable: bool,
    pub(crate) exchange_auto_delete: bool,
    pub(crate) routing_key: &'a str,
    pub(crate) queue: &'a QueueSpec,
    pub(crate) codec: Codec,
    pub(crate) profile: Profile,
    /// Elasticsearch URLs.
    pub(crate) elasticsearch: &'a [String],
}

impl Pipeline<'_> {
    /// The binding key: every logger under the routing-key prefix.
    pub(crate) fn key(&self) -> String {
        format!("{}.#", self.routing_key)
    }

    pub(crate) fn render(&self) -> String {
        let first = self.brokers.first();
        let mut out = String::new();
        let mut line = |indent: usize, text: &str| {
            out.push_str(&"  ".repeat(indent));
            out.push_str(text);
            out.push('\n');
        };
        line(
            0,
            "# Logstash pipeline for logcollect, as printed by `logcollect setup`.",
        );
        line(
            0,
            &format!(
                "# Records arrive on topic exchange {} with routing keys {}.<logger>;",
                quote(self.exchange),
                self.routing_key
            ),
        );
        line(
            0,
            &format!(
                "# durable queue {} keeps them while Logstash is away.",
                quote(&self.queue.name)
            ),
        );
        line(0, "input {");
        line(1, "rabbitmq {");
        let hosts = self.hosts();
        if hosts.len() == 1 {
            line(2, &format!("host => {}", quote(&hosts[0])));
        } else {
            let list: Vec<String> = hosts.iter().map(|h| quote(h)).collect();
            line(2, &format!("host => [{}]", list.join(", ")));
        }
        let others = self.other_brokers();
        if !others.is_empty() {
            line(
                2,
                &format!(
                    "# Not listed: {} (another port, vhost, user or TLS setting than the first broker).",
                    others.join(", ")
                ),
            );
        }
        line(2, &format!("port => {}", first.port()));
        line(2, &format!("vhost => {}", quote(first.vhost())));
        line(2, &format!("user => {}", quote(first.user())));
        line(
            2,
            "# Logstash reads ${RABBITMQ_PASSWORD} from its environment or keystore:",
        );
        line(2, "# keep the password out of this file.");
        line(2, "password => \"${RABBITMQ_PASSWORD}\"");
        if first.is_tls() {
            line(
                2,
                "# The plugin does not verify the broker's certificate unless given",
            );
            line(
                2,
                "# ssl_certificate_path (PKCS12) and ssl_certificate_password.",
            );
            line(2, "ssl => true");
        }
        if let Some(heartbeat) = first.heartbeat() {
            line(2, &format!("heartbeat => {heartbeat}"));
        }
        if let Some(timeout) = first.connection_timeout() {
            line(2, &format!("connection_timeout => {}", timeout.as_millis()));
        }
        line(2, &format!("exchange => {}", quote(self.exchange)));
        if self.exchange_durable && !self.exchange_auto_delete {
            // Logstash declares it with durable => true (the queue's) and
            // auto_delete => false: the same as ours, so it can re-create it.
            line(2, "exchange_type => \"topic\"");
        } else {
            line(
                2,
                "# No exchange_type: with it, Logstash declares the exchange itself, durable and",
            );
            line(
                2,
                &format!(
                    "# not auto-delete, which RabbitMQ refuses for this exchange (durable={},",
                    self.exchange_durable
                ),
            );
            line(
                2,
                &format!(
                    "# auto_delete={}). With LOGCOLLECT_DURABLE=true for the applications and for",
                    self.exchange_auto_delete
                ),
            );
            line(
                2,
                "# setup, the exchange is durable and setup adds exchange_type => \"topic\".",
            );
        }
        line(2, &format!("queue => {}", quote(&self.queue.name)));
        line(2, "durable => true");
        let args = self.queue.arguments();
        if !args.is_empty() {
            line(
                2,
                "# The queue's arguments: Logstash must declare it with the same ones.",
            );
            line(2, "arguments => {");
            for (key, value) in args {
                let value = match value {
                    ArgValue::Int(n) => n.to_string(),
                    ArgValue::Text(t) => quote(t),
                };
                line(3, &format!("{} => {value}", quote(key)));
            }
            line(2, "}");
        }
        line(2, &format!("key => {}", quote(&self.key())));
        match self.codec {
            Codec::Json => line(
                2,
                "# One record per message, or a JSON array of records (LOGCOLLECT_BATCH above 1).",
            ),
            Codec::JsonLines => {
                line(
                    2,
                    "# json_lines needs every message to end with a newline: set LOGCOLLECT_BATCH",
                );
                line(
                    2,
                    "# above 1 and LOGCOLLECT_BATCH_FORMAT=json_lines for the applications.",
                );
            }
        }
        line(2, &format!("codec => {}", quote(self.codec.name())));
        line(1, "}");
        line(0, "}");
        line(0, "output {");
        line(1, "elasticsearch {");
        let es: Vec<String> = self.elasticsearch.iter().map(|u| quote(u)).collect();
        line(2, &format!("hosts => [{}]", es.join(", ")));
        line(
            2,
            "# Delivery is at least once: a record sent twice keeps its id, so the copy",
        );
        line(2, "# overwrites the first instead of adding a duplicate.");
        if self.profile == Profile::Ecs {
            line(2, "# ECS profile: the record id is event.id.");
        }
        line(
            2,
            &format!("document_id => \"%{{{}}}\"", self.profile.id_field()),
        );
        line(1, "}");
        line(0, "}");
        out
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
            "codec => \"json\"\n",
            "hosts => [\"http://es:9200\"]\n",
            "document_id => \"%{[record_id]}\"\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!code(&text).contains("exchange_type =>"), "{text}");
        assert!(!code(&text).contains("ssl =>"), "{text}");
        assert!(!code(&text).contains("arguments"), "{text}");
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
        assert!(text.contains("codec => \"json_lines\"\n"), "{text}");
        assert!(
            text.contains("document_id => \"%{[event][id]}\"\n"),
            "{text}"
        );
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
        assert_eq!(code.matches('{').count(), 4, "{text}");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a"), "\"a\"");
        assert_eq!(quote("a\"b"), "'a\"b'");
        assert_eq!(quote("a\"b'c"), "\"a\\\"b'c\"");
    }
}
