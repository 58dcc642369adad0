//! The Logstash JSON encoder. Pure: no I/O and no clock; the caller passes
//! each record's time and id in ([`Stamp`]).
//!
//! Files, one job each: this one holds the [`Encoder`] and the
//! [`RecordWriter`] the front-ends fill, and dispatches to the profile
//! ([`Profile`]) in one place (`Shape`); `logcollect.rs` and `ecs.rs` are
//! the two profiles; `json.rs` writes JSON text; `keys.rs` guards user keys;
//! `types.rs` tracks each key's JSON type; `time.rs` writes `@timestamp`;
//! `traceparent.rs` reads W3C `traceparent` values.
//!
//! Field order follows the Python library where it can (`@timestamp`,
//! `@version`, `host`, `tags`, `type`, `seq`, `levelname`, `logger`,
//! `stack_info`, `process`), then our source fields, the record id, the
//! user's fields, `message`, error details and the activity identity last.
//! JSON key order carries no meaning to Logstash; the field *set* and JSON
//! types are what matter for a shared Kibana, and the golden tests check them.
//!
//! Guards (DESIGN §5): a user key equal to a field we write (or to an
//! activity-identity key) is renamed `extra_<key>`; keys starting with `@` or
//! `_` and keys with `[` `]` are rewritten; duplicates keep the first value;
//! non-finite floats become strings; the output is one JSON object of at most
//! `max_record_bytes` bytes (larger records are truncated with a marker).
//!
//! Type stability (both profiles): the first JSON type a user key is sent
//! with in a process is remembered (`types.rs`); a later value of
//! another type goes to `<key>_<type>`, so Elasticsearch's dynamic mapping
//! never rejects the document.

use std::cell::{Cell, RefCell};
use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use crate::record::{ExceptionInfo, FieldValue, Level, Record};

mod ecs;
mod json;
mod key_cache;
mod keys;
mod logcollect;
mod redact;
mod time;
mod traceparent;
mod types;

pub(crate) use ecs::check_ecs_extra_prefix;
pub use ecs::{DEFAULT_ECS_EXTRA_PREFIX, DEFAULT_ECS_SERVICE_KEY, ECS_RESERVED_ROOTS, ECS_VERSION};
pub(crate) use json::{push_f64, push_json_bytes, push_u64, JsonStrWriter};
pub use keys::RENAMED_KEY_PREFIX;
pub use logcollect::RECORD_FIELDS;
pub(crate) use logcollect::RECORD_ID_FIELD;
pub(crate) use traceparent::parse as traceparent;
pub use types::TYPE_TRACKING_MAX_KEYS;

use json::{cut_to, push_json_str, push_nested, truncate_at_char};
use key_cache::KeyFacts;
use redact::{Redactor, REDACTED};
use types::{Kind, TypeTracker};

/// Logger names, file paths and module paths longer than this are cut in the
/// record, so the fixed part of a record always fits the smallest size cap
/// (4 KiB) with room to spare.
const MAX_HEAD_STR: usize = 1024;

/// `seq` stops growing here, as in the Python library.
const SEQ_CAP: u64 = 1000;

