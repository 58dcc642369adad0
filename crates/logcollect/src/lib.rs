//! # logcollect
//!
//! Ship every record a Rust service writes through [`log`] or [`tracing`] to
//! a RabbitMQ topic exchange as Logstash JSON, for the ELK stack — with one
//! line of set-up. A port (and a repair) of the Python library `logcollect`
//! 0.14, wire-compatible with it so Python and Rust services share one Kibana.
//!
//! ## Quick start
//!
//! ```no_run
//! fn main() -> Result<(), logcollect::Error> {
//!     let _guard = logcollect::boot::default_config(
//!         logcollect::Config::builder()
//!             .broker_uri("amqp://guest:guest@localhost//")
//!             .activity_identity([("project", "github"), ("application", "backend")])
//!             .build()?,
//!     )?;
//!     log::info!(user = "ann"; "hello from {}", "log");
//!     tracing::info!(order = 42, "hello from tracing");
//!     Ok(())
//!     // the guard flushes (within `shutdown_timeout`) when dropped
//! }
//! ```
//!
//! A log call never blocks and never panics: it encodes the record on the
//! calling thread and hands it to a bounded queue. The `logcollect-shipper`
//! thread publishes with publisher confirms, republishes what was not
//! confirmed after a failure, and reconnects forever with backoff.
//!
//! ## Feature flags
//!
//! | feature | default | what |
//! |---|---|---|
//! | `log` | yes | [`LogcollectLogger`], a `log::Log` |
//! | `tracing` | yes | [`LogcollectLayer`], a `tracing_subscriber::Layer` |
//! | `testing` | no | `testing`: capture what code logs as parsed JSON, without a broker |
//! | `lapin-api` | no | the items that name lapin types: `amqp::connect` and its kin, `BrokerUri::to_lapin`, `correlation::inject_properties` / `extract_properties` and `correlation::Headers` for lapin's `FieldTable`; they follow lapin's major versions, not ours |
//!
//! MSRV: Rust 1.89 (for `File::try_lock`, which guards the spool directory).
//!
//! ## Record fields
//!
//! | Logstash field | from `log` | from `tracing` |
//! |---|---|---|
//! | `@timestamp` | time of the call, UTC, microseconds, `Z` | same |
//! | `@version` | `1` | `1` |
//! | `message` | the formatted message | the `message` field |
//! | `host`, `tags`, `type` | configuration | configuration |
//! | `seq` | counter within one microsecond tick (Python's `seq`) | same |
//! | `levelname` | `ERROR` `WARNING` `INFO` `DEBUG` `TRACE` | same |
//! | `logger` | `target()` | event target |
//! | `stack_info` | `null` (as Python) | same |
//! | `process` | process id | same |
//! | `threadName` | thread name | same |
//! | `pathname`, `lineno`, `module` | `file()`, `line()`, `module_path()` | callsite |
//! | `record_id` | UUIDv7, also the AMQP `message_id` | same |
//! | other keys | key-values (`log::info!(k = v; …)`) | event fields, then span fields (innermost wins) |
//! | `exc_info`, `error_chain` | a `dyn Error` value: message and `Caused by:` chain | an error field |
//! | activity identity | every configured pair, winning over all else | same |
//!
//! A user key equal to one of these fields is sent as `extra_<key>`; keys
//! starting with `@` or `_` or holding `[` `]` are rewritten; a record over
//! `max_record_bytes` is cut and marked `truncated: true`.
//!
//! The routing key is `<routing_key>.<logger>` with `::` as `.`:
//! `logstash.my_app.db`; bind Logstash's queue with `logstash.#`.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod encode;
mod error;
mod filter;
mod record;
mod report;
mod ship;
mod uri;

pub mod amqp;
pub mod boot;

