//! [`Config`] and its builder.

use std::fmt;
use std::time::Duration;

use crate::encode::{
    EncoderSettings, Profile, DEFAULT_ECS_EXTRA_PREFIX, DEFAULT_ECS_SERVICE_KEY, RECORD_ID_FIELD,
};
use crate::error::{Error, ErrorKind};
use crate::filter::Filter;
#[cfg(test)]
use crate::record::Level;
use crate::record::DEFAULT_LEVEL;
use crate::uri::{BrokerList, DEFAULT_BROKER_URI};

/// Default exchange name, as the Python library.
pub const DEFAULT_EXCHANGE: &str = "logstash";
/// Default routing-key prefix; records go out as `<routing_key>.<logger>`.
pub const DEFAULT_ROUTING_KEY: &str = "logstash";
/// Default exchange durability: `false`, as Python's `default_config`.
pub const DEFAULT_DURABLE: bool = false;
/// Default exchange `auto_delete`.
pub const DEFAULT_AUTO_DELETE: bool = false;
/// Default bound of the in-memory queue, in records. At the default 1 MiB
/// record cap a full queue is bounded; typical records (300 B) use ~20 MiB.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// Default time the guard's drop (and `shutdown`) waits for confirms.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on one encoded record; larger ones are truncated with a marker.
/// 1 MiB: the Python library delivered a 1 MiB message whole (reference `lc_f`).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Default number of published-but-unconfirmed messages. Measured here: ~1,500
/// msg/s awaiting each confirm, ~13k with 1,024 in flight.
pub const DEFAULT_CONFIRM_WINDOW: usize = 1024;
/// Default first reconnect delay.
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Default reconnect delay cap.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Default bound on one connection attempt (TCP + AMQP handshake), so a
/// listener that never answers cannot stall the shipper.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on the bytes of records held in memory (queued, held for
/// publishing, in flight). With [`DEFAULT_QUEUE_CAPACITY`] records of a
/// typical 300–1,000 bytes the record bound comes first; large records
/// (stack traces) meet this one: 65,536 records of 50 KB would be 3.2 GB.
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Default AMQP heartbeat proposed to the broker. The client closes a
/// connection that heard nothing for two intervals, so 5 s finds a hung
/// broker or a partition within about 10–12 s even when nothing is being
/// published.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Default time a publish may stay unconfirmed (the broker not blocking us)
/// before the connection is taken for dead and the next broker is tried.
/// A healthy broker confirms in milliseconds; 10 s leaves room for a slow
/// disk under persistent messages.
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval at which the shipper thread looks at the queue while
/// records flow (a record waits about this long, up to a millisecond more:
/// tokio's timer counts whole milliseconds). Callers do not wake the shipper for every record: it comes
/// back every millisecond while records flow and for 50 ms after the last
/// one; only the first record after a longer quiet spell wakes it, and so
/// does a full batch.
pub const DEFAULT_WAKE_INTERVAL: Duration = Duration::from_millis(1);
/// Default cap on the disk spool's size. 256 MiB holds about a million
/// typical (250-byte) records.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default records per AMQP message: one, as the Python library sends.
pub const DEFAULT_RECORDS_PER_MESSAGE: usize = 1;
/// Default time a partial batch waits for more records. 5 ms adds little
/// latency and, under load, lets batches fill.
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_millis(5);
/// Default cap on one batch message's body: 1 MiB, as one record.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1024 * 1024;

/// How several records share one AMQP message (see `records_per_message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BatchFormat {
    /// One JSON array of record objects: Logstash's `json` codec makes one
    /// event per element, so the usual pipeline needs no change.
    #[default]
    JsonArray,
    /// Newline-delimited records, for Logstash's `json_lines` codec.
    JsonLines,
}

impl std::str::FromStr for BatchFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" | "array" | "json_array" => Ok(BatchFormat::JsonArray),
            "json_lines" | "ndjson" | "lines" => Ok(BatchFormat::JsonLines),
            other => Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("unknown batch format {other:?}: expected json or json_lines"),
            )),
        }
    }
}

/// Default `panic_hook`: boot installs a hook that ships a `CRITICAL`
/// record for every panic.
pub const DEFAULT_PANIC_HOOK: bool = true;
/// Default `redaction`: on.
pub const DEFAULT_REDACTION: bool = true;
/// Default `redact_fields`: field names whose values are never sent (`*`
/// matches any run of characters; names compare without regard to ASCII
/// case, whole or by their last `.`-separated part).
pub const DEFAULT_REDACT_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "*_password",
    "secret",
    "*_secret",
    "token",
    "*_token",
    "api_key",
    "apikey",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "private_key",
    "credentials",
];
/// Default `redact_values`: string values that are never sent, whatever
/// their field (`*` matches any run of characters; case matters): HTTP
/// credentials.
pub const DEFAULT_REDACT_VALUES: &[&str] = &["Bearer *", "Basic *"];

/// Default Logstash `type` field.
pub const DEFAULT_TYPE: &str = "Logstash";
/// Targets whose records are never shipped by default: our own crate and the
/// AMQP client stack, so the shipper can never feed itself.
pub const DEFAULT_IGNORED_TARGETS: &[&str] = &[
    "logcollect",
    "lapin",
    "amq_protocol",
    "amq_protocol_tcp",
    "amq_protocol_uri",
    "amq_protocol_types",
    "async_rs",
    "tokio",
    "tokio_util",
    "mio",
    "rustls",
    "flume",
    "backon",
];