/// The shape of the JSON records (`profile` setting, `LOGCOLLECT_PROFILE`).
///
/// One shipper writes one profile; two shippers of one process may use
/// different ones (each exchange then receives only its own shape).
///
/// # `Logcollect` (the default)
///
/// Flat Logstash JSON, wire-compatible with the Python library (see the
/// crate documentation for the field table). Pick it for a classic
/// Logstash/Kibana shared with Python logcollect services.
///
/// # `Ecs`
///
/// [Elastic Common Schema](https://www.elastic.co/guide/en/ecs/current/index.html)
/// version [`ECS_VERSION`], as **nested objects** (`{"log":{"level":"info"}}`,
/// never the dotted key `"log.level"`). Pick it for Logstash 8 in ECS
/// compatibility mode and the stack's `logs-*` index templates
/// (`ecs@mappings`), which map `host`, `process`, `error` and `event` as
/// objects and reject the `logcollect` profile's string `host`.
///
/// | ECS field | value |
/// |---|---|
/// | `@timestamp` | time of the call, UTC, microseconds, `Z` |
/// | `message` | the formatted message |
/// | `log.level` | `trace` `debug` `info` `warn` `error` `critical` (the lowercase Rust names; `critical` for [`Level::Critical`]) |
/// | `log.logger` | the `log` target or `tracing` event target (`root` when empty) |
/// | `log.origin.file.name`, `log.origin.file.line` | call site, when known |
/// | `ecs.version` | [`ECS_VERSION`] |
/// | `host.hostname`, `host.name` | the `host` setting |
/// | `process.pid`, `process.thread.name` | this process and thread |
/// | `service.name` | the activity-identity value of `ecs_service_key` ([`DEFAULT_ECS_SERVICE_KEY`]: `application`), when the identity has it |
/// | `labels.<key>` | every other activity-identity pair (`.` in a key becomes `_`: labels are flat) |
/// | `tags` | the `tags` setting |
/// | `event.id` | the record id: UUIDv7, also the AMQP `message_id` |
/// | `event.sequence` | `seq` of the `logcollect` profile |
/// | `event.dataset`, `data_stream.dataset` | `<service.name>.log` as a data stream name accepts it (lowercase; `-` and characters index names refuse become `_`; at most 100 bytes), so Logstash writes each service to data stream `logs-<service>.log-default`; absent without a service name |
/// | `error.type`, `error.message`, `error.stack_trace` | the first `dyn Error` field of a record: its field name (Rust has no runtime type name for a `dyn Error`), its message, and the message with its `Caused by:` chain |
/// | `trace.id`, `span.id` | fields `trace_id` / `span_id`, else the parts of a valid W3C `traceparent` field |
/// | `http.request.id` | field `request_id` |
/// | other fields | as nested objects: `a.b` = 1 → `{"a":{"b":1}}` |
/// | user fields under any ECS root ([`ECS_RESERVED_ROOTS`]) | moved under `ecs_extra_prefix` ([`DEFAULT_ECS_EXTRA_PREFIX`]: `extra`): `host` → `extra.host`, `user` → `extra.user` |
/// | truncation marker | `logcollect.truncated`, `logcollect.original_bytes`, `logcollect.dropped_fields` |
///
/// The `type` setting and the module path have no ECS field and are not sent.
///
/// Field rules in ECS:
/// - A key is split at `.` into a path; empty parts are skipped (`a..b` is
///   `a.b`, a key of only dots is `empty_key`); each part goes through the
///   key guards of the `logcollect` profile (`@x` → `at_x`, `_x` → `extra__x`,
///   `[` `]` → `_`); a path deeper than 10 parts has its tail joined with `_`
///   (Elasticsearch rejects objects nested deeper than 20).
/// - A path whose first part is an ECS root ([`ECS_RESERVED_ROOTS`]: all
///   44 of ECS 8.11, and `logcollect`) goes under `ecs_extra_prefix`, so
///   user data never overwrites an ECS field nor changes its type; other
///   user fields stay at the top level, beside ECS's, as ECS's custom fields.
/// - `trace_id`, `span_id`, `traceparent` and `request_id` are taken as ECS
///   fields when they are strings or numbers of at most 256 bytes
///   (`traceparent` only when valid); otherwise they stay ordinary fields.
/// - Within a record, the first value of a path wins (as in the `logcollect`
///   profile). When one record holds both a value and an object at the same
///   path (`a` = 1 and `a.b` = 2), the type rule below renames one of them;
///   when the key is not tracked (see [`TYPE_TRACKING_MAX_KEYS`]), `a` stays
///   the object and the value moves to `a.value`.
///
/// # Type stability (both profiles)
///
/// Elasticsearch maps a field by the first value it sees and rejects later
/// documents whose value has another type (a string in a `long` field, a
/// scalar where an object was). The encoder remembers, per shipper, the
/// first JSON type of every user key (every path and parent path in ECS)
/// as one of `str`, `num` (integers and floats: Elasticsearch coerces
/// between them), `bool`, `obj`, `arr`; a later value of another type is
/// written under `<key>_<type>`, consistently: `count` = 3 then
/// `count` = "many" gives `count` and `count_str`; in ECS `a` = 1 then
/// `a.b` = 2 gives `a` and `a_obj.b`. `null` matches every type. Our own
/// fields and the activity identity have fixed types and are not tracked.
/// At most [`TYPE_TRACKING_MAX_KEYS`] keys are remembered; keys first seen
/// after that are written as they come. NaN and infinities are strings, so
/// they count as `str`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Profile {
    /// Flat Logstash JSON compatible with the Python library.
    #[default]
    Logcollect,
    /// Elastic Common Schema, as nested objects.
    Ecs,
}

