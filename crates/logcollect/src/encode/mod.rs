//! The Logstash JSON encoder: the `logcollect` profile here, the ECS profile
//! in `ecs.rs` (see [`Profile`]). Pure: no I/O.
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
//! with in a process is remembered ([`TypeTracker`]); a later value of
//! another type goes to `<key>_<type>`, so Elasticsearch's dynamic mapping
//! never rejects the document.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::record::Level;
use crate::record::{ExceptionInfo, FieldValue, Record};

/// Fields we write ourselves; a user field with one of these names is renamed.
pub(crate) const RESERVED_KEYS: &[&str] = &[
    "@timestamp",
    "@version",
    "message",
    "host",
    "tags",
    "type",
    "seq",
    "levelname",
    "logger",
    "stack_info",
    "process",
    "threadName",
    "pathname",
    "lineno",
    "module",
    "record_id",
    "exc_info",
    "error_chain",
    "truncated",
    "original_bytes",
    "dropped_fields",
];

/// Logger names, file paths and module paths longer than this are cut in the
/// record, so the fixed part of a record always fits the smallest size cap
/// (4 KiB) with room to spare.
const MAX_HEAD_STR: usize = 1024;

/// The fields of the `logcollect` profile's fixed head, in the order they are
/// written (`@timestamp` … `record_id`): what a consumer can treat as the
/// record's frame rather than its content (the CLI's `tail` does).
pub const RECORD_FIELDS: &[&str] = RESERVED_KEYS.split_at(16).0;

/// The field of the `logcollect` profile holding the record id, which
/// Logstash uses as the Elasticsearch document id.
pub(crate) const RECORD_ID_FIELD: &str = "record_id";

/// Prefix given to a user key that collides with a reserved or identity key.
pub const RENAMED_KEY_PREFIX: &str = "extra_";

/// `seq` stops growing here, as in the Python library.
const SEQ_CAP: u64 = 1000;
/// Room kept for the truncation marker and closing brace.
const MARKER_RESERVE: usize = 96;
/// Nested values (arrays and objects in a field) deeper than this are sent
/// as a string holding their JSON: Elasticsearch refuses objects nested
/// deeper than 20 (`index.mapping.depth.limit`), and a bound keeps a
/// pathological value from exhausting the caller's stack.
const MAX_NESTING: usize = 20;
/// Inside such a string, levels beyond this are written as `"…"`: the text
/// stays bounded whatever the value's depth.
const MAX_NESTING_TEXT: usize = 64;

mod ecs;
mod traceparent;
pub(crate) use ecs::check_ecs_extra_prefix;
pub(crate) use traceparent::parse as traceparent;
pub use ecs::{DEFAULT_ECS_EXTRA_PREFIX, DEFAULT_ECS_SERVICE_KEY, ECS_RESERVED_ROOTS, ECS_VERSION};

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

/// How many user keys (ECS: paths) one shipper remembers the JSON type of.
/// 10,000 covers any sane schema at about 20 bytes each (200 KB); a service
/// that makes keys from data (ids as keys) stops being tracked there instead
/// of growing without bound.
pub const TYPE_TRACKING_MAX_KEYS: usize = 10_000;

/// JSON type of a field value, as far as Elasticsearch's mapping cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    /// Integers and floats: Elasticsearch coerces one into the other.
    Num,
    Str,
    Arr,
    Obj,
}

impl Kind {
    /// The suffix of a renamed key: `count_str`.
    fn suffix(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "bool",
            Kind::Num => "num",
            Kind::Str => "str",
            Kind::Arr => "arr",
            Kind::Obj => "obj",
        }
    }

    /// The type of a valid JSON value.
    fn of_json(json: &[u8]) -> Kind {
        match json.first() {
            Some(b'"') | None => Kind::Str,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') => Kind::Null,
            Some(b'[') => Kind::Arr,
            Some(b'{') => Kind::Obj,
            Some(_) => Kind::Num,
        }
    }

    fn of_f64(v: f64) -> Kind {
        if v.is_finite() {
            Kind::Num
        } else {
            Kind::Str // written as "NaN", "Infinity", "-Infinity"
        }
    }
}

/// Hashes that are already FNV-1a hashes of the key, mixed once more so the
/// map's buckets and control bytes both get well-spread bits.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        let h = self.0 ^ (self.0 >> 31);
        h.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// 16 shards: records logged from many threads rarely meet on one lock.
const TYPE_SHARDS: usize = 16;

type KindMap = HashMap<u64, Kind, BuildHasherDefault<KeyHashHasher>>;

/// The first JSON type seen per user key (by key hash), bounded in size.
#[derive(Debug)]
struct TypeTracker {
    shards: [RwLock<KindMap>; TYPE_SHARDS],
    len: AtomicUsize,
    max: usize,
    /// Tells this tracker's entries apart in the per-thread cache.
    salt: u64,
}