/// Everything a [`Shipper`](crate::Shipper) needs. Build it with
/// [`Config::builder`] or [`Config::from_env`].
///
/// | setting | default | environment |
/// |---|---|---|
/// | `broker_uri` | [`DEFAULT_BROKER_URI`] | `LOGCOLLECT_BROKER_URI` |
/// | `exchange` | [`DEFAULT_EXCHANGE`] (`logstash`) | `LOGCOLLECT_EXCHANGE` |
/// | `routing_key` | [`DEFAULT_ROUTING_KEY`] (`logstash`) | `LOGCOLLECT_ROUTING_KEY` |
/// | `durable` | [`DEFAULT_DURABLE`] (`false`) | `LOGCOLLECT_DURABLE` |
/// | `auto_delete` | [`DEFAULT_AUTO_DELETE`] (`false`) | `LOGCOLLECT_AUTO_DELETE` |
/// | `level` | [`DEFAULT_LEVEL`] (`info`) | `LOGCOLLECT_LEVEL` |
/// | `activity_identity` | empty | `LOGCOLLECT_ACTIVITY_IDENTITY` (`k=v,k=v`) |
/// | `queue_capacity` | [`DEFAULT_QUEUE_CAPACITY`] (65,536) | `LOGCOLLECT_QUEUE_CAPACITY` |
/// | `queue_max_bytes` | [`DEFAULT_QUEUE_MAX_BYTES`] (64 MiB, or four times `max_record_bytes` when that is more) | `LOGCOLLECT_QUEUE_MAX_BYTES` |
/// | `shutdown_timeout` | [`DEFAULT_SHUTDOWN_TIMEOUT`] (5 s) | `LOGCOLLECT_SHUTDOWN_TIMEOUT` (seconds) |
/// | `max_record_bytes` | [`DEFAULT_MAX_RECORD_BYTES`] (1 MiB) | `LOGCOLLECT_MAX_RECORD_BYTES` |
/// | `confirm_window` | [`DEFAULT_CONFIRM_WINDOW`] (1,024) | `LOGCOLLECT_CONFIRM_WINDOW` |
/// | `reconnect_min` / `reconnect_max` | 100 ms / 30 s | — |
/// | `connect_timeout` | [`DEFAULT_CONNECT_TIMEOUT`] (10 s) | — |
/// | `heartbeat` | [`DEFAULT_HEARTBEAT`] (5 s; `?heartbeat=` in the URI wins) | `LOGCOLLECT_HEARTBEAT` (seconds) |
/// | `liveness_timeout` | [`DEFAULT_LIVENESS_TIMEOUT`] (10 s) | `LOGCOLLECT_LIVENESS_TIMEOUT` (seconds) |
/// | `wake_interval` | [`DEFAULT_WAKE_INTERVAL`] (1 ms) | — |
/// | `tags` | `[]` | `LOGCOLLECT_TAGS` (`a,b`) |
/// | `type_name` | [`DEFAULT_TYPE`] (`Logstash`) | `LOGCOLLECT_TYPE` |
/// | `host` | the machine's host name | `LOGCOLLECT_HOST` |
/// | `ignored_targets` | [`DEFAULT_IGNORED_TARGETS`] | — |
/// | `records_per_message` | [`DEFAULT_RECORDS_PER_MESSAGE`] (1) | `LOGCOLLECT_BATCH` |
/// | `batch_linger` | [`DEFAULT_BATCH_LINGER`] (5 ms) | `LOGCOLLECT_BATCH_LINGER_MS` |
/// | `batch_max_bytes` | [`DEFAULT_BATCH_MAX_BYTES`] (1 MiB) | — |
/// | `batch_format` | [`BatchFormat::JsonArray`] | `LOGCOLLECT_BATCH_FORMAT` (`json`, `json_lines`) |
/// | `spool_dir` | none (no spool) | `LOGCOLLECT_SPOOL_DIR` |
/// | `spool_max_bytes` | [`DEFAULT_SPOOL_MAX_BYTES`] (256 MiB) | `LOGCOLLECT_SPOOL_MAX_BYTES` |
/// | `tls_ca_file` | none: the system's roots only (`amqps://`) | `LOGCOLLECT_TLS_CA_FILE` |
/// | `tls_cert_file` / `tls_key_file` | none: no client certificate | `LOGCOLLECT_TLS_CERT_FILE` / `LOGCOLLECT_TLS_KEY_FILE` |
/// | `profile` | [`Profile::Logcollect`] | `LOGCOLLECT_PROFILE` (`logcollect`, `ecs`) |
/// | `ecs_service_key` | [`DEFAULT_ECS_SERVICE_KEY`] (`application`) | `LOGCOLLECT_ECS_SERVICE_KEY` |
/// | `ecs_extra_prefix` | [`DEFAULT_ECS_EXTRA_PREFIX`] (`extra`) | `LOGCOLLECT_ECS_EXTRA_PREFIX` |
/// | `panic_hook` | [`DEFAULT_PANIC_HOOK`] (`true`: boot ships panics as `CRITICAL` records) | `LOGCOLLECT_PANIC_HOOK` |
/// | `redaction` | [`DEFAULT_REDACTION`] (`true`) | `LOGCOLLECT_REDACTION` |
/// | `redact_fields` | [`DEFAULT_REDACT_FIELDS`] (`password`, `*_token`, `authorization`…) | `LOGCOLLECT_REDACT_FIELDS` (`a,b*`) |
/// | `redact_values` | [`DEFAULT_REDACT_VALUES`] (`Bearer *`, `Basic *`) | `LOGCOLLECT_REDACT_VALUES` (`a*,b*`) |
#[derive(Clone)]
pub struct Config {
    pub(crate) brokers: BrokerList,
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
    pub(crate) filter: Filter,
    pub(crate) activity_identity: Vec<(String, String)>,
    pub(crate) queue_capacity: usize,
    pub(crate) queue_max_bytes: usize,
    pub(crate) heartbeat: Duration,
    pub(crate) liveness_timeout: Duration,
    pub(crate) wake_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_record_bytes: usize,
    pub(crate) confirm_window: usize,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) tags: Vec<String>,
    pub(crate) type_name: String,
    pub(crate) host: String,
    pub(crate) ignored_targets: Vec<String>,
    pub(crate) spool_dir: Option<std::path::PathBuf>,
    pub(crate) spool_max_bytes: u64,
    pub(crate) tls: TlsFiles,
    pub(crate) records_per_message: usize,
    pub(crate) batch_linger: Duration,
    pub(crate) batch_max_bytes: usize,
    pub(crate) batch_format: BatchFormat,
    pub(crate) profile: Profile,
    pub(crate) ecs_service_key: String,
    pub(crate) ecs_extra_prefix: String,
    pub(crate) panic_hook: bool,
    pub(crate) redaction: bool,
    pub(crate) redact_fields: Vec<String>,
    pub(crate) redact_values: Vec<String>,
}