impl Profile {
    /// The name `LOGCOLLECT_PROFILE` takes: `logcollect` or `ecs`.
    pub const fn name(self) -> &'static str {
        match self {
            Profile::Logcollect => "logcollect",
            Profile::Ecs => "ecs",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Profile {
    type Err = crate::error::Error;
    /// `logcollect` (or `default`) and `ecs`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "logcollect" | "default" => Ok(Profile::Logcollect),
            "ecs" => Ok(Profile::Ecs),
            other => Err(crate::error::Error::new(
                crate::error::ErrorKind::InvalidConfig,
                format!("unknown profile {other:?}: expected logcollect or ecs"),
            )),
        }
    }
}

/// One encoded record, ready for the queue.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    pub(crate) id: uuid::Uuid,
    pub(crate) routing_key: String,
    pub(crate) body: Vec<u8>,
    /// Cut to the size cap (the body carries the `truncated` marker).
    pub(crate) truncated: bool,
}

/// What the encoder needs from the configuration; `Config` builds it
/// (`Config::encoder_settings`), so the encoder depends on nothing above it.
#[derive(Debug, Clone)]
pub(crate) struct EncoderSettings {
    /// The `host` field (ECS: `host.hostname` and `host.name`).
    pub(crate) host: String,
    /// The `tags` field.
    pub(crate) tags: Vec<String>,
    /// The `type` field (not sent in ECS).
    pub(crate) type_name: String,
    /// Pairs merged into every record, winning over every other field.
    pub(crate) activity_identity: Vec<(String, String)>,
    /// Routing keys are `<routing_prefix>.<logger>`.
    pub(crate) routing_prefix: String,
    /// Cap on one record; larger ones are truncated with a marker.
    pub(crate) max_record_bytes: usize,
    /// The `process` field (ECS: `process.pid`).
    pub(crate) process_id: u32,
    /// The record shape.
    pub(crate) profile: Profile,
    /// ECS: the identity key whose value is `service.name`.
    pub(crate) ecs_service_key: String,
    /// ECS: the object that receives user fields under an ECS root.
    pub(crate) ecs_extra_prefix: String,
    /// Field-name globs whose values are redacted (empty: none).
    pub(crate) redact_fields: Vec<String>,
    /// Value globs that are redacted (empty: none).
    pub(crate) redact_values: Vec<String>,
}

/// When a record was made and its id. The caller gives both (the shipper
/// reads the clock and makes a UUIDv7): the encoder reads no clock, so a
/// test can pass fixed values and compare whole records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    /// Microseconds since the Unix epoch.
    pub(crate) micros: u64,
    /// The record id: `record_id` (ECS: `event.id`), and the AMQP `message_id`.
    pub(crate) id: uuid::Uuid,
}

impl Stamp {
    /// Now, with a fresh UUIDv7: what the shipper (and `amqp::encode_record`)
    /// give a record made this instant. The encoder itself never calls it.
    pub(crate) fn now() -> Stamp {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        Stamp {
            micros,
            id: record_id(micros),
        }
    }
}

/// The UUIDv7 of a record made at `micros`: the record's own time, to the
/// millisecond, then its sub-millisecond part in the 12 bits RFC 9562 leaves
/// to the implementation (§6.2, method 3: 1,000 µs in 4,096 steps), then 62
/// bits from this thread's random generator. `Uuid::now_v7` read the clock
/// a second time and went through a process-wide counter; this costs a
/// sixth of it, and ids still sort by time (to the microsecond across
/// threads) and never repeat (62 random bits per microsecond).
/// Gives the calling thread's random generator (the random part of record
/// ids) a fresh seed from the operating system. A forked child copies its
/// parent's generator, so without this the children of one process draw the
/// same "random" parts (see [`crate::after_fork_in_child`]).
pub(crate) fn reseed_record_ids() {
    // An OS that cannot give entropy leaves the old seed: ids then still
    // differ by time, as before the fork.
    let _ = rand::rng().reseed();
}