/// Entries of the per-thread cache before it starts afresh.
const KIND_CACHE_MAX: usize = 1024;

thread_local! {
    /// Types this thread has read from a tracker (key hash ^ tracker salt).
    /// A recorded type never changes, so a copy is always right, and a key
    /// on every record (`request_id`) is then read without touching a lock
    /// shared with other threads.
    static KIND_CACHE: RefCell<KindMap> = RefCell::new(KindMap::default());
}

impl TypeTracker {
    fn new(max: usize) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TypeTracker {
            shards: Default::default(),
            len: AtomicUsize::new(0),
            max,
            salt: NEXT
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// Whether `kind` differs from the first type seen for the key hashed
    /// `h`. The first sighting records `kind` (while there is room); `null`
    /// and untracked keys never conflict.
    fn conflicts(&self, h: u64, kind: Kind) -> bool {
        if kind == Kind::Null || self.max == 0 {
            return false;
        }
        let slot = h ^ self.salt;
        let cached = KIND_CACHE
            .try_with(|c| c.try_borrow().ok().and_then(|c| c.get(&slot).copied()))
            .ok()
            .flatten();
        if let Some(k) = cached {
            return k != kind;
        }
        let Some(first) = self.first_kind(h, kind) else {
            return false; // not tracked
        };
        let _ = KIND_CACHE.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if c.len() >= KIND_CACHE_MAX {
                    c.clear();
                }
                c.insert(slot, first);
            }
        });
        first != kind
    }

    /// The first type recorded for `h`, recording `kind` if there is none
    /// yet and there is room; `None` when the key is not tracked.
    fn first_kind(&self, h: u64, kind: Kind) -> Option<Kind> {
        let shard = &self.shards[(h >> 60) as usize % TYPE_SHARDS];
        if let Some(k) = shard.read().unwrap_or_else(PoisonError::into_inner).get(&h) {
            return Some(*k);
        }
        if self.len.load(Ordering::Relaxed) >= self.max {
            return None;
        }
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = map.get(&h) {
            return Some(*k); // another thread was first
        }
        let room = self
            .len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        room.then(|| {
            map.insert(h, kind);
            kind
        })
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
}

/// Per-configuration state: precomputed fragments and the `seq` counter.
#[derive(Debug)]
pub(crate) struct Encoder {
    /// `,"host":"…","tags":[…],"type":"…"` (minus fields the identity overrides).
    fixed: String,
    /// `,"process":1234` or empty.
    process: String,
    /// `,"k":"v"` for every identity pair.
    identity: String,
    identity_keys: Vec<String>,
    emit: Emit,
    routing_prefix: String,
    max_bytes: usize,
    /// `(micros << 11) | seq` of the last record: one atomic for both.
    seq_state: AtomicU64,
    /// First JSON type of each user key (type stability, both profiles).
    types: TypeTracker,
    /// The ECS profile's precomputed parts; `None` for `logcollect`.
    ecs: Option<Box<ecs::EcsParts>>,
}

/// Which dynamic built-in fields to write (an identity key of the same name wins).
#[derive(Debug, Clone, Copy)]
struct Emit {
    timestamp: bool,
    version: bool,
    message: bool,
    seq: bool,
    levelname: bool,
    logger: bool,
    stack_info: bool,
    thread: bool,
    pathname: bool,
    lineno: bool,
    module: bool,
    record_id: bool,
    exc_info: bool,
    error_chain: bool,
    /// The three truncation marker fields.
    truncated: bool,
    original_bytes: bool,
    dropped_fields: bool,
}