/// TLS material read at build time, so a missing file is a boot error and
/// never a surprise at connect time.
#[derive(Clone, Default)]
pub(crate) struct TlsFiles {
    /// Extra trusted CA certificates (PEM), added to the system's roots.
    pub(crate) ca_pem: Option<String>,
    /// Client certificate and PKCS#8 key (PEM).
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl Config {
    /// A builder with every setting at its default.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Reads the `LOGCOLLECT_*` variables (see the table above) over the defaults.
    ///
    /// To combine with code settings, use [`ConfigBuilder::env`]: what code sets wins.
    pub fn from_env() -> Result<Config, Error> {
        Config::builder().env()?.build()
    }

    /// The failover list of brokers.
    pub fn brokers(&self) -> &BrokerList {
        &self.brokers
    }
    /// The exchange records are published to.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }
    /// The routing-key prefix.
    pub fn routing_key(&self) -> &str {
        &self.routing_key
    }
    /// Whether the exchange is declared durable and messages are persistent.
    pub fn durable(&self) -> bool {
        self.durable
    }
    /// Whether the exchange is declared `auto_delete`.
    pub fn auto_delete(&self) -> bool {
        self.auto_delete
    }
    /// The level filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }
    /// The activity identity merged into every record, in order.
    pub fn activity_identity(&self) -> &[(String, String)] {
        &self.activity_identity
    }
    /// Bound of the in-memory queue, in records.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }
    /// Bound of the in-memory queue, in bytes of records.
    pub fn queue_max_bytes(&self) -> usize {
        self.queue_max_bytes
    }
    /// The AMQP heartbeat proposed to the broker (zero: the broker's).
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }
    /// How long a publish may stay unconfirmed before the connection is
    /// taken for dead.
    pub fn liveness_timeout(&self) -> Duration {
        self.liveness_timeout
    }
    /// How often the shipper looks at the queue while records flow.
    pub fn wake_interval(&self) -> Duration {
        self.wake_interval
    }
    /// How long shutdown waits for confirms.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }
    /// Cap on one encoded record.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }
    /// Number of published-but-unconfirmed messages allowed.
    pub fn confirm_window(&self) -> usize {
        self.confirm_window
    }
    /// The `host` field.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The `type` field.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }
    /// The `tags` field.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }
    /// Bound on one connection attempt.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// First reconnect delay.
    pub fn reconnect_min(&self) -> Duration {
        self.reconnect_min
    }
    /// Reconnect delay cap.
    pub fn reconnect_max(&self) -> Duration {
        self.reconnect_max
    }
    /// Records per AMQP message at most (1: no batching).
    pub fn records_per_message(&self) -> usize {
        self.records_per_message
    }
    /// How long a partial batch waits for more records.
    pub fn batch_linger(&self) -> Duration {
        self.batch_linger
    }
    /// Cap on one batch message's body.
    pub fn batch_max_bytes(&self) -> usize {
        self.batch_max_bytes
    }
    /// How records share a message when batching.
    pub fn batch_format(&self) -> BatchFormat {
        self.batch_format
    }
    /// Whether a CA file was given for `amqps://` (added to the system roots).
    pub fn has_tls_ca(&self) -> bool {
        self.tls.ca_pem.is_some()
    }
    /// Whether a client certificate is presented on `amqps://`.
    pub fn has_tls_client_cert(&self) -> bool {
        self.tls.identity.is_some()
    }
    /// The disk spool's directory, when the spool is on.
    pub fn spool_dir(&self) -> Option<&std::path::Path> {
        self.spool_dir.as_deref()
    }
    /// Cap on the spool's size in bytes.
    pub fn spool_max_bytes(&self) -> u64 {
        self.spool_max_bytes
    }
    /// Targets never shipped (prefix match at module boundaries).
    pub fn ignored_targets(&self) -> &[String] {
        &self.ignored_targets
    }
    /// The record shape.
    pub fn profile(&self) -> Profile {
        self.profile
    }
    /// ECS: the activity-identity key whose value is `service.name`.
    pub fn ecs_service_key(&self) -> &str {
        &self.ecs_service_key
    }
    /// ECS: where user fields named like an ECS field we write go.
    pub fn ecs_extra_prefix(&self) -> &str {
        &self.ecs_extra_prefix
    }
    /// Whether boot installs the panic hook.
    pub fn panic_hook(&self) -> bool {
        self.panic_hook
    }
    /// Whether redaction is on.
    pub fn redaction(&self) -> bool {
        self.redaction
    }
    /// Field-name patterns whose values are redacted.
    pub fn redact_fields(&self) -> &[String] {
        &self.redact_fields
    }
    /// Value patterns that are redacted.
    pub fn redact_values(&self) -> &[String] {
        &self.redact_values
    }