fn record_id(micros: u64) -> uuid::Uuid {
    // < 4096: the top four bits are left for the version.
    let sub_milli = ((micros % 1000) * 4096 / 1000) as u16;
    let mut bytes = [0u8; 10];
    bytes[..2].copy_from_slice(&sub_milli.to_be_bytes());
    bytes[2..].copy_from_slice(&rand::random::<u64>().to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(micros / 1000, &bytes).into_uuid()
}

/// The encoder of one shipper. Its state: the profile's precomputed parts,
/// the `seq` counter and the field-type tracker; everything else a record
/// needs comes in with the call.
#[derive(Debug)]
pub(crate) struct Encoder {
    shape: Shape,
    routing_prefix: String,
    max_bytes: usize,
    /// `(micros << 11) | seq` of the last record: one atomic for both.
    seq_state: AtomicU64,
    /// First JSON type of each user key (type stability, both profiles).
    types: TypeTracker,
    /// Which field values are never sent.
    redactor: Redactor,
    /// Values replaced by `[redacted]` so far.
    redacted: AtomicU64,
    /// Tells this encoder's entries apart in the per-thread key cache.
    id: u64,
}

/// The profile's precomputed parts. Everything the two profiles do
/// differently goes through the five hooks of `impl Shape` (head, key,
/// error, exception, finish): the one place the profile is dispatched.
#[derive(Debug)]
enum Shape {
    Logcollect(logcollect::Parts),
    Ecs(Box<ecs::EcsParts>),
}

impl Shape {
    fn head(&self, h: &Head<'_>) -> Vec<u8> {
        match self {
            Shape::Logcollect(p) => p.head(h),
            Shape::Ecs(p) => p.head(h),
        }
    }

    #[inline]
    fn key(&self, w: &mut RecordWriter<'_>, key: &str, kind: Kind, facts: &KeyFacts) -> bool {
        match self {
            Shape::Logcollect(p) => p.key(w, key, kind, facts),
            Shape::Ecs(p) => p.key(w, key, kind),
        }
    }

    fn exception(&self, w: &mut RecordWriter<'_>, e: &ExceptionInfo) {
        match self {
            Shape::Logcollect(p) => p.exception(w, e),
            Shape::Ecs(p) => p.exception(w, e),
        }
    }

    fn error(&self, w: &mut RecordWriter<'_>, key: &str, err: &(dyn StdError + 'static)) {
        match self {
            Shape::Logcollect(p) => p.error(w, key, err),
            Shape::Ecs(p) => p.error(w, key, err),
        }
    }

    fn finish(&self, w: RecordWriter<'_>) -> Encoded {
        match self {
            Shape::Logcollect(p) => p.finish(w),
            Shape::Ecs(p) => p.finish(w),
        }
    }
}

/// A record's facts known at its start, from which a profile writes the
/// fields it puts first.
#[derive(Debug)]
pub(crate) struct Head<'a> {
    pub(crate) level: Level,
    /// The logger name, `root` when empty.
    pub(crate) logger: &'a str,
    pub(crate) loc: Location<'a>,
    pub(crate) origin: Origin<'a>,
    pub(crate) micros: u64,
    pub(crate) id: uuid::Uuid,
    pub(crate) seq: u64,
}

impl Encoder {
    pub(crate) fn new(settings: &EncoderSettings) -> Encoder {
        Encoder {
            shape: match settings.profile {
                Profile::Logcollect => Shape::Logcollect(logcollect::Parts::new(settings)),
                Profile::Ecs => Shape::Ecs(Box::new(ecs::EcsParts::new(settings))),
            },
            routing_prefix: settings.routing_prefix.clone(),
            max_bytes: settings.max_record_bytes,
            seq_state: AtomicU64::new(0),
            types: TypeTracker::new(TYPE_TRACKING_MAX_KEYS),
            redactor: Redactor::new(&settings.redact_fields, &settings.redact_values),
            redacted: AtomicU64::new(0),
            id: key_cache::next_encoder_id(),
        }
    }

    /// The checks on `key` under this encoder, once per key and thread.
    #[inline]
    fn key_facts(&self, key: &str) -> KeyFacts {
        key_cache::facts(self.id, key, || {
            let (plain, hash) = match &self.shape {
                Shape::Logcollect(p) => p.plain(key),
                Shape::Ecs(_) => (false, 0),
            };
            KeyFacts {
                redacted: self.redactor.field(key),
                plain,
                hash,
                bare: !key.as_bytes().iter().any(json::needs_escape),
                agreed: None,
            }
        })
    }

    /// How many values were replaced by `[redacted]`.
    pub(crate) fn redacted(&self) -> u64 {
        self.redacted.load(Ordering::Relaxed)
    }