/// Every tunable's default in one place (each is also at the crate root).
pub mod defaults {
    pub use crate::config::{
        DEFAULT_AUTO_DELETE, DEFAULT_BATCH_LINGER, DEFAULT_BATCH_MAX_BYTES, DEFAULT_CONFIRM_WINDOW,
        DEFAULT_CONNECT_TIMEOUT, DEFAULT_DURABLE, DEFAULT_EXCHANGE, DEFAULT_HEARTBEAT,
        DEFAULT_IGNORED_TARGETS, DEFAULT_LIVENESS_TIMEOUT, DEFAULT_MAX_RECORD_BYTES,
        DEFAULT_PANIC_HOOK, DEFAULT_QUEUE_CAPACITY, DEFAULT_QUEUE_MAX_BYTES, DEFAULT_RECONNECT_MAX,
        DEFAULT_RECONNECT_MIN, DEFAULT_RECORDS_PER_MESSAGE, DEFAULT_REDACTION,
        DEFAULT_REDACT_FIELDS, DEFAULT_REDACT_VALUES, DEFAULT_ROUTING_KEY,
        DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_SPOOL_MAX_BYTES, DEFAULT_TYPE, DEFAULT_WAKE_INTERVAL,
    };
    pub use crate::encode::{DEFAULT_ECS_EXTRA_PREFIX, DEFAULT_ECS_SERVICE_KEY};
    pub use crate::record::DEFAULT_LEVEL;
    pub use crate::ship::DEFAULT_THREAD_NAME;
    pub use crate::uri::DEFAULT_BROKER_URI;
}
pub mod correlation;
mod front;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use config::{
    BatchFormat, Config, ConfigBuilder, DEFAULT_AUTO_DELETE, DEFAULT_BATCH_LINGER,
    DEFAULT_BATCH_MAX_BYTES, DEFAULT_CONFIRM_WINDOW, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DURABLE,
    DEFAULT_EXCHANGE, DEFAULT_HEARTBEAT, DEFAULT_IGNORED_TARGETS, DEFAULT_LIVENESS_TIMEOUT,
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_PANIC_HOOK, DEFAULT_QUEUE_CAPACITY, DEFAULT_QUEUE_MAX_BYTES,
    DEFAULT_RECONNECT_MAX, DEFAULT_RECONNECT_MIN, DEFAULT_RECORDS_PER_MESSAGE, DEFAULT_REDACTION,
    DEFAULT_REDACT_FIELDS, DEFAULT_REDACT_VALUES, DEFAULT_ROUTING_KEY, DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_SPOOL_MAX_BYTES, DEFAULT_TYPE, DEFAULT_WAKE_INTERVAL,
};
pub use encode::{
    Profile, DEFAULT_ECS_EXTRA_PREFIX, DEFAULT_ECS_SERVICE_KEY, ECS_RESERVED_ROOTS, ECS_VERSION,
    RECORD_FIELDS, RENAMED_KEY_PREFIX, TYPE_TRACKING_MAX_KEYS,
};
pub use error::{Error, ErrorKind, ShutdownError};
pub use filter::Filter;
#[cfg(feature = "log")]
#[cfg_attr(docsrs, doc(cfg(feature = "log")))]
pub use front::log::LogcollectLogger;
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub use front::tracing::LogcollectLayer;
pub use front::LevelHandle;
pub use record::{ExceptionInfo, FieldValue, Level, Record, DEFAULT_LEVEL};
pub use ship::{Shipper, ShipperBuilder, ShipperGuard, Stats, DEFAULT_THREAD_NAME};
pub use uri::{BrokerList, BrokerUri, DEFAULT_BROKER_URI};

/// Call in a child process right after `fork()`, on the thread that forked,
/// if the process logged before forking.
///
/// Each record's `record_id` (a UUIDv7, which Logstash can use as the
/// document id) ends in random bits from the thread's random generator. A
/// child inherits its parent's generator as it was at the fork, so two
/// children of one process would draw the same bits for their n-th record,
/// and two records made in the same microsecond would get the same id (one
/// of them then overwrites the other in Elasticsearch). This gives the
/// generator a fresh seed. The Python package calls it from its fork hook;
/// a Rust program that forks after logging should call it in the child.
pub fn after_fork_in_child() {
    encode::reseed_record_ids();
}