    /// Whether a record from `target` at `level` should be shipped.
    #[inline]
    #[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
    /// What the encoder needs of this configuration.
    pub(crate) fn encoder_settings(&self) -> EncoderSettings {
        EncoderSettings {
            host: self.host.clone(),
            tags: self.tags.clone(),
            type_name: self.type_name.clone(),
            activity_identity: self.activity_identity.clone(),
            routing_prefix: self.routing_key.clone(),
            max_record_bytes: self.max_record_bytes,
            process_id: std::process::id(),
            profile: self.profile,
            ecs_service_key: self.ecs_service_key.clone(),
            ecs_extra_prefix: self.ecs_extra_prefix.clone(),
            redact_fields: if self.redaction {
                self.redact_fields.clone()
            } else {
                Vec::new()
            },
            redact_values: if self.redaction {
                self.redact_values.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// Whether records of `target` are never shipped (`ignored_targets`).
    #[inline]
    pub(crate) fn ignores(&self, target: &str) -> bool {
        self.ignored_targets
            .iter()
            .any(|p| crate::filter::target_matches(p, target))
    }

    #[cfg(test)]
    fn wants(&self, target: &str, level: Level) -> bool {
        self.filter.enabled(target, level) && !self.ignores(target)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("brokers", &self.brokers) // redacted by BrokerList
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("durable", &self.durable)
            .field("auto_delete", &self.auto_delete)
            .field("filter", &self.filter)
            .field("activity_identity", &self.activity_identity)
            .field("queue_capacity", &self.queue_capacity)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("confirm_window", &self.confirm_window)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Config`]. Every setter records a code setting;
/// [`env`](Self::env) fills only what code has not set (code wins), while
/// [`env_overrides`](Self::env_overrides) lets every `LOGCOLLECT_*` variable
/// that is set replace the code's setting (layered: code gives defaults,
/// operators override them).
#[derive(Default, Clone)]
pub struct ConfigBuilder {
    broker_uri: Option<String>,
    exchange: Option<String>,
    routing_key: Option<String>,
    durable: Option<bool>,
    auto_delete: Option<bool>,
    level: Option<String>,
    activity_identity: Option<Vec<(String, String)>>,
    queue_capacity: Option<usize>,
    queue_max_bytes: Option<usize>,
    heartbeat: Option<Duration>,
    liveness_timeout: Option<Duration>,
    wake_interval: Option<Duration>,
    shutdown_timeout: Option<Duration>,
    max_record_bytes: Option<usize>,
    confirm_window: Option<usize>,
    reconnect_min: Option<Duration>,
    reconnect_max: Option<Duration>,
    connect_timeout: Option<Duration>,
    tags: Option<Vec<String>>,
    type_name: Option<String>,
    host: Option<String>,
    ignored_targets: Option<Vec<String>>,
    spool_dir: Option<std::path::PathBuf>,
    spool_max_bytes: Option<u64>,
    tls_ca_file: Option<std::path::PathBuf>,
    tls_cert_file: Option<std::path::PathBuf>,
    tls_key_file: Option<std::path::PathBuf>,
    records_per_message: Option<usize>,
    batch_linger: Option<Duration>,
    batch_max_bytes: Option<usize>,
    batch_format: Option<BatchFormat>,
    profile: Option<Profile>,
    ecs_service_key: Option<String>,
    ecs_extra_prefix: Option<String>,
    panic_hook: Option<bool>,
    redaction: Option<bool>,
    redact_fields: Option<Vec<String>>,
    redact_values: Option<Vec<String>>,
}

impl fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URI is not parsed yet: never print it, it may hold a password.
        f.debug_struct("ConfigBuilder")
            .field("broker_uri", &self.broker_uri.as_ref().map(|_| "<set>"))
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

macro_rules! setter {
    ($(#[$m:meta])* $name:ident: $ty:ty) => {
        $(#[$m])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = Some(value);
            self
        }
    };
}

impl ConfigBuilder {
    /// Broker URI, Celery style; `;` separates a failover list.
    #[must_use]
    pub fn broker_uri(mut self, uri: impl Into<String>) -> Self {
        self.broker_uri = Some(uri.into());
        self
    }
    /// Exchange name.
    #[must_use]
    pub fn exchange(mut self, name: impl Into<String>) -> Self {
        self.exchange = Some(name.into());
        self
    }
    /// Routing-key prefix.
    #[must_use]
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = Some(key.into());
        self
    }
    /// Minimum level (`info`) or `RUST_LOG`-style directives (`info,my_app=debug`).
    #[must_use]
    pub fn level(mut self, level: impl Into<String>) -> Self {
        self.level = Some(level.into());
        self
    }
    /// Key/value pairs merged at the top level of every record; they win over
    /// every other field, as in the Python library.
    #[must_use]
    pub fn activity_identity<K, V>(mut self, pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.activity_identity = Some(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }
    /// The `tags` field.
    #[must_use]
    pub fn tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }
    /// The `type` field.
    #[must_use]
    pub fn type_name(mut self, name: impl Into<String>) -> Self {
        self.type_name = Some(name.into());
        self
    }
    /// The `host` field (default: the machine's host name).
    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }
    /// Targets never shipped, replacing [`DEFAULT_IGNORED_TARGETS`]. Keep the
    /// AMQP client's targets in the list unless you know what you are doing.
    #[must_use]
    pub fn ignored_targets<T: Into<String>>(
        mut self,
        targets: impl IntoIterator<Item = T>,
    ) -> Self {
        self.ignored_targets = Some(targets.into_iter().map(Into::into).collect());
        self
    }
    /// Turns the disk spool on: records the broker cannot take yet (broker
    /// away, queue backlog, shutdown deadline) are kept in `dir` and replayed
    /// in order, also by the next process that uses the same directory.
    #[must_use]
    pub fn spool_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }
    /// A PEM file of CA certificates trusted for `amqps://`, in addition to
    /// the system's roots (for a broker with a private CA). Verification is
    /// never turned off, and there is no fallback to plain text.
    #[must_use]
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }
    /// A PEM client certificate for `amqps://` (with [`tls_key_file`](Self::tls_key_file)).
    #[must_use]
    pub fn tls_cert_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_cert_file = Some(path.into());
        self
    }
    /// The PEM (PKCS#8) private key of the client certificate.
    #[must_use]
    pub fn tls_key_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_key_file = Some(path.into());
        self
    }
    setter!(
        /// Records per AMQP message at most (1 to 10,000; default 1). Above
        /// 1, records available together share a message, grouped by
        /// routing key, as `batch_format` says; the message's `message_id`
        /// is its own, each record keeps its `record_id`.
        records_per_message: usize
    );
    setter!(
        /// How long a partial batch waits for more records.
        batch_linger: Duration
    );
    setter!(
        /// Cap on one batch message's body (at least `max_record_bytes`, so
        /// any single record fits).
        batch_max_bytes: usize
    );
    setter!(
        /// How records share a message when batching.
        batch_format: BatchFormat
    );
    setter!(
        /// Cap on the spool's size in bytes (at least 1 MiB); beyond it the
        /// oldest records are dropped and counted.
        spool_max_bytes: u64
    );
    setter!(
        /// Declare the exchange durable and publish persistent messages.
        durable: bool
    );
    setter!(
        /// Declare the exchange `auto_delete`.
        auto_delete: bool
    );
    setter!(
        /// Bound of the in-memory queue, in records (at least 1).
        queue_capacity: usize
    );
    setter!(
        /// How long the guard's drop and `shutdown` wait for confirms. Any
        /// value works: `Duration::MAX` waits for ever.
        shutdown_timeout: Duration
    );
    setter!(
        /// Bound on the bytes of records held in memory (at least four
        /// times `max_record_bytes`); beyond it new records are refused and
        /// counted as `dropped_memory_full`.
        queue_max_bytes: usize
    );
    setter!(
        /// The AMQP heartbeat proposed to the broker (whole seconds; zero
        /// leaves it to the broker). A `?heartbeat=` in the URI wins.
        heartbeat: Duration
    );
    setter!(
        /// How long a publish may stay unconfirmed, while the broker is not
        /// blocking us, before the connection is taken for dead (hung broker,
        /// partition) and the next broker of the list is tried (at least
        /// 100 ms).
        liveness_timeout: Duration
    );
    setter!(
        /// How often the shipper thread looks at the queue while records
        /// flow (at most 1 s; a full batch is picked up at once). A record
        /// waits about this long before it is picked up, up to a
        /// millisecond more: tokio's timer counts whole milliseconds.
        wake_interval: Duration
    );
    setter!(
        /// Cap on one encoded record, in bytes (at least 4 KiB).
        max_record_bytes: usize
    );
    setter!(
        /// Published-but-unconfirmed messages allowed (at least 1).
        confirm_window: usize
    );
    setter!(
        /// First reconnect delay.
        reconnect_min: Duration
    );
    setter!(
        /// Reconnect delay cap.
        reconnect_max: Duration
    );
    setter!(
        /// Bound on one connection attempt.
        connect_timeout: Duration
    );
    setter!(
        /// The record shape: [`Profile::Logcollect`] (flat, as the Python
        /// library) or [`Profile::Ecs`] (Elastic Common Schema, nested).
        profile: Profile
    );
    /// ECS: the activity-identity key whose value becomes `service.name`
    /// (the other pairs become `labels.*`).
    #[must_use]
    pub fn ecs_service_key(mut self, key: impl Into<String>) -> Self {
        self.ecs_service_key = Some(key.into());
        self
    }
    /// ECS: the object that receives user fields named like an ECS field we
    /// write (`host` → `extra.host`); may be dotted (`app.extra`).
    #[must_use]
    pub fn ecs_extra_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.ecs_extra_prefix = Some(prefix.into());
        self
    }