    /// Python's `seq`: 1 for a new timestamp tick, +1 (capped) for a repeat.
    fn next_seq(&self, micros: u64) -> u64 {
        let mut cur = self.seq_state.load(Ordering::Relaxed);
        loop {
            let seq = if cur >> 11 == micros {
                ((cur & 0x7ff) + 1).min(SEQ_CAP)
            } else {
                1
            };
            let next = (micros << 11) | seq;
            match self.seq_state.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return seq,
                Err(actual) => cur = actual,
            }
        }
    }

    /// `<routing_key>.<logger>`, `::` as `.`, cut to AMQP's 255-byte limit on
    /// a character boundary (the Python library dropped such records).
    pub(crate) fn routing_key(&self, logger: &str) -> String {
        // A logger logs again and again: its key is made once per thread
        // and copied after (found by the logger's address, matched by this
        // encoder's id and the logger's text).
        const SLOTS: usize = 16;
        thread_local! {
            static ROUTING_KEYS: RefCell<[(u64, String, String); SLOTS]> =
                RefCell::new(Default::default());
        }
        let i = key_cache::slot_for(logger, SLOTS);
        let cached = ROUTING_KEYS
            .try_with(|c| {
                let c = c.try_borrow().ok()?;
                let (id, name, key) = &c[i];
                (*id == self.id && name == logger).then(|| key.clone())
            })
            .ok()
            .flatten();
        if let Some(key) = cached {
            return key;
        }
        let key = self.make_routing_key(logger);
        let _ = ROUTING_KEYS.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c[i] = (self.id, logger.to_owned(), key.clone());
            }
        });
        key
    }

    fn make_routing_key(&self, logger: &str) -> String {
        let logger = if logger.is_empty() { "root" } else { logger };
        let mut key = String::with_capacity(self.routing_prefix.len() + 1 + logger.len());
        key.push_str(&self.routing_prefix);
        key.push('.');
        // `::` becomes `.`, left to right. A byte loop: `str::find("::")`
        // sets up a substring searcher on every call, which cost more than
        // the rest of the key.
        let bytes = logger.as_bytes();
        let (mut start, mut i) = (0, 0);
        while i + 1 < bytes.len() {
            if bytes[i] == b':' && bytes[i + 1] == b':' {
                // `:` is ASCII: `start` and `i` are character boundaries.
                key.push_str(&logger[start..i]);
                key.push('.');
                i += 2;
                start = i;
            } else {
                i += 1;
            }
        }
        key.push_str(&logger[start..]);
        truncate_at_char(&mut key, 255);
        key
    }

    /// Starts a record made now on this thread. Returns `None` when called
    /// re-entrantly (a `Display` impl that logs while we format): that inner
    /// record is dropped instead of recursing.
    pub(crate) fn start<'e>(
        &'e self,
        stamp: Stamp,
        level: Level,
        logger: &str,
        loc: Location<'_>,
    ) -> Option<RecordWriter<'e>> {
        self.start_with(stamp, level, logger, loc, Origin::default())
    }

    /// [`start`](Self::start) for a record made elsewhere, with its own
    /// thread name or stack.
    fn start_with<'e>(
        &'e self,
        stamp: Stamp,
        level: Level,
        logger: &str,
        loc: Location<'_>,
        origin: Origin<'_>,
    ) -> Option<RecordWriter<'e>> {
        // `try_with`: a record logged while this thread's locals are being
        // destroyed is dropped rather than panicking.
        let scratch = SCRATCH.try_with(ScratchSlot::take).ok().flatten()?;
        let logger = if logger.is_empty() { "root" } else { logger };
        let head = Head {
            level,
            logger,
            loc,
            origin,
            micros: stamp.micros,
            id: stamp.id,
            seq: self.next_seq(stamp.micros),
        };
        let buf = self.shape.head(&head);
        Some(RecordWriter {
            enc: self,
            scratch: Some(scratch),
            head_end: buf.len(),
            buf,
            id: stamp.id,
            routing_key: self.routing_key(logger),
            has_message: false,
            error_chain: Vec::new(),
            ecs_error: None,
        })
    }

    /// Encodes a hand-built [`Record`]; its own `timestamp`, when set, wins
    /// over the stamp's time.
    pub(crate) fn encode(&self, r: &Record, stamp: Stamp) -> Option<Encoded> {
        let loc = Location {
            file: r.file.as_deref(),
            line: r.line,
            module: r.module_path.as_deref(),
        };
        let origin = Origin {
            thread: r.thread_name.as_deref(),
            stack_info: r.stack_info.as_deref(),
        };
        let stamp = Stamp {
            micros: r.timestamp.map_or(stamp.micros, |t| {
                // A time before 1970 is sent as 1970: the field stays a valid date.
                t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
            }),
            id: stamp.id,
        };
        let mut w = self.start_with(stamp, r.level, &r.logger, loc, origin)?;
        w.message_str(&r.message);
        for (k, v) in &r.fields {
            w.value(k, v);
        }
        if let Some(e) = &r.exception {
            w.exception(e);
        }
        Some(w.finish())
    }
}