impl Encoder {
    pub(crate) fn new(settings: &EncoderSettings) -> Encoder {
        let identity_keys: Vec<String> = settings
            .activity_identity
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        let has = |k: &str| identity_keys.iter().any(|i| i == k);
        let mut fixed = String::new();
        if !has("host") {
            fixed.push_str(",\"host\":");
            push_json_str(&mut fixed, &settings.host);
        }
        if !has("tags") {
            fixed.push_str(",\"tags\":[");
            for (i, t) in settings.tags.iter().enumerate() {
                if i > 0 {
                    fixed.push(',');
                }
                push_json_str(&mut fixed, t);
            }
            fixed.push(']');
        }
        if !has("type") {
            fixed.push_str(",\"type\":");
            push_json_str(&mut fixed, &settings.type_name);
        }
        let process = if has("process") {
            String::new()
        } else {
            format!(",\"process\":{}", settings.process_id)
        };
        let mut identity = String::new();
        for (k, v) in &settings.activity_identity {
            identity.push(',');
            push_json_str(&mut identity, k);
            identity.push(':');
            push_json_str(&mut identity, v);
        }
        let emit = Emit {
            timestamp: !has("@timestamp"),
            version: !has("@version"),
            message: !has("message"),
            seq: !has("seq"),
            levelname: !has("levelname"),
            logger: !has("logger"),
            stack_info: !has("stack_info"),
            thread: !has("threadName"),
            pathname: !has("pathname"),
            lineno: !has("lineno"),
            module: !has("module"),
            record_id: !has("record_id"),
            exc_info: !has("exc_info"),
            error_chain: !has("error_chain"),
            truncated: !has("truncated"),
            original_bytes: !has("original_bytes"),
            dropped_fields: !has("dropped_fields"),
        };
        Encoder {
            fixed,
            process,
            identity,
            identity_keys,
            emit,
            routing_prefix: settings.routing_prefix.clone(),
            max_bytes: settings.max_record_bytes,
            seq_state: AtomicU64::new(0),
            types: TypeTracker::new(TYPE_TRACKING_MAX_KEYS),
            ecs: match settings.profile {
                Profile::Ecs => Some(Box::new(ecs::EcsParts::new(settings))),
                Profile::Logcollect => None,
            },
        }
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
        let logger = if logger.is_empty() { "root" } else { logger };
        let mut key = String::with_capacity(self.routing_prefix.len() + 1 + logger.len());
        key.push_str(&self.routing_prefix);
        key.push('.');
        let mut rest = logger;
        while let Some(i) = rest.find("::") {
            key.push_str(&rest[..i]);
            key.push('.');
            rest = &rest[i + 2..];
        }
        key.push_str(rest);
        truncate_at_char(&mut key, 255);
        key
    }

    fn is_reserved(&self, key: &str) -> bool {
        RESERVED_KEYS.contains(&key) || self.identity_keys.iter().any(|k| k == key)
    }

    /// Starts a record. Returns `None` when called re-entrantly (a `Display`
    /// impl that logs while we format): that inner record is dropped instead
    /// of recursing.
    pub(crate) fn begin<'e>(
        &'e self,
        level: Level,
        logger: &str,
        loc: Location<'_>,
    ) -> Option<RecordWriter<'e>> {
        // `try_with`: a record logged while this thread's locals are being
        // destroyed is dropped rather than panicking.
        self.begin_at(level, logger, loc, Origin::default())
    }

    /// [`begin`](Self::begin) for a record made elsewhere, with its own time,
    /// thread name or stack.
    fn begin_at<'e>(
        &'e self,
        level: Level,
        logger: &str,
        loc: Location<'_>,
        origin: Origin<'_>,
    ) -> Option<RecordWriter<'e>> {
        // `try_with`: a record logged while this thread's locals are being
        // destroyed is dropped rather than panicking.
        let scratch = SCRATCH.try_with(ScratchSlot::take).ok().flatten()?;
        Some(RecordWriter::start(
            self, scratch, level, logger, loc, origin,
        ))
    }

    /// Encodes a hand-built [`Record`].
    pub(crate) fn encode_record(&self, r: &Record) -> Option<Encoded> {
        let loc = Location {
            file: r.file.as_deref(),
            line: r.line,
            module: r.module_path.as_deref(),
        };
        let origin = Origin {
            micros: r.timestamp.map(|t| {
                // A time before 1970 is sent as 1970: the field stays a valid date.
                t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
            }),
            thread: r.thread_name.as_deref(),
            stack_info: r.stack_info.as_deref(),
        };
        let mut w = self.begin_at(r.level, &r.logger, loc, origin)?;
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

/// What a record made outside Rust brings of its own; `None` means "now",
/// "this thread" and "no stack" (`null`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Origin<'a> {
    /// Microseconds since the Unix epoch.
    pub(crate) micros: Option<u64>,
    pub(crate) thread: Option<&'a str>,
    pub(crate) stack_info: Option<&'a str>,
}