    setter!(
        /// Whether boot installs a panic hook that ships a `CRITICAL` record
        /// (message, location, thread, backtrace when enabled), flushes for
        /// up to 2 s, then calls the hook that was there before.
        panic_hook: bool
    );
    setter!(
        /// Whether field values are redacted (see `redact_fields` and
        /// `redact_values`); `false` sends every value as it is.
        redaction: bool
    );
    /// Field names whose values are sent as `[redacted]`, replacing
    /// [`DEFAULT_REDACT_FIELDS`]: exact names or globs (`*_token`),
    /// compared without regard to ASCII case with the whole key and with its
    /// last `.`-separated part.
    #[must_use]
    pub fn redact_fields<T: Into<String>>(mut self, names: impl IntoIterator<Item = T>) -> Self {
        self.redact_fields = Some(names.into_iter().map(Into::into).collect());
        self
    }
    /// String values sent as `[redacted]` whatever their field, replacing
    /// [`DEFAULT_REDACT_VALUES`]: globs over the whole value (`Bearer *`).
    #[must_use]
    pub fn redact_values<T: Into<String>>(mut self, patterns: impl IntoIterator<Item = T>) -> Self {
        self.redact_values = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Fills every setting that code has not set from the `LOGCOLLECT_*`
    /// environment variables. A variable that is set but unusable is an error
    /// naming it.
    pub fn env(self) -> Result<Self, Error> {
        self.env_from(|name| std::env::var(name).ok())
    }

    /// [`env`](Self::env) with a custom lookup (tests, or another source of settings).
    pub fn env_from(mut self, get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        self.apply_env(get, Precedence::CodeWins)?;
        Ok(self)
    }

    /// Layered configuration: what code set so far are defaults, and every
    /// `LOGCOLLECT_*` variable that is set overrides them (the opposite of
    /// [`env`](Self::env), where code wins). Call it last, so operators can
    /// change any setting without a rebuild:
    ///
    /// ```no_run
    /// let config = logcollect::Config::builder()
    ///     .broker_uri("amqp://guest:guest@localhost//") // unless LOGCOLLECT_BROKER_URI says otherwise
    ///     .activity_identity([("project", "shop"), ("application", "api")])
    ///     .env_overrides()?
    ///     .build()?;
    /// # Ok::<(), logcollect::Error>(())
    /// ```
    ///
    /// A variable that is set but unusable is an error naming it.
    pub fn env_overrides(self) -> Result<Self, Error> {
        self.env_overrides_from(|name| std::env::var(name).ok())
    }

    /// [`env_overrides`](Self::env_overrides) with a custom lookup.
    pub fn env_overrides_from(
        mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        self.apply_env(get, Precedence::EnvWins)?;
        Ok(self)
    }

    /// Reads every variable of [`ENV_VARS`] that is set and not blank into
    /// the builder, with the given precedence over code settings.
    fn apply_env(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
        precedence: Precedence,
    ) -> Result<(), Error> {
        for (name, apply) in ENV_VARS {
            if let Some(v) = get(name).filter(|v| !v.trim().is_empty()) {
                apply(self, &v, precedence).map_err(|expected| env_err(name, &v, expected))?;
            }
        }
        Ok(())
    }

    /// Validates and builds the [`Config`].
    pub fn build(self) -> Result<Config, Error> {
        let uri = self.broker_uri.as_deref().unwrap_or(DEFAULT_BROKER_URI);
        let brokers = BrokerList::parse(uri)?;
        let filter = match &self.level {
            Some(spec) => Filter::parse(spec)?,
            None => Filter::new(DEFAULT_LEVEL),
        };
        let exchange = self.exchange.unwrap_or_else(|| DEFAULT_EXCHANGE.to_owned());
        let routing_key = self
            .routing_key
            .unwrap_or_else(|| DEFAULT_ROUTING_KEY.to_owned());
        // AMQP short strings: at most 255 bytes.
        check(exchange.len() <= 255, || {
            format!("exchange name is {} bytes; AMQP allows 255", exchange.len())
        })?;
        check(!exchange.is_empty(), || {
            "exchange name is empty: the default exchange cannot route by topic".to_owned()
        })?;
        check(routing_key.len() <= 200, || {
            format!(
                "routing_key is {} bytes; keep it under 200 so the logger name fits in AMQP's 255",
                routing_key.len()
            )
        })?;
        let queue_capacity = self.queue_capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY);
        check(queue_capacity >= 1, || {
            "queue_capacity must be at least 1".to_owned()
        })?;
        let max_record_bytes = self.max_record_bytes.unwrap_or(DEFAULT_MAX_RECORD_BYTES);
        check(max_record_bytes >= 4096, || {
            format!("max_record_bytes {max_record_bytes} is below the 4096-byte minimum (a record's fixed fields must fit)")
        })?;
        // RabbitMQ's default max message size is 128 MiB.
        check(max_record_bytes <= 128 << 20, || {
            format!("max_record_bytes {max_record_bytes} is above RabbitMQ's 128 MiB message limit")
        })?;
        // Unset, it grows with a large record cap instead of refusing it.
        let queue_max_bytes = self
            .queue_max_bytes
            .unwrap_or(DEFAULT_QUEUE_MAX_BYTES.max(max_record_bytes.saturating_mul(4)));
        check(queue_max_bytes / 4 >= max_record_bytes, || {
            format!(
                "queue_max_bytes {queue_max_bytes} is below four times max_record_bytes ({max_record_bytes}): \
                 records queued, in flight and read back from the spool must fit"
            )
        })?;
        let liveness_timeout = self.liveness_timeout.unwrap_or(DEFAULT_LIVENESS_TIMEOUT);
        check(liveness_timeout >= Duration::from_millis(100), || {
            format!("liveness_timeout {liveness_timeout:?} is below 100 ms: healthy brokers would be dropped")
        })?;
        let wake_interval = self.wake_interval.unwrap_or(DEFAULT_WAKE_INTERVAL);
        check(wake_interval <= Duration::from_secs(1), || {
            format!("wake_interval {wake_interval:?} is above 1 s: records would wait that long before leaving")
        })?;
        let confirm_window = self.confirm_window.unwrap_or(DEFAULT_CONFIRM_WINDOW);
        check(confirm_window >= 1, || {
            "confirm_window must be at least 1".to_owned()
        })?;
        let reconnect_min = self.reconnect_min.unwrap_or(DEFAULT_RECONNECT_MIN);
        let reconnect_max = self.reconnect_max.unwrap_or(DEFAULT_RECONNECT_MAX);
        check(
            !reconnect_min.is_zero() && reconnect_min <= reconnect_max,
            || {
                format!("reconnect_min ({reconnect_min:?}) must be above zero and at most reconnect_max ({reconnect_max:?})")
            },
        )?;
        let spool_max_bytes = self.spool_max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES);
        check(spool_max_bytes >= 1 << 20, || {
            format!("spool_max_bytes {spool_max_bytes} is below the 1 MiB minimum")
        })?;
        let records_per_message = self
            .records_per_message
            .unwrap_or(DEFAULT_RECORDS_PER_MESSAGE);
        check((1..=10_000).contains(&records_per_message), || {
            format!("records_per_message {records_per_message} is outside 1 to 10,000")
        })?;
        let batch_max_bytes = self
            .batch_max_bytes
            .unwrap_or(DEFAULT_BATCH_MAX_BYTES.max(max_record_bytes));
        check(batch_max_bytes >= max_record_bytes, || {
            format!("batch_max_bytes {batch_max_bytes} is below max_record_bytes {max_record_bytes}: a record could not be sent")
        })?;
        let tls = read_tls(
            self.tls_ca_file.as_deref(),
            self.tls_cert_file.as_deref(),
            self.tls_key_file.as_deref(),
        )?;
        let ecs_extra_prefix = self
            .ecs_extra_prefix
            .unwrap_or_else(|| DEFAULT_ECS_EXTRA_PREFIX.to_owned());
        crate::encode::check_ecs_extra_prefix(&ecs_extra_prefix)
            .map_err(|msg| Error::new(ErrorKind::InvalidConfig, msg))?;
        let activity_identity = self.activity_identity.unwrap_or_default();
        for (k, _) in &activity_identity {
            check(!k.is_empty(), || {
                "activity_identity has an empty key".to_owned()
            })?;
            // Identity pairs win over every field of a record; this one
            // would replace the record id, which Logstash uses as the
            // Elasticsearch document id.
            check(k != RECORD_ID_FIELD, || {
                format!(
                    "activity_identity key {RECORD_ID_FIELD:?} would replace every record's id, \
                     which Logstash uses as the Elasticsearch document id: each record would \
                     overwrite the last one's document. Rename the key (for example \
                     \"source_record_id\")"
                )
            })?;
        }
        Ok(Config {
            brokers,
            exchange,
            routing_key,
            durable: self.durable.unwrap_or(DEFAULT_DURABLE),
            auto_delete: self.auto_delete.unwrap_or(DEFAULT_AUTO_DELETE),
            filter,
            activity_identity,
            queue_capacity,
            queue_max_bytes,
            heartbeat: self.heartbeat.unwrap_or(DEFAULT_HEARTBEAT),
            liveness_timeout,
            wake_interval,
            shutdown_timeout: self.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            max_record_bytes,
            confirm_window,
            reconnect_min,
            reconnect_max,
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            tags: self.tags.unwrap_or_default(),
            type_name: self.type_name.unwrap_or_else(|| DEFAULT_TYPE.to_owned()),
            host: self.host.unwrap_or_else(default_host),
            ignored_targets: self.ignored_targets.unwrap_or_else(|| {
                DEFAULT_IGNORED_TARGETS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            }),
            spool_dir: self.spool_dir,
            spool_max_bytes,
            tls,
            records_per_message,
            batch_linger: self.batch_linger.unwrap_or(DEFAULT_BATCH_LINGER),
            batch_max_bytes,
            batch_format: self.batch_format.unwrap_or_default(),
            profile: self.profile.unwrap_or_default(),
            ecs_service_key: self
                .ecs_service_key
                .unwrap_or_else(|| DEFAULT_ECS_SERVICE_KEY.to_owned()),
            ecs_extra_prefix,
            panic_hook: self.panic_hook.unwrap_or(DEFAULT_PANIC_HOOK),
            redaction: self.redaction.unwrap_or(DEFAULT_REDACTION),
            redact_fields: self.redact_fields.unwrap_or_else(|| {
                DEFAULT_REDACT_FIELDS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            }),
            redact_values: self.redact_values.unwrap_or_else(|| {
                DEFAULT_REDACT_VALUES
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            }),
        })
    }
}