/// What a record made outside Rust brings of its own; `None` means "this
/// thread" and "no stack" (`null`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Origin<'a> {
    pub(crate) thread: Option<&'a str>,
    pub(crate) stack_info: Option<&'a str>,
}

impl Origin<'_> {
    /// Appends the thread name as a JSON string.
    fn push_thread(&self, buf: &mut Vec<u8>) {
        match self.thread {
            Some(name) => push_json_bytes(buf, cut(name)),
            None => push_thread_name(buf),
        }
    }
}

/// Where a record was logged from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Location<'a> {
    pub(crate) file: Option<&'a str>,
    pub(crate) line: Option<u32>,
    pub(crate) module: Option<&'a str>,
}

/// Reusable per-thread buffers. Taken out while a record is being written, so
/// a nested (re-entrant) record finds none and is dropped.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    message: String,
    exc: String,
    seen: Vec<u64>,
    fields: Vec<(usize, usize)>,
    /// ECS only: each field's raw key (a range of `keys`) and type; its
    /// value is the same index of `fields`.
    ecs_fields: Vec<ecs::FieldKey>,
    keys: String,
}

thread_local! {
    /// Size of this thread's last record plus some slack, for the next buffer.
    static SIZE_HINT: Cell<usize> = const { Cell::new(0) };
    static SCRATCH: ScratchSlot = ScratchSlot::default();
    static THREAD_NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct ScratchSlot(Cell<Option<Box<Scratch>>>, Cell<bool>);

impl fmt::Debug for ScratchSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScratchSlot")
            .field("busy", &self.1.get())
            .finish()
    }
}

impl Default for ScratchSlot {
    fn default() -> Self {
        ScratchSlot(Cell::new(Some(Box::default())), Cell::new(false))
    }
}

impl ScratchSlot {
    fn take(&self) -> Option<Box<Scratch>> {
        if self.1.replace(true) {
            return None; // already writing a record on this thread
        }
        Some(self.0.take().unwrap_or_default())
    }
    fn give_back(&self, mut s: Box<Scratch>) {
        // Don't keep a huge buffer alive forever after one giant record.
        if s.message.capacity() > 64 * 1024 {
            s.message = String::new();
        }
        if s.exc.capacity() > 64 * 1024 {
            s.exc = String::new();
        }
        if s.keys.capacity() > 64 * 1024 {
            s.keys = String::new();
        }
        s.message.clear();
        s.exc.clear();
        s.seen.clear();
        s.fields.clear();
        s.ecs_fields.clear();
        s.keys.clear();
        self.0.set(Some(s));
        self.1.set(false);
    }
}

/// Writes one record. Dropping it without [`finish`](Self::finish) discards it.
#[derive(Debug)]
pub(crate) struct RecordWriter<'e> {
    enc: &'e Encoder,
    scratch: Option<Box<Scratch>>,
    buf: Vec<u8>,
    head_end: usize,
    id: uuid::Uuid,
    routing_key: String,
    has_message: bool,
    error_chain: Vec<String>,
    /// ECS: the first error's type (its field name for a Rust error), the
    /// length of its message at the start of `Scratch::exc`, and where its
    /// stack trace starts there (0 for a Rust error, whose message opens its
    /// `Caused by:` text; after the message for a Python traceback).
    ecs_error: Option<(String, usize, usize)>,
}

impl Drop for RecordWriter<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.scratch.take() {
            let _ = SCRATCH.try_with(|slot| slot.give_back(s));
        }
    }
}

impl<'e> RecordWriter<'e> {
    fn scratch(&mut self) -> &mut Scratch {
        self.scratch
            .as_mut()
            .expect("scratch is present until drop")
    }