impl Origin<'_> {
    /// The record's time in microseconds since the Unix epoch.
    fn micros(&self) -> u64 {
        self.micros.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros() as u64
        })
    }

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
    /// `(unix seconds, "YYYY-MM-DDTHH:MM:SS")` of the last timestamp on this thread.
    static LAST_SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
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
    fn start(
        enc: &'e Encoder,
        scratch: Box<Scratch>,
        level: Level,
        logger: &str,
        loc: Location<'_>,
        origin: Origin<'_>,
    ) -> Self {
        if let Some(parts) = enc.ecs.as_deref() {
            return ecs::start(enc, parts, scratch, level, logger, loc, origin);
        }
        let micros = origin.micros();
        let id = uuid::Uuid::now_v7();
        // Sized like this thread's last record, so a typical record is built
        // without growing its buffer (a regrowth copies and doubles it).
        let hint = SIZE_HINT.try_with(Cell::get).unwrap_or(0);
        let mut buf = Vec::with_capacity(hint.max(256 + enc.identity.len()));
        let e = &enc.emit;
        buf.push(b'{');
        let mut first = true;
        let mut sep = |buf: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                buf.push(b',');
            }
        };
        if e.timestamp {
            sep(&mut buf);
            buf.extend_from_slice(b"\"@timestamp\":\"");
            write_timestamp(&mut buf, micros);
            buf.push(b'"');
        }
        if e.version {
            sep(&mut buf);
            buf.extend_from_slice(b"\"@version\":1");
        }
        let fixed = enc.fixed.as_bytes();
        if !fixed.is_empty() {
            sep(&mut buf);
            buf.extend_from_slice(&fixed[1..]);
        }
        if e.seq {
            sep(&mut buf);
            buf.extend_from_slice(b"\"seq\":");
            push_u64(&mut buf, enc.next_seq(micros));
        }
        if e.levelname {
            sep(&mut buf);
            buf.extend_from_slice(b"\"levelname\":\"");
            buf.extend_from_slice(level.name().as_bytes());
            buf.push(b'"');
        }
        let logger_name = if logger.is_empty() { "root" } else { logger };
        if e.logger {
            sep(&mut buf);
            buf.extend_from_slice(b"\"logger\":");
            push_json_bytes(&mut buf, cut(logger_name));
        }
        if e.stack_info {
            sep(&mut buf);
            buf.extend_from_slice(b"\"stack_info\":");
            match origin.stack_info {
                Some(stack) => push_stack_info(&mut buf, stack),
                None => buf.extend_from_slice(b"null"),
            }
        }
        if !enc.process.is_empty() {
            sep(&mut buf);
            buf.extend_from_slice(&enc.process.as_bytes()[1..]);
        }
        if e.thread {
            sep(&mut buf);
            buf.extend_from_slice(b"\"threadName\":");
            origin.push_thread(&mut buf);
        }
        if let (true, Some(file)) = (e.pathname, loc.file) {
            sep(&mut buf);
            buf.extend_from_slice(b"\"pathname\":");
            push_json_bytes(&mut buf, cut(file));
        }
        if let (true, Some(line)) = (e.lineno, loc.line) {
            sep(&mut buf);
            buf.extend_from_slice(b"\"lineno\":");
            push_u64(&mut buf, u64::from(line));
        }
        if let (true, Some(module)) = (e.module, loc.module) {
            sep(&mut buf);
            buf.extend_from_slice(b"\"module\":");
            push_json_bytes(&mut buf, cut(module));
        }
        if e.record_id {
            sep(&mut buf);
            buf.extend_from_slice(b"\"record_id\":\"");
            let mut tmp = [0u8; uuid::fmt::Hyphenated::LENGTH];
            buf.extend_from_slice(id.hyphenated().encode_lower(&mut tmp).as_bytes());
            buf.push(b'"');
        }
        // The identity may have removed every built-in field: the JSON stays
        // valid because each field below starts with a comma and `{` is fixed up.
        let head_end = buf.len();
        let routing_key = enc.routing_key(logger_name);
        RecordWriter {
            enc,
            scratch: Some(scratch),
            buf,
            head_end,
            id,
            routing_key,
            has_message: false,
            error_chain: Vec::new(),
            ecs_error: None,
        }
    }

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

    /// Writes `,"key":` for a new key; `false` if the key was already
    /// written (or the field is dropped). A value of `kind` that differs from
    /// the key's first type goes to `<key>_<kind>`. ECS: records the key for
    /// `finish` and writes nothing but the value.
    fn key(&mut self, key: &str, kind: Kind) -> bool {
        if self.enc.ecs.is_some() {
            return self.ecs_key(key, kind);
        }
        let clean = sanitize_key(key, |k| self.enc.is_reserved(k));
        let h = hash_key(&clean);
        let start = self.buf.len();
        let s = self.scratch.as_mut().expect("scratch");
        if s.seen.contains(&h) {
            return false;
        }
        s.seen.push(h);
        let clean = if self.enc.types.conflicts(h, kind) {
            match self.retyped(&clean, kind) {
                Some(k) => std::borrow::Cow::Owned(k),
                None => return false,
            }
        } else {
            clean
        };
        let s = self.scratch.as_mut().expect("scratch");
        s.fields.push((start, start));
        self.buf.push(b',');
        push_json_bytes(&mut self.buf, &clean);
        self.buf.push(b':');
        true
    }

    /// `<key>_<kind>` for a value whose type is not the key's first one;
    /// `None` (field dropped) when that name is taken in this record or has
    /// itself another type after three tries (a user sending `count_str` as
    /// a number…).
    fn retyped(&mut self, key: &str, kind: Kind) -> Option<String> {
        let mut name = key.to_owned();
        for _ in 0..3 {
            name.push('_');
            name.push_str(kind.suffix());
            if self.enc.is_reserved(&name) {
                name.insert_str(0, RENAMED_KEY_PREFIX);
            }
            let h = hash_key(&name);
            let s = self.scratch();
            if s.seen.contains(&h) {
                return None;
            }
            s.seen.push(h);
            if !self.enc.types.conflicts(h, kind) {
                return Some(name);
            }
        }
        None
    }

    /// ECS: keeps the raw key; the value follows in `buf`.
    fn ecs_key(&mut self, key: &str, kind: Kind) -> bool {
        let start = self.buf.len();
        let s = self.scratch();
        let k0 = s.keys.len();
        s.keys.push_str(key);
        s.ecs_fields.push(ecs::FieldKey {
            key: (k0, s.keys.len()),
            kind,
        });
        s.fields.push((start, start));
        true
    }

    fn end_field(&mut self) {
        let end = self.buf.len();
        if let Some(last) = self.scratch().fields.last_mut() {
            last.1 = end;
        }
    }

    /// A string field.
    pub(crate) fn str(&mut self, key: &str, v: &str) {
        if self.key(key, Kind::Str) {
            push_json_bytes(&mut self.buf, v);
            self.end_field();
        }
    }

    /// A field written with `Display` (or `Debug` via `format_args!("{:?}")`).
    #[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
    pub(crate) fn display(&mut self, key: &str, v: fmt::Arguments<'_>) {
        if self.key(key, Kind::Str) {
            self.buf.push(b'"');
            let _ = JsonStrWriter(&mut self.buf).write_fmt(v);
            self.buf.push(b'"');
            self.end_field();
        }
    }

    /// An `i64` field.
    pub(crate) fn i64(&mut self, key: &str, v: i64) {
        if self.key(key, Kind::Num) {
            if v < 0 {
                self.buf.push(b'-');
            }
            push_u64(&mut self.buf, v.unsigned_abs());
            self.end_field();
        }
    }

    /// A `u64` field.
    pub(crate) fn u64(&mut self, key: &str, v: u64) {
        if self.key(key, Kind::Num) {
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
        if self.key(key, Kind::of_f64(v)) {
            push_f64(&mut self.buf, v);
            self.end_field();
        }
    }

    /// A `bool` field.
    pub(crate) fn bool(&mut self, key: &str, v: bool) {
        if self.key(key, Kind::Bool) {
            self.buf
                .extend_from_slice(if v { b"true" } else { b"false" });
            self.end_field();
        }
    }

    /// A `null` field.
    pub(crate) fn null(&mut self, key: &str) {
        if self.key(key, Kind::Null) {
            self.buf.extend_from_slice(b"null");
            self.end_field();
        }
    }

    /// A field whose value is already valid JSON (pre-encoded span fields).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn raw(&mut self, key: &str, json: &str) {
        if self.key(key, Kind::of_json(json.as_bytes())) {
            self.buf.extend_from_slice(json.as_bytes());
            self.end_field();
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
                if self.key(key, kind) {
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
        if self.ecs_error.is_some()
            || !self.error_chain.is_empty()
            || !self.scratch().exc.is_empty()
        {
            return;
        }
        if self.enc.ecs.is_some() {
            let s = self.scratch();
            s.exc.clear();
            s.exc.push_str(&e.message);
            s.exc.push_str(&e.text);
            let msg_len = e.message.len();
            self.error_chain = e.chain.clone();
            self.ecs_error = Some((e.type_name.clone(), msg_len, msg_len));
            return;
        }
        self.scratch().exc.push_str(&e.text);
        self.error_chain = e.chain.clone();
    }

    /// An error field: its message as the value; the first error of a record
    /// also fills `exc_info` (message and `Caused by:` chain, like a
    /// traceback) and `error_chain` (the sources' messages).
    #[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
    ///
    /// ECS: the first error of a record fills `error.*` instead (its field
    /// name is `error.type`); later ones are ordinary string fields.
    pub(crate) fn error(&mut self, key: &str, err: &(dyn StdError + 'static)) {
        if self.enc.ecs.is_some() && self.ecs_error.is_none() {
            let (text, msg_len, chain) = error_text(err);
            self.scratch().exc = text;
            self.error_chain = chain;
            self.ecs_error = Some((key.to_owned(), msg_len, 0));
            return;
        }
        self.display(key, format_args!("{err}"));
        if !self.error_chain.is_empty() || !self.scratch().exc.is_empty() {
            return;
        }
        let (text, _, chain) = error_text(err);
        self.scratch().exc = text;
        self.error_chain = chain;
    }

    /// Writes the message, error details and identity, closes the object and
    /// enforces the size cap.
    pub(crate) fn finish(mut self) -> Encoded {
        if self.enc.ecs.is_some() {
            return ecs::finish(self);
        }
        let enc = self.enc;
        let scratch = self.scratch.take().expect("scratch");
        let mut buf = std::mem::take(&mut self.buf);
        let tail_start = buf.len();
        if enc.emit.message {
            buf.extend_from_slice(b",\"message\":");
            push_json_bytes(&mut buf, &scratch.message);
        }
        if !scratch.exc.is_empty() {
            if enc.emit.exc_info {
                buf.extend_from_slice(b",\"exc_info\":");
                push_json_bytes(&mut buf, &scratch.exc);
            }
            if enc.emit.error_chain {
                buf.extend_from_slice(b",\"error_chain\":[");
                for (i, m) in self.error_chain.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    push_json_bytes(&mut buf, m);
                }
                buf.push(b']');
            }
        }
        buf.extend_from_slice(enc.identity.as_bytes());
        buf.push(b'}');
        // Slack for a longer message next time; capped so one huge record
        // does not make every later buffer huge.
        let _ = SIZE_HINT.try_with(|h| h.set((buf.len() + 64).min(16 * 1024)));
        let truncated = buf.len() > enc.max_bytes;
        if truncated {
            buf = self.truncated(&buf, tail_start, &scratch);
        }
        fix_leading_comma(&mut buf);
        let _ = SCRATCH.try_with(|slot| slot.give_back(scratch));
        Encoded {
            id: self.id,
            routing_key: std::mem::take(&mut self.routing_key),
            body: buf,
            truncated,
        }
    }

    /// Rebuilds an oversized record within the cap: keeps the built-in fields
    /// and the identity, then as many user fields as fit (in order) and as much
    /// of the message and `exc_info` as fits, and marks it.
    fn truncated(&self, full: &[u8], tail_start: usize, s: &Scratch) -> Vec<u8> {
        let enc = self.enc;
        let max = enc.max_bytes;
        let head = &full[..self.head_end];
        let fixed = head.len() + enc.identity.len() + MARKER_RESERVE;
        // Config guarantees max >= 4096; a pathological identity could still
        // exceed it, in which case we keep only the head and marker.
        let avail = max.saturating_sub(fixed);
        let msg_len = json_len(&s.message);
        // Room the error details need whole: `,"exc_info":…` and `,"error_chain":[…]`.
        let exc_need = if s.exc.is_empty() {
            0
        } else {
            json_len(&s.exc) + 16
        };
        let chain_need = if s.exc.is_empty() {
            0
        } else {
            self.error_chain
                .iter()
                .map(|m| json_len(m) + 1)
                .sum::<usize>()
                + 20
        };
        let exc_len = exc_need + chain_need;
        // The message keeps at least half the room when it is large; exc_info
        // an eighth; the user fields share the rest.
        let exc_share = exc_len.min(avail / 8);
        let fields_cap = avail.saturating_sub(msg_len.min(avail / 2) + exc_share);
        let mut out = Vec::with_capacity(max);
        out.extend_from_slice(head);
        let mut dropped = 0u64;
        let mut used = 0usize;
        for &(a, b) in &s.fields {
            let len = b.saturating_sub(a);
            if b > a && b <= tail_start && used + len <= fields_cap {
                out.extend_from_slice(&full[a..b]);
                used += len;
            } else {
                dropped += 1;
            }
        }
        let msg_cap = avail.saturating_sub(used + exc_share + 16);
        if enc.emit.message {
            out.extend_from_slice(b",\"message\":");
            push_json_truncated(&mut out, &s.message, msg_cap);
        }
        if !s.exc.is_empty() && exc_share > 64 {
            // Whole when both fit; otherwise exc_info and error_chain share
            // the error's room half and half.
            let (exc_cap, chain_cap) = if exc_len <= exc_share {
                (exc_need, chain_need)
            } else {
                (exc_share / 2, exc_share / 2)
            };
            if enc.emit.exc_info {
                out.extend_from_slice(b",\"exc_info\":");
                push_json_truncated(&mut out, &s.exc, exc_cap - 16);
            }
            if enc.emit.error_chain {
                out.extend_from_slice(b",\"error_chain\":[");
                let n = self.error_chain.len().max(1);
                let each = (chain_cap - 20) / n;
                for (i, m) in self.error_chain.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    push_json_truncated(&mut out, m, each.saturating_sub(1).max(16));
                }
                out.push(b']');
            }
        }
        out.extend_from_slice(enc.identity.as_bytes());
        if enc.emit.truncated {
            out.extend_from_slice(b",\"truncated\":true");
        }
        if enc.emit.original_bytes {
            out.extend_from_slice(b",\"original_bytes\":");
            push_u64(&mut out, full.len() as u64);
        }
        if enc.emit.dropped_fields {
            out.extend_from_slice(b",\"dropped_fields\":");
            push_u64(&mut out, dropped);
        }
        out.push(b'}');
        out
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

/// `s` cut to [`MAX_HEAD_STR`] bytes on a character boundary.
fn cut(s: &str) -> &str {
    cut_to(s, MAX_HEAD_STR)
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A `stack_info` text of at most [`MAX_HEAD_STR`] bytes: it sits in the
/// record's fixed head, which must fit the smallest size cap. A longer one
/// keeps its end, where Python puts the most recent calls, after `…`.
fn push_stack_info(buf: &mut Vec<u8>, stack: &str) {
    if stack.len() <= MAX_HEAD_STR {
        push_json_bytes(buf, stack);
        return;
    }
    let mut start = stack.len() - (MAX_HEAD_STR - '…'.len_utf8());
    while !stack.is_char_boundary(start) {
        start += 1;
    }
    buf.push(b'"');
    push_json_content(buf, "…");
    push_json_content(buf, &stack[start..]);
    buf.push(b'"');
}

/// Appends a nested value (an element or member of an array or object
/// field) as JSON. Keys get the top-level rewrites (`@`, `_`, `[` `]`)
/// except the renaming of our own field names, which only matters at the
/// top; a repeated key keeps its first value. Below [`MAX_NESTING`] levels
/// the rest is a string holding its JSON.
fn push_nested(buf: &mut Vec<u8>, v: &FieldValue, depth: usize) {
    match v {
        FieldValue::Null => buf.extend_from_slice(b"null"),
        FieldValue::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        FieldValue::I64(i) => {
            if *i < 0 {
                buf.push(b'-');
            }
            push_u64(buf, i.unsigned_abs());
        }
        FieldValue::U64(u) => push_u64(buf, *u),
        FieldValue::F64(f) => push_f64(buf, *f),
        FieldValue::Str(s) => push_json_bytes(buf, s),
        FieldValue::Array(_) | FieldValue::Object(_) if depth >= MAX_NESTING => {
            let mut inner = Vec::new();
            push_nested_text(&mut inner, v, 0);
            // The inner text is valid UTF-8 JSON: escape it as one string.
            push_json_bytes(buf, &String::from_utf8_lossy(&inner));
        }
        FieldValue::Array(items) => push_items(buf, items, |buf, v| push_nested(buf, v, depth + 1)),
        FieldValue::Object(members) => {
            push_members(buf, members, |buf, v| push_nested(buf, v, depth + 1))
        }
    }
}

/// The JSON text of a value nested too deep, itself bounded at
/// [`MAX_NESTING_TEXT`] levels.
fn push_nested_text(buf: &mut Vec<u8>, v: &FieldValue, depth: usize) {
    match v {
        FieldValue::Array(_) | FieldValue::Object(_) if depth >= MAX_NESTING_TEXT => {
            push_json_bytes(buf, "…");
        }
        FieldValue::Array(items) => {
            push_items(buf, items, |buf, v| push_nested_text(buf, v, depth + 1))
        }
        FieldValue::Object(members) => {
            push_members(buf, members, |buf, v| push_nested_text(buf, v, depth + 1))
        }
        scalar => push_nested(buf, scalar, 0),
    }
}

/// `[v,…]`.
fn push_items(
    buf: &mut Vec<u8>,
    items: &[FieldValue],
    mut value: impl FnMut(&mut Vec<u8>, &FieldValue),
) {
    buf.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        value(buf, item);
    }
    buf.push(b']');
}

/// `{"k":v,…}` with cleaned keys, the first of repeated keys winning.
fn push_members(
    buf: &mut Vec<u8>,
    members: &[(String, FieldValue)],
    mut value: impl FnMut(&mut Vec<u8>, &FieldValue),
) {
    let mut seen = std::collections::HashSet::with_capacity(members.len());
    buf.push(b'{');
    for (k, v) in members {
        let clean = sanitize_key(k, |_| false);
        if !seen.insert(hash_key(&clean)) {
            continue;
        }
        if seen.len() > 1 {
            buf.push(b',');
        }
        push_json_bytes(buf, &clean);
        buf.push(b':');
        value(buf, v);
    }
    buf.push(b'}');
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

/// After `{`, the first field may carry a leading comma (when the identity
/// replaced every built-in field before it); remove it.
fn fix_leading_comma(buf: &mut Vec<u8>) {
    if buf.get(1) == Some(&b',') {
        buf.remove(1);
    }
}

fn hash_key(k: &str) -> u64 {
    // FNV-1a: keys are short; a 64-bit collision between two keys of one
    // record is practically impossible.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in k.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Makes a user key safe for Logstash and Elasticsearch.
fn sanitize_key(key: &str, reserved: impl Fn(&str) -> bool) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let needs_rewrite =
        key.is_empty() || key.starts_with('@') || key.starts_with('_') || key.contains(['[', ']']);
    if !needs_rewrite && !reserved(key) {
        return Cow::Borrowed(key);
    }
    let mut k = String::with_capacity(key.len() + RENAMED_KEY_PREFIX.len());
    if key.is_empty() {
        k.push_str("empty_key");
    } else if let Some(rest) = key.strip_prefix('@') {
        // `@timestamp` from a user must not become our timestamp: `at_timestamp`.
        k.push_str("at_");
        k.push_str(rest);
    } else {
        k.push_str(key);
    }
    // Logstash reads `[a][b]` as a field reference: keep the text, drop the syntax.
    let mut k = k.replace(['[', ']'], "_");
    // Leading `_` collides with Elasticsearch metadata (`_id`, `_source`).
    if k.starts_with('_') || reserved(&k) {
        k.insert_str(0, RENAMED_KEY_PREFIX);
    }
    Cow::Owned(k)
}

fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Appends `n` in decimal.
pub(crate) fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

pub(crate) fn push_f64(buf: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        buf.extend_from_slice(b"\"NaN\"");
    } else if v.is_infinite() {
        buf.extend_from_slice(if v > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else {
        // `{:?}` keeps a `.0` on whole numbers (as Python: `3.0`) and uses
        // exponents JSON accepts (`1e300`).
        let _ = write!(JsonRaw(buf), "{v:?}");
    }
}

struct JsonRaw<'a>(&'a mut Vec<u8>);
impl fmt::Write for JsonRaw<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Escapes everything written into it as JSON string content.
pub(crate) struct JsonStrWriter<'a>(pub(crate) &'a mut Vec<u8>);
impl fmt::Write for JsonStrWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_json_content(self.0, s);
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as JSON string content (no quotes). UTF-8 is written as is;
/// `"`, `\` and control characters are escaped.
fn push_json_content(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // Most strings (paths, module names, messages) need no escape at all: a
    // simple scan the compiler vectorises, then one copy.
    let needs_escape = |b: &u8| *b < 0x20 || *b == b'"' || *b == b'\\' || *b == 0x7f;
    let Some(first) = bytes.iter().position(needs_escape) else {
        buf.extend_from_slice(bytes);
        return;
    };
    buf.extend_from_slice(&bytes[..first]);
    let mut start = first;
    for (i, &b) in bytes.iter().enumerate().skip(first) {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[(b >> 4) as usize]);
            buf.push(HEX[(b & 0xf) as usize]);
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

pub(crate) fn push_json_bytes(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    push_json_content(buf, s);
    buf.push(b'"');
}

fn push_json_str(out: &mut String, s: &str) {
    let mut v = Vec::with_capacity(s.len() + 2);
    push_json_bytes(&mut v, s);
    // Escaping ASCII bytes of valid UTF-8 keeps it valid UTF-8.
    out.push_str(&String::from_utf8(v).unwrap_or_default());
}

/// Length of `s` once escaped, quotes included.
fn json_len(s: &str) -> usize {
    let mut v = Vec::new();
    push_json_bytes(&mut v, s);
    v.len()
}

/// Appends `s` as a JSON string of at most `max` bytes (quotes included); a
/// cut string ends with `…[truncated]`. Cuts only between characters, so no
/// escape sequence or UTF-8 sequence is ever split.
fn push_json_truncated(buf: &mut Vec<u8>, s: &str, max: usize) {
    const MARK: &str = "…[truncated]";
    let start = buf.len();
    push_json_bytes(buf, s);
    if buf.len() - start <= max {
        return;
    }
    buf.truncate(start);
    buf.push(b'"');
    let budget = max.saturating_sub(2 + MARK.len());
    let mut one = Vec::with_capacity(8);
    let mut tmp = [0u8; 4];
    for c in s.chars() {
        one.clear();
        push_json_content(&mut one, c.encode_utf8(&mut tmp));
        if buf.len() - start - 1 + one.len() > budget {
            break;
        }
        buf.extend_from_slice(&one);
    }
    buf.extend_from_slice(MARK.as_bytes());
    buf.push(b'"');
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC. The date part is cached per second.
fn write_timestamp(buf: &mut Vec<u8>, micros: u64) {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let (cached, mut text) = LAST_SECOND.with(Cell::get);
    if cached != secs {
        text = civil(secs);
        LAST_SECOND.with(|c| c.set((secs, text)));
    }
    buf.extend_from_slice(&text);
    buf.push(b'.');
    let mut f = [b'0'; 6];
    let mut n = frac;
    for d in f.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.extend_from_slice(&f);
    buf.push(b'Z');
}

/// Unix seconds to `YYYY-MM-DDTHH:MM:SS` (proleptic Gregorian, UTC), after
/// Howard Hinnant's `civil_from_days`.
fn civil(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut out = [0u8; 19];
    let put = |out: &mut [u8], v: u64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut out[0..4], y.clamp(0, 9999) as u64, 4);
    out[4] = b'-';
    put(&mut out[5..7], m as u64, 2);
    out[7] = b'-';
    put(&mut out[8..10], d as u64, 2);
    out[10] = b'T';
    put(&mut out[11..13], sod / 3600, 2);
    out[13] = b':';
    put(&mut out[14..16], sod / 60 % 60, 2);
    out[16] = b':';
    put(&mut out[17..19], sod % 60, 2);
    out
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