fn read_tls(
    ca: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<TlsFiles, Error> {
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidConfig,
                format!("cannot read the TLS {what} file {}", p.display()),
                e,
            )
        })
    };
    let ca_pem = match ca {
        Some(p) => {
            let text = String::from_utf8(read("CA", p)?)
                .ok()
                .filter(|t| t.contains("-----BEGIN CERTIFICATE-----"));
            Some(text.ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("the TLS CA file {} holds no PEM certificate", p.display()),
                )
            })?)
        }
        None => None,
    };
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((read("client certificate", c)?, read("client key", k)?)),
        (None, None) => None,
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "a TLS client certificate needs both tls_cert_file and tls_key_file",
            ))
        }
    };
    Ok(TlsFiles { ca_pem, identity })
}

fn default_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Whether an environment value replaces a setting that code made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precedence {
    /// Only settings that code left unset are filled ([`ConfigBuilder::env`]).
    CodeWins,
    /// Every variable that is set replaces the code's setting
    /// ([`ConfigBuilder::env_overrides`]).
    EnvWins,
}

/// Puts an environment value into a builder field, as `precedence` says.
fn put<T>(slot: &mut Option<T>, value: T, precedence: Precedence) -> Result<(), &'static str> {
    match precedence {
        Precedence::CodeWins if slot.is_some() => {}
        Precedence::CodeWins | Precedence::EnvWins => *slot = Some(value),
    }
    Ok(())
}

/// How a variable's text sets the builder; `Err` says what was expected.
type EnvApply = fn(&mut ConfigBuilder, &str, Precedence) -> Result<(), &'static str>;

/// Every `LOGCOLLECT_*` variable and how it sets the builder (the table in
/// [`Config`]'s documentation lists them with their settings). Read in this
/// order, so the first unusable one is the error.
const ENV_VARS: &[(&str, EnvApply)] = &[
    ("LOGCOLLECT_BROKER_URI", |b, v, p| {
        put(&mut b.broker_uri, v.to_owned(), p)
    }),
    ("LOGCOLLECT_EXCHANGE", |b, v, p| {
        put(&mut b.exchange, v.to_owned(), p)
    }),
    ("LOGCOLLECT_ROUTING_KEY", |b, v, p| {
        put(&mut b.routing_key, v.to_owned(), p)
    }),
    ("LOGCOLLECT_LEVEL", |b, v, p| {
        put(&mut b.level, v.to_owned(), p)
    }),
    ("LOGCOLLECT_TYPE", |b, v, p| {
        put(&mut b.type_name, v.to_owned(), p)
    }),
    ("LOGCOLLECT_HOST", |b, v, p| {
        put(&mut b.host, v.to_owned(), p)
    }),
    ("LOGCOLLECT_ECS_SERVICE_KEY", |b, v, p| {
        put(&mut b.ecs_service_key, v.to_owned(), p)
    }),
    ("LOGCOLLECT_ECS_EXTRA_PREFIX", |b, v, p| {
        put(&mut b.ecs_extra_prefix, v.to_owned(), p)
    }),
    ("LOGCOLLECT_PROFILE", |b, v, p| {
        let profile = v.parse().map_err(|_| "logcollect or ecs")?;
        put(&mut b.profile, profile, p)
    }),
    ("LOGCOLLECT_DURABLE", |b, v, p| {
        put(&mut b.durable, parse_bool(v)?, p)
    }),
    ("LOGCOLLECT_AUTO_DELETE", |b, v, p| {
        put(&mut b.auto_delete, parse_bool(v)?, p)
    }),
    ("LOGCOLLECT_ACTIVITY_IDENTITY", |b, v, p| {
        put(&mut b.activity_identity, parse_pairs(v)?, p)
    }),
    ("LOGCOLLECT_TAGS", |b, v, p| {
        put(&mut b.tags, parse_list(v), p)
    }),
    ("LOGCOLLECT_QUEUE_CAPACITY", |b, v, p| {
        put(&mut b.queue_capacity, parse_num(v)?, p)
    }),
    ("LOGCOLLECT_MAX_RECORD_BYTES", |b, v, p| {
        put(&mut b.max_record_bytes, parse_num(v)?, p)
    }),
    ("LOGCOLLECT_CONFIRM_WINDOW", |b, v, p| {
        put(&mut b.confirm_window, parse_num(v)?, p)
    }),
    ("LOGCOLLECT_SPOOL_DIR", |b, v, p| {
        put(&mut b.spool_dir, v.into(), p)
    }),
    ("LOGCOLLECT_BATCH", |b, v, p| {
        put(&mut b.records_per_message, parse_num(v)?, p)
    }),
    ("LOGCOLLECT_BATCH_LINGER_MS", |b, v, p| {
        let ms = parse_num(v)? as u64;
        put(&mut b.batch_linger, Duration::from_millis(ms), p)
    }),
    ("LOGCOLLECT_BATCH_FORMAT", |b, v, p| {
        let format = v.parse().map_err(|_| "json or json_lines")?;
        put(&mut b.batch_format, format, p)
    }),
    ("LOGCOLLECT_TLS_CA_FILE", |b, v, p| {
        put(&mut b.tls_ca_file, v.into(), p)
    }),
    ("LOGCOLLECT_TLS_CERT_FILE", |b, v, p| {
        put(&mut b.tls_cert_file, v.into(), p)
    }),
    ("LOGCOLLECT_TLS_KEY_FILE", |b, v, p| {
        put(&mut b.tls_key_file, v.into(), p)
    }),
    ("LOGCOLLECT_SPOOL_MAX_BYTES", |b, v, p| {
        put(&mut b.spool_max_bytes, parse_num(v)? as u64, p)
    }),
    ("LOGCOLLECT_QUEUE_MAX_BYTES", |b, v, p| {
        put(&mut b.queue_max_bytes, parse_num(v)?, p)
    }),
    ("LOGCOLLECT_HEARTBEAT", |b, v, p| {
        put(&mut b.heartbeat, parse_secs(v)?, p)
    }),
    ("LOGCOLLECT_LIVENESS_TIMEOUT", |b, v, p| {
        put(&mut b.liveness_timeout, parse_secs(v)?, p)
    }),
    ("LOGCOLLECT_SHUTDOWN_TIMEOUT", |b, v, p| {
        put(&mut b.shutdown_timeout, parse_secs(v)?, p)
    }),
    ("LOGCOLLECT_PANIC_HOOK", |b, v, p| {
        put(&mut b.panic_hook, parse_bool(v)?, p)
    }),
    ("LOGCOLLECT_REDACTION", |b, v, p| {
        put(&mut b.redaction, parse_bool(v)?, p)
    }),
    ("LOGCOLLECT_REDACT_FIELDS", |b, v, p| {
        put(&mut b.redact_fields, parse_list(v), p)
    }),
    ("LOGCOLLECT_REDACT_VALUES", |b, v, p| {
        put(&mut b.redact_values, parse_list(v), p)
    }),
];

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::InvalidConfig, msg()))
    }
}