    /// Sets the message from format arguments.
    #[cfg_attr(not(feature = "log"), allow(dead_code))]
    pub(crate) fn message_fmt(&mut self, args: fmt::Arguments<'_>) {
        self.has_message = true;
        let s = self.scratch();
        s.message.clear();
        match args.as_str() {
            Some(lit) => s.message.push_str(lit),
            None => {
                // A Display impl that fails leaves what it wrote so far.
                let _ = s.message.write_fmt(args);
            }
        }
    }

    /// Sets the message from a string.
    pub(crate) fn message_str(&mut self, msg: &str) {
        self.has_message = true;
        let s = self.scratch();
        s.message.clear();
        s.message.push_str(msg);
    }

    /// Appends to the message (tracing's `message` field may be Debug-formatted).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn message_writer(&mut self) -> &mut String {
        self.has_message = true;
        let s = self.scratch();
        s.message.clear();
        &mut s.message
    }

    /// Starts a field: `false` when it is dropped (a repeated key). The
    /// profile decides what a key becomes.
    #[inline]
    fn key(&mut self, key: &str, kind: Kind, facts: &KeyFacts) -> bool {
        let enc = self.enc;
        enc.shape.key(self, key, kind, facts)
    }

    fn end_field(&mut self) {
        let end = self.buf.len();
        if let Some(last) = self.scratch().fields.last_mut() {
            last.1 = end;
        }
    }

    /// Starts a field of `kind`: `true` when its value is to be written
    /// next. A field whose name is redacted gets `"[redacted]"` in place of
    /// its value here (and `false`); a repeated key is dropped (`false`).
    #[inline]
    fn begin(&mut self, key: &str, kind: Kind) -> bool {
        let enc = self.enc;
        let facts = enc.key_facts(key);
        if !facts.redacted {
            return self.key(key, kind, &facts);
        }
        enc.redacted.fetch_add(1, Ordering::Relaxed);
        if self.key(key, Kind::Str, &facts) {
            push_json_bytes(&mut self.buf, REDACTED);
            self.end_field();
        }
        false
    }

    /// Ends a field whose value starts at `start` in the buffer; a string
    /// value matching a redacted value pattern is replaced first.
    fn end_value(&mut self, start: usize) {
        let enc = self.enc;
        if enc.redactor.value(&self.buf[start..]) {
            enc.redacted.fetch_add(1, Ordering::Relaxed);
            self.buf.truncate(start);
            push_json_bytes(&mut self.buf, REDACTED);
        }
        self.end_field();
    }

    /// A string field.
    pub(crate) fn str(&mut self, key: &str, v: &str) {
        if self.begin(key, Kind::Str) {
            let start = self.buf.len();
            push_json_bytes(&mut self.buf, v);
            self.end_value(start);
        }
    }

    /// A field written with `Display` (or `Debug` via `format_args!("{:?}")`).
    #[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
    pub(crate) fn display(&mut self, key: &str, v: fmt::Arguments<'_>) {
        if self.begin(key, Kind::Str) {
            let start = self.buf.len();
            self.buf.push(b'"');
            let _ = JsonStrWriter(&mut self.buf).write_fmt(v);
            self.buf.push(b'"');
            self.end_value(start);
        }
    }

    /// An `i64` field.
    pub(crate) fn i64(&mut self, key: &str, v: i64) {
        if self.begin(key, Kind::Num) {
            if v < 0 {
                self.buf.push(b'-');
            }
            push_u64(&mut self.buf, v.unsigned_abs());
            self.end_field();
        }
    }

    /// A `u64` field.
    pub(crate) fn u64(&mut self, key: &str, v: u64) {
        if self.begin(key, Kind::Num) {
            push_u64(&mut self.buf, v);
            self.end_field();
        }
    }

    /// A 128-bit integer: a JSON number when it fits 64 bits, else a string
    /// (Elasticsearch's `long` is 64-bit).
    #[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
    pub(crate) fn i128(&mut self, key: &str, v: i128) {
        match i64::try_from(v) {
            Ok(v) => self.i64(key, v),
            Err(_) => match u64::try_from(v) {
                Ok(v) => self.u64(key, v),
                Err(_) => self.display(key, format_args!("{v}")),
            },
        }
    }

    /// An `f64` field; NaN and infinities as strings.
    pub(crate) fn f64(&mut self, key: &str, v: f64) {
        if self.begin(key, Kind::of_f64(v)) {
            push_f64(&mut self.buf, v);
            self.end_field();
        }
    }

    /// A `bool` field.
    pub(crate) fn bool(&mut self, key: &str, v: bool) {
        if self.begin(key, Kind::Bool) {
            self.buf
                .extend_from_slice(if v { b"true" } else { b"false" });
            self.end_field();
        }
    }

    /// A `null` field.
    pub(crate) fn null(&mut self, key: &str) {
        if self.begin(key, Kind::Null) {
            self.buf.extend_from_slice(b"null");
            self.end_field();
        }
    }

    /// A field whose value is already valid JSON (pre-encoded span fields).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn raw(&mut self, key: &str, json: &str) {
        if self.begin(key, Kind::of_json(json.as_bytes())) {
            let start = self.buf.len();
            self.buf.extend_from_slice(json.as_bytes());
            self.end_value(start);
        }
    }

    /// A field value of the owned model.
    pub(crate) fn value(&mut self, key: &str, v: &FieldValue) {
        match v {
            FieldValue::Null => self.null(key),
            FieldValue::Bool(b) => self.bool(key, *b),
            FieldValue::I64(i) => self.i64(key, *i),
            FieldValue::U64(u) => self.u64(key, *u),
            FieldValue::F64(f) => self.f64(key, *f),
            FieldValue::Str(s) => self.str(key, s),
            FieldValue::Array(_) | FieldValue::Object(_) => {
                let kind = if matches!(v, FieldValue::Array(_)) {
                    Kind::Arr
                } else {
                    Kind::Obj
                };
                if self.begin(key, kind) {
                    push_nested(&mut self.buf, v, 1);
                    self.end_field();
                }
            }
        }
    }

    /// An exception that arrives already formatted (a Python traceback):
    /// `exc_info` and `error_chain` (ECS: `error.*`), unless the record
    /// already has an error.
    pub(crate) fn exception(&mut self, e: &ExceptionInfo) {
        let enc = self.enc;
        enc.shape.exception(self, e);
    }

    /// An error field. `logcollect`: its message as the value; the first
    /// error of a record also fills `exc_info` (message and `Caused by:`
    /// chain, like a traceback) and `error_chain` (the sources' messages).
    /// ECS: the first error of a record fills `error.*` instead (its field
    /// name is `error.type`); later ones are ordinary string fields.
    #[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
    pub(crate) fn error(&mut self, key: &str, err: &(dyn StdError + 'static)) {
        let enc = self.enc;
        enc.shape.error(self, key, err);
    }

    /// Writes what the profile puts last, closes the object and enforces
    /// the size cap.
    pub(crate) fn finish(self) -> Encoded {
        let enc = self.enc;
        enc.shape.finish(self)
    }
}

/// An error's message followed by its `Caused by:` chain, the message's
/// length in that text, and the sources' messages.
fn error_text(err: &(dyn StdError + 'static)) -> (String, usize, Vec<String>) {
    let mut text = String::new();
    let _ = write!(text, "{err}");
    let msg_len = text.len();
    let mut source = err.source();
    let mut chain = Vec::new();
    // A cyclic or absurdly long chain must not hang the caller.
    while let Some(s) = source.filter(|_| chain.len() < 32) {
        let msg = s.to_string();
        let _ = write!(text, "\nCaused by: {msg}");
        chain.push(msg);
        source = s.source();
    }
    (text, msg_len, chain)
}

/// Appends this thread's name as a JSON string (cached per thread).
fn push_thread_name(buf: &mut Vec<u8>) {
    let cached = THREAD_NAME.try_with(|n| {
        let mut n = n.borrow_mut();
        let name = n.get_or_insert_with(thread_name_json);
        buf.extend_from_slice(name.as_bytes());
    });
    if cached.is_err() {
        buf.extend_from_slice(thread_name_json().as_bytes());
    }
}

fn thread_name_json() -> String {
    let t = std::thread::current();
    let mut s = String::new();
    match t.name() {
        Some(name) => push_json_str(&mut s, cut(name)),
        None => push_json_str(&mut s, &format!("{:?}", t.id())),
    }
    s
}

/// `s` cut to [`MAX_HEAD_STR`] bytes on a character boundary.
fn cut(s: &str) -> &str {
    cut_to(s, MAX_HEAD_STR)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod record_origin_tests;

#[cfg(test)]
mod record_fields_tests {
    #[test]
    fn record_fields_are_the_fixed_head() {
        assert_eq!(super::RECORD_FIELDS.first(), Some(&"@timestamp"));
        assert_eq!(super::RECORD_FIELDS.last(), Some(&"record_id"));
    }
}

#[cfg(test)]
mod stamp_tests;