fn env_err(name: &str, value: &str, expected: &str) -> Error {
    Error::new(
        ErrorKind::InvalidEnv,
        format!("{name}={value:?}: expected {expected}"),
    )
}

/// A comma-separated list, items trimmed, empty ones skipped.
fn parse_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

fn parse_bool(v: &str) -> Result<bool, &'static str> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("true/false, yes/no, on/off or 1/0"),
    }
}

fn parse_num(v: &str) -> Result<usize, &'static str> {
    v.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| "a whole number")
}

fn parse_secs(v: &str) -> Result<Duration, &'static str> {
    v.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or("a number of seconds (e.g. 5 or 0.5)")
}

fn parse_pairs(v: &str) -> Result<Vec<(String, String)>, &'static str> {
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, val)) if !k.trim().is_empty() => {
                Ok((k.trim().to_owned(), val.trim().to_owned()))
            }
            _ => Err("comma-separated key=value pairs, e.g. project=shop,application=api"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// Every default documented in the table on `Config` (STYLE §4).
    #[test]
    fn documented_defaults() {
        let c = Config::builder().build().unwrap();
        assert_eq!(c.brokers().len(), 1);
        let b = c.brokers().first();
        assert_eq!(
            (b.host(), b.port(), b.user(), b.vhost()),
            ("127.0.0.1", 5672, "guest", "/")
        );
        assert_eq!(c.exchange(), "logstash");
        assert_eq!(c.routing_key(), "logstash");
        assert!(!c.durable());
        assert!(!c.auto_delete());
        assert_eq!(c.filter().max_level(), Some(Level::Info));
        assert!(c.activity_identity().is_empty());
        assert_eq!(c.queue_capacity(), 65_536);
        assert_eq!(c.shutdown_timeout(), Duration::from_secs(5));
        assert_eq!(c.max_record_bytes(), 1 << 20);
        assert_eq!(c.confirm_window(), 1024);
        assert_eq!(c.reconnect_min, Duration::from_millis(100));
        assert_eq!(c.reconnect_max, Duration::from_secs(30));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert!(c.tags().is_empty());
        assert_eq!(c.type_name(), "Logstash");
        assert_eq!(c.host(), default_host());
        assert!(c.ignored_targets().iter().any(|t| t == "lapin"));
        assert!(c.ignored_targets().iter().any(|t| t == "amq_protocol"));
        assert_eq!(c.spool_dir(), None);
        assert_eq!(c.spool_max_bytes(), 256 << 20);
        assert_eq!(c.records_per_message(), 1);
        assert_eq!(c.batch_linger(), Duration::from_millis(5));
        assert_eq!(c.batch_max_bytes(), 1 << 20);
        assert_eq!(c.batch_format(), BatchFormat::JsonArray);
        assert!(!c.has_tls_ca() && !c.has_tls_client_cert());
        assert_eq!(c.queue_max_bytes(), 64 << 20);
        assert_eq!(c.heartbeat(), Duration::from_secs(5));
        assert_eq!(c.liveness_timeout(), Duration::from_secs(10));
        assert_eq!(c.wake_interval(), Duration::from_millis(1));
        // Unset, the byte bound grows with a large record cap.
        let big = Config::builder()
            .max_record_bytes(64 << 20)
            .build()
            .unwrap();
        assert_eq!(big.queue_max_bytes(), 256 << 20);
    }

    #[test]
    fn liveness_and_memory_settings_from_code_and_env() {
        let c = Config::builder()
            .env_from(env(&[
                ("LOGCOLLECT_QUEUE_MAX_BYTES", "8000000"),
                ("LOGCOLLECT_HEARTBEAT", "2"),
                ("LOGCOLLECT_LIVENESS_TIMEOUT", "3.5"),
            ]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.queue_max_bytes(), 8_000_000);
        assert_eq!(c.heartbeat(), Duration::from_secs(2));
        assert_eq!(c.liveness_timeout(), Duration::from_millis(3500));
        let err = |b: ConfigBuilder| b.build().unwrap_err().to_string();
        assert!(
            err(Config::builder().queue_max_bytes(1 << 20)).contains("four times max_record_bytes")
        );
        assert!(
            err(Config::builder().liveness_timeout(Duration::from_millis(10)))
                .contains("below 100 ms")
        );
        assert!(err(Config::builder().wake_interval(Duration::from_secs(2))).contains("above 1 s"));
    }

    /// No value can make a deadline overflow later: absurd timeouts are
    /// taken (they mean "for ever"); what cannot be a duration is refused.
    #[test]
    fn huge_timeouts_are_accepted_and_impossible_ones_refused() {
        let c = Config::builder()
            .env_from(env(&[("LOGCOLLECT_SHUTDOWN_TIMEOUT", "1e19")]))
            .unwrap()
            .build()
            .unwrap();
        assert!(c.shutdown_timeout() > Duration::from_secs(1 << 62));
        let c = Config::builder()
            .shutdown_timeout(Duration::MAX)
            .build()
            .unwrap();
        assert_eq!(c.shutdown_timeout(), Duration::MAX);
        for bad in ["1e400", "-1", "NaN", "inf"] {
            let e = Config::builder()
                .env_from(env(&[("LOGCOLLECT_SHUTDOWN_TIMEOUT", bad)]))
                .unwrap_err();
            assert!(
                e.to_string().contains("LOGCOLLECT_SHUTDOWN_TIMEOUT"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn env_fills_everything() {
        let c = Config::builder()
            .env_from(env(&[
                ("LOGCOLLECT_BROKER_URI", "amqp://u:p@h:5673//v"),
                ("LOGCOLLECT_EXCHANGE", "ex"),
                ("LOGCOLLECT_ROUTING_KEY", "rk"),
                ("LOGCOLLECT_DURABLE", "yes"),
                ("LOGCOLLECT_LEVEL", "warning,app=debug"),
                (
                    "LOGCOLLECT_ACTIVITY_IDENTITY",
                    "project=github, application=backend",
                ),
                ("LOGCOLLECT_SHUTDOWN_TIMEOUT", "0.5"),
                ("LOGCOLLECT_QUEUE_CAPACITY", "10_000"),
                ("LOGCOLLECT_TAGS", "a, b"),
                ("LOGCOLLECT_SPOOL_DIR", "/var/spool/lc"),
                ("LOGCOLLECT_SPOOL_MAX_BYTES", "2000000"),
            ]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.brokers().first().vhost(), "/v");
        assert_eq!(c.brokers().first().port(), 5673);
        assert_eq!(
            (c.exchange(), c.routing_key(), c.durable()),
            ("ex", "rk", true)
        );
        assert!(c.filter().enabled("app", Level::Debug));
        assert!(!c.filter().enabled("other", Level::Info));
        assert_eq!(
            c.activity_identity(),
            &[
                ("project".into(), "github".into()),
                ("application".into(), "backend".into())
            ]
        );
        assert_eq!(c.shutdown_timeout(), Duration::from_millis(500));
        assert_eq!(c.queue_capacity(), 10_000);
        assert_eq!(c.tags(), &["a".to_owned(), "b".to_owned()]);
        assert_eq!(c.spool_dir(), Some(std::path::Path::new("/var/spool/lc")));
        assert_eq!(c.spool_max_bytes(), 2_000_000);
    }

    #[test]
    fn code_settings_win_over_env_in_any_order() {
        let e = env(&[
            ("LOGCOLLECT_EXCHANGE", "from-env"),
            ("LOGCOLLECT_DURABLE", "1"),
        ]);
        let before = Config::builder()
            .exchange("code")
            .env_from(&e)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(before.exchange(), "code");
        assert!(before.durable(), "unset in code, so env applies");
        let after = Config::builder()
            .env_from(&e)
            .unwrap()
            .exchange("code")
            .durable(false)
            .build()
            .unwrap();
        assert_eq!(after.exchange(), "code");
        assert!(!after.durable());
    }

    #[test]
    fn env_overrides_code_settings_and_keeps_the_rest() {
        let e = env(&[
            ("LOGCOLLECT_EXCHANGE", "from-env"),
            ("LOGCOLLECT_DURABLE", "1"),
            ("LOGCOLLECT_LEVEL", "  "),
        ]);
        let c = Config::builder()
            .exchange("code")
            .durable(false)
            .host("code-host")
            .level("warning")
            .env_overrides_from(&e)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.exchange(), "from-env", "the environment overrides code");
        assert!(c.durable());
        assert_eq!(c.host(), "code-host", "unset variables leave code settings");
        assert_eq!(
            c.filter().max_level(),
            Some(Level::Warning),
            "a blank variable counts as unset"
        );
        let err = Config::builder()
            .env_overrides_from(env(&[("LOGCOLLECT_DURABLE", "maybe")]))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidEnv);
    }

    /// Every variable of the table is in `Config`'s documentation.
    #[test]
    fn every_env_variable_is_documented() {
        let source = include_str!("config.rs");
        for (name, _) in ENV_VARS {
            assert!(
                source
                    .lines()
                    .any(|l| l.starts_with("/// |") && l.contains(&format!("`{name}`"))),
                "{name} is missing from the table on Config"
            );
        }
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        for (name, value) in [
            ("LOGCOLLECT_DURABLE", "maybe"),
            ("LOGCOLLECT_SHUTDOWN_TIMEOUT", "soon"),
            ("LOGCOLLECT_SHUTDOWN_TIMEOUT", "-1"),
            ("LOGCOLLECT_QUEUE_CAPACITY", "lots"),
            ("LOGCOLLECT_ACTIVITY_IDENTITY", "project"),
            ("LOGCOLLECT_ACTIVITY_IDENTITY", "=x"),
        ] {
            let err = Config::builder()
                .env_from(env(&[(name, value)]))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidEnv);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn bad_code_values_are_clear_errors() {
        let cases = [
            Config::builder().queue_capacity(0),
            Config::builder().max_record_bytes(100),
            Config::builder().confirm_window(0),
            Config::builder().exchange(""),
            Config::builder().exchange("x".repeat(300)),
            Config::builder().level("loud"),
            Config::builder().reconnect_min(Duration::from_secs(60)),
            Config::builder().activity_identity([("", "x")]),
            Config::builder().activity_identity([("record_id", "x")]),
        ];
        for b in cases {
            let e = b.build().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        }
        let e = Config::builder()
            .broker_uri("http://x")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidUri);
    }

    /// An identity pair wins over every field: `record_id` would give every
    /// record one id, hence one Elasticsearch document between them.
    #[test]
    fn identity_may_not_replace_the_record_id() {
        for b in [
            Config::builder().activity_identity([("project", "p"), ("record_id", "x")]),
            Config::builder()
                .env_from(env(&[("LOGCOLLECT_ACTIVITY_IDENTITY", "record_id=x")]))
                .unwrap(),
        ] {
            let e = b.build().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
            let text = e.to_string();
            for want in ["\"record_id\"", "document id", "Rename the key"] {
                assert!(text.contains(want), "{want:?} not in {text}");
            }
        }
        // Keys that merely contain it are fine.
        Config::builder()
            .activity_identity([("source_record_id", "x")])
            .build()
            .unwrap();
    }

    #[test]
    fn debug_never_shows_password() {
        let b = Config::builder().broker_uri("amqp://u:s3cr3tpw@h//");
        assert!(!format!("{b:?}").contains("s3cr3tpw"));
        let c = b.build().unwrap();
        assert!(!format!("{c:?}").contains("s3cr3tpw"));
    }

    /// The `profile` and `ecs_*` rows of the table, and their variables.
    #[test]
    fn profile_settings_defaults_env_and_errors() {
        let c = Config::builder().build().unwrap();
        assert_eq!(c.profile(), Profile::Logcollect);
        assert_eq!(c.ecs_service_key(), "application");
        assert_eq!(c.ecs_extra_prefix(), "extra");
        let e = env(&[
            ("LOGCOLLECT_PROFILE", " ECS "),
            ("LOGCOLLECT_ECS_SERVICE_KEY", "app"),
            ("LOGCOLLECT_ECS_EXTRA_PREFIX", "my.extra"),
        ]);
        let c = Config::builder().env_from(&e).unwrap().build().unwrap();
        assert_eq!(
            (c.profile(), c.ecs_service_key(), c.ecs_extra_prefix()),
            (Profile::Ecs, "app", "my.extra")
        );
        let code = Config::builder().profile(Profile::Logcollect);
        let c = code.env_from(&e).unwrap().build().unwrap();
        assert_eq!(c.profile(), Profile::Logcollect, "code wins");
        let err = Config::builder()
            .env_from(env(&[("LOGCOLLECT_PROFILE", "elastic")]))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidEnv);
        assert!(err.to_string().contains("LOGCOLLECT_PROFILE"), "{err}");
        for bad in ["", "host", "a..b", "_x", "[a]", "a.b.c.d.e"] {
            let e = Config::builder().ecs_extra_prefix(bad).build().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad:?}: {e}");
        }
    }

    #[test]
    fn ignored_targets_match_module_boundaries() {
        let c = Config::builder().level("trace").build().unwrap();
        assert!(!c.wants("lapin::channel", Level::Error));
        assert!(!c.wants("amq_protocol_tcp", Level::Error));
        assert!(c.wants("lapinator", Level::Info));
        assert!(c.wants("my_app", Level::Trace));
    }
}
