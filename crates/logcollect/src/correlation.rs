//! Correlation ids: one id on every record of a request, a task, or any
//! unit of work you name ("this order", "this upload"), and the helpers that
//! carry it across AMQP messages so a web service and the worker that runs
//! its job (Rust or Python) log under the same id.
//!
//! ## In a process: a span carries the id
//!
//! The id lives on a `tracing` span as the field `correlation_id`. Every
//! record made inside the span carries it as a top-level string field (the
//! innermost span wins, as for every span field), `log` records too when they
//! are bridged to `tracing` (`tracing_log::LogTracer`). `logcollect-tower`
//! sets it to the request id, `logcollect-jobs` to the id a job arrived with.
//!
//! ```
//! use tracing::Instrument as _;
//!
//! // Synchronous code: enter the span.
//! let span = logcollect::correlation::scope("order-42");
//! let _entered = span.enter();
//! tracing::info!("order accepted"); // carries correlation_id = "order-42"
//!
//! // Async code: instrument the future, the id follows it across `.await`
//! // points and threads.
//! async fn ship_order() {}
//! let _future = ship_order().instrument(logcollect::correlation::scope("order-42"));
//! ```
//!
//! [`current`] reads the id back (for an outgoing message or HTTP call). It
//! looks at the current span and its parents, so it works across `.await`
//! points of an instrumented future on any runtime. The id is kept in the
//! span's data in the `tracing_subscriber` [`Registry`](tracing_subscriber::Registry)
//! by [`scope`] and [`attach`]; `current()` therefore needs a subscriber built
//! on that registry (every `logcollect` boot helper and
//! `tracing_subscriber::registry()` / `fmt()` are) and sees ids set through
//! [`scope`] and [`attach`], not a `correlation_id` field a span declares by
//! itself (that field is still shipped).
//!
//! ## Across AMQP messages
//!
//! The helpers share a message with other tools and never break their
//! context: a `correlation_id` property is what RabbitMQ's RPC pattern
//! matches replies with, and a `traceparent` belongs to the tracer that wrote
//! it. Neither is ever overwritten.
//!
//! The helpers work over any header map: [`Headers`] is implemented for
//! `HashMap<String, String>` and `BTreeMap<String, String>`, and is small
//! enough to implement for another carrier. With the `lapin-api` feature,
//! lapin's `FieldTable` implements it too, and `inject_properties` /
//! `extract_properties` work on lapin's `BasicProperties` (that feature
//! follows lapin's major versions; the rest of this module does not name
//! lapin).
//!
//! | carrier | written by [`inject_headers`] (and `inject_properties`) | read by [`extract_headers`] / [`extract`] (and `extract_properties`), in this order |
//! |---|---|---|
//! | header `CORRELATION_ID` ([`HEADER`]; Python logcollect, asgi-correlation-id's Celery extension) | the id (this header is the id's own carrier) | 1st |
//! | header `root_id` (Celery protocol 2: the first task of the flow) | never | 2nd, when the message is a Celery task (it has a `task` header) |
//! | header `parent_id` (Celery: the task that sent this one) | never | 3rd, likewise |
//! | header `id` (Celery: this task) | never | 4th, likewise |
//! | basic property `correlation_id` (Celery: the task id; RPC: the reply's key) | the id, only when the message has none (`inject_properties`) | 5th (the `property` of [`extract`]) |
//! | header `traceparent` ([`TRACEPARENT_HEADER`], W3C) | only when the message has none: `00-<trace id>-<span id>-00`, the trace id being the id's 32 hex digits when the id is a UUID, random otherwise; flags `00`, see [`traceparent`] | 6th: the trace id, 32 lowercase hex digits |
//!
//! Values read from a message are untrusted: one that is not a valid id
//! ([`is_valid`]: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`) is skipped.
//! [`Sources`] applies the same order to values you read yourself.
//!
//! With OpenTelemetry propagation, inject the trace context first (its
//! propagator writes `traceparent`), then call these helpers: they add the
//! correlation id and keep the trace context as it is.
//!
//! ```
//! use std::collections::HashMap;
//!
//! let mut headers = HashMap::new();
//! logcollect::correlation::inject_headers(&mut headers, "order-42");
//! assert_eq!(headers["CORRELATION_ID"], "order-42");
//! assert!(headers["traceparent"].starts_with("00-"));
//! assert_eq!(logcollect::correlation::extract_headers(&headers).as_deref(), Some("order-42"));
//! ```
//!
//! ## New ids
//!
//! [`generate`] makes a UUIDv7 (time-ordered, so ids sort by creation in
//! Kibana). [`IdGenerator`] chooses another kind where a neighbour expects
//! it: asgi-correlation-id, for one, accepts only UUIDv4 by default.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;

/// The record field (and span field) that holds the correlation id.
pub const FIELD: &str = "correlation_id";

/// The AMQP header the Python Celery tools use for the correlation id.
pub const HEADER: &str = "CORRELATION_ID";

/// The W3C trace-context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The Celery (protocol 2) header with the id of the first task of a flow.
pub const CELERY_ROOT_ID_HEADER: &str = "root_id";

/// The Celery header with the id of the task that sent this one.
pub const CELERY_PARENT_ID_HEADER: &str = "parent_id";

/// The Celery header with the task's own id.
pub const CELERY_ID_HEADER: &str = "id";

/// The Celery header with the task's name: its presence marks a message as a
/// Celery task, whose `root_id`, `parent_id` and `id` headers are then read.
pub const CELERY_TASK_HEADER: &str = "task";

/// The longest id [`is_valid`] accepts. Long enough for any UUID, ULID or
/// W3C trace id with a prefix; short enough that a hostile header cannot
/// bloat every record of a request.
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` is acceptable as a request or correlation id from an
/// untrusted source: 1 to [`MAX_ID_LEN`] characters of `A-Z a-z 0-9 . _ : -`.
/// Nothing that could break a header, a log line or a Kibana query gets in.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A new id: a UUIDv7 (time-ordered), hyphenated, lowercase. The same as
/// `IdGenerator::default().generate()`.
pub fn generate() -> String {
    IdGenerator::UuidV7.generate()
}

/// How new request and correlation ids are made.
///
/// | variant | example |
/// |---|---|
/// | `UuidV7` (default) | `0190f3c2-7a1b-7c3d-9e4f-0a1b2c3d4e5f`: time-ordered |
/// | `UuidV4` | `9b2e6c1e-4c8f-4a57-8f0e-3f7d2a9c1b44`: random, what asgi-correlation-id's validator accepts by default |
/// | `Custom(f)` | whatever `f` returns; it should be [valid](is_valid) |
///
/// ```
/// use logcollect::correlation::IdGenerator;
/// let id = IdGenerator::UuidV4.generate();
/// assert_eq!(id.len(), 36);
/// assert_eq!(&id[14..15], "4");
/// ```
#[derive(Clone, Copy, Default)]
#[non_exhaustive]
pub enum IdGenerator {
    /// A UUIDv7, hyphenated, lowercase.
    #[default]
    UuidV7,
    /// A UUIDv4, hyphenated, lowercase.
    UuidV4,
    /// Ids from your own function.
    Custom(fn() -> String),
}

impl IdGenerator {
    /// A new id.
    pub fn generate(&self) -> String {
        match self {
            IdGenerator::UuidV7 => uuid::Uuid::now_v7().to_string(),
            IdGenerator::UuidV4 => uuid::Uuid::new_v4().to_string(),
            IdGenerator::Custom(f) => f(),
        }
    }
}

impl fmt::Debug for IdGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdGenerator::UuidV7 => f.write_str("UuidV7"),
            IdGenerator::UuidV4 => f.write_str("UuidV4"),
            IdGenerator::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// A W3C `traceparent` value for `id`: `00-<trace id>-<span id>-00`.
///
/// The trace id is the id's own 128 bits when `id` is a UUID (any form
/// `uuid` parses, including 32 bare hex digits, so an id read from a
/// `traceparent` maps back to the same trace id), random otherwise; the span
/// id is random.
///
/// The flags are `00`: logcollect records no trace, so it never sets the
/// sampled flag, which would make every parent-based sampler downstream
/// record the whole flow. A service that traces has its own `traceparent`,
/// which the `inject_*` helpers leave alone.
pub fn traceparent(id: &str) -> String {
    let trace = match uuid::Uuid::parse_str(id) {
        Ok(u) if !u.is_nil() => u.as_u128(),
        _ => nonzero_random_u128(),
    };
    let span = loop {
        let s: u64 = rand::random();
        if s != 0 {
            break s; // the all-zero span id is invalid (W3C trace-context §3.2.2.4)
        }
    };
    format!("00-{trace:032x}-{span:016x}-00")
}

fn nonzero_random_u128() -> u128 {
    loop {
        let t: u128 = rand::random();
        if t != 0 {
            return t; // the all-zero trace id is invalid (W3C trace-context §3.2.2.3)
        }
    }
}

/// The trace id of a W3C `traceparent` value (32 lowercase hex digits), or
/// `None` when the value is malformed, uses version `ff`, or has an all-zero
/// trace or span id.
pub fn trace_id_from_traceparent(value: &str) -> Option<&str> {
    crate::encode::traceparent(value).map(|(trace, _span)| trace)
}

/// The values a message or request carries that may hold its correlation
/// id, for any carrier ([`extract`] reads a header map; a job framework's
/// metadata or an HTTP request fill this by hand).
/// [`choose`](Sources::choose) takes the first valid one in field order.
///
/// ```
/// let sources = logcollect::correlation::Sources {
///     celery_root_id: Some("flow-1"),
///     celery_id: Some("task-2"),
///     property: Some("task-2"),
///     ..Default::default()
/// };
/// assert_eq!(sources.choose().as_deref(), Some("flow-1"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sources<'a> {
    /// The `CORRELATION_ID` header.
    pub header: Option<&'a str>,
    /// Celery's `root_id` header: the flow's first task.
    pub celery_root_id: Option<&'a str>,
    /// Celery's `parent_id` header.
    pub celery_parent_id: Option<&'a str>,
    /// Celery's `id` header: the task itself.
    pub celery_id: Option<&'a str>,
    /// The `correlation_id` property.
    pub property: Option<&'a str>,
    /// The `traceparent` header (its trace id is used).
    pub traceparent: Option<&'a str>,
}

impl Sources<'_> {
    /// The first valid ([`is_valid`]) id in field order, trimmed; for the
    /// `traceparent`, its trace id.
    pub fn choose(&self) -> Option<String> {
        [
            self.header,
            self.celery_root_id,
            self.celery_parent_id,
            self.celery_id,
            self.property,
        ]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|v| is_valid(v))
        .or_else(|| self.traceparent.and_then(trace_id_from_traceparent))
        .map(str::to_owned)
    }
}

/// Chooses the correlation id from the values a message carries, in order
/// of preference: the `CORRELATION_ID` header, the `correlation_id` property,
/// then the trace id of the `traceparent` header. Invalid values
/// ([`is_valid`]) are skipped. A shortcut for [`Sources`] without Celery's
/// headers.
pub fn from_parts(
    header: Option<&str>,
    property: Option<&str>,
    traceparent: Option<&str>,
) -> Option<String> {
    Sources {
        header,
        property,
        traceparent,
        ..Sources::default()
    }
    .choose()
}

/// The request id and correlation id of an incoming HTTP request, as the
/// web integrations (`logcollect-tower`, `logcollect-actix`) choose them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIds {
    /// Identifies this one request: the request-id header, else the
    /// correlation-id header, else a new id.
    pub request_id: String,
    /// Identifies the flow the request belongs to: the correlation-id
    /// header, else the trace id of `traceparent`, else the request id.
    pub correlation_id: String,
}

impl RequestIds {
    /// The ids for a request whose request-id header (`X-Request-ID`),
    /// correlation-id header (`X-Correlation-ID`) and `traceparent` have
    /// these values; values that are not valid ([`is_valid`]) are ignored,
    /// never trusted, and a missing request id is made with `generator`.
    pub fn from_headers(
        request_id: Option<&str>,
        correlation_id: Option<&str>,
        traceparent: Option<&str>,
        generator: IdGenerator,
    ) -> RequestIds {
        fn valid(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| is_valid(v))
        }
        let request = valid(request_id);
        let correlation = valid(correlation_id);
        let request_id = request
            .or(correlation)
            .map_or_else(|| generator.generate(), str::to_owned);
        let correlation_id = correlation
            .or_else(|| traceparent.and_then(trace_id_from_traceparent))
            .map_or_else(|| request_id.clone(), str::to_owned);
        RequestIds {
            request_id,
            correlation_id,
        }
    }
}

/// A message's (or a request's) headers as the correlation helpers read and
/// write them: names with text values.
///
/// Implemented for `HashMap<String, String>` and `BTreeMap<String, String>`,
/// and, with the `lapin-api` feature, for lapin's `FieldTable`. For another
/// carrier (another AMQP client's header table, a job framework's metadata),
/// implement it on a small wrapper:
///
/// ```
/// use std::borrow::Cow;
///
/// struct Meta(Vec<(String, String)>);
///
/// impl logcollect::correlation::Headers for Meta {
///     fn get(&self, name: &str) -> Option<Cow<'_, str>> {
///         self.0.iter().find(|(k, _)| k == name).map(|(_, v)| Cow::from(v.as_str()))
///     }
///     fn set(&mut self, name: &str, value: &str) {
///         self.0.retain(|(k, _)| k != name);
///         self.0.push((name.to_owned(), value.to_owned()));
///     }
/// }
///
/// let mut meta = Meta(Vec::new());
/// logcollect::correlation::inject_headers(&mut meta, "order-42");
/// assert_eq!(logcollect::correlation::extract_headers(&meta).as_deref(), Some("order-42"));
/// ```
pub trait Headers {
    /// The value of header `name` as text; `None` when there is no such
    /// header or its value is not text (AMQP carries numbers, voids and
    /// tables in headers too).
    fn get(&self, name: &str) -> Option<Cow<'_, str>>;

    /// Whether there is a header `name`, whatever its value. The default is
    /// `get(name).is_some()`; a carrier whose headers may hold values that
    /// are not text overrides it, so that [`inject_headers`] keeps a
    /// `traceparent` of any type.
    fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets header `name` to `value`, replacing a previous value.
    fn set(&mut self, name: &str, value: &str);
}

impl<S: BuildHasher> Headers for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        HashMap::get(self, name).map(|v| Cow::Borrowed(v.as_str()))
    }
    fn set(&mut self, name: &str, value: &str) {
        self.insert(name.to_owned(), value.to_owned());
    }
}

impl Headers for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        BTreeMap::get(self, name).map(|v| Cow::Borrowed(v.as_str()))
    }
    fn set(&mut self, name: &str, value: &str) {
        self.insert(name.to_owned(), value.to_owned());
    }
}

/// Writes `id` into `headers`: `CORRELATION_ID` = `id` (the header is the
/// id's own carrier, so a previous value is replaced) and, when `headers`
/// has no `traceparent`, one derived from the id (see [`traceparent`]). An
/// existing `traceparent` is kept as it is, whatever its value.
pub fn inject_headers<H: Headers + ?Sized>(headers: &mut H, id: &str) {
    headers.set(HEADER, id);
    if !headers.contains(TRACEPARENT_HEADER) {
        headers.set(TRACEPARENT_HEADER, &traceparent(id));
    }
}

/// The correlation id in `headers`: `CORRELATION_ID`, else Celery's
/// `root_id`, `parent_id`, `id` (for a Celery task message), else the trace
/// id of `traceparent` (invalid values are skipped).
pub fn extract_headers<H: Headers + ?Sized>(headers: &H) -> Option<String> {
    extract(Some(headers), None)
}

/// The correlation id of a message with these `headers` and this
/// `correlation_id` property (AMQP's basic property, or whatever your
/// carrier calls it): the `CORRELATION_ID` header, else Celery's `root_id`,
/// `parent_id` and `id` headers (for a Celery task message: one with a
/// `task` header), else the property, else the trace id of the `traceparent`
/// header (invalid values are skipped).
///
/// ```
/// use std::collections::HashMap;
///
/// let headers = HashMap::from([("task".to_owned(), "proj.add".to_owned()), ("root_id".to_owned(), "flow-1".to_owned())]);
/// assert_eq!(logcollect::correlation::extract(Some(&headers), Some("task-2")).as_deref(), Some("flow-1"));
/// ```
pub fn extract<H: Headers + ?Sized>(headers: Option<&H>, property: Option<&str>) -> Option<String> {
    let get = |key: &str| headers.and_then(|h| h.get(key));
    let celery = headers.is_some_and(|h| h.contains(CELERY_TASK_HEADER));
    let celery_get = |key: &str| if celery { get(key) } else { None };
    let header = get(HEADER);
    let root_id = celery_get(CELERY_ROOT_ID_HEADER);
    let parent_id = celery_get(CELERY_PARENT_ID_HEADER);
    let task_id = celery_get(CELERY_ID_HEADER);
    let tp = get(TRACEPARENT_HEADER);
    Sources {
        header: header.as_deref(),
        celery_root_id: root_id.as_deref(),
        celery_parent_id: parent_id.as_deref(),
        celery_id: task_id.as_deref(),
        property,
        traceparent: tp.as_deref(),
    }
    .choose()
}

/// The helpers over lapin's own types: thin adapters over [`Headers`],
/// [`inject_headers`] and [`extract`].
#[cfg(feature = "lapin-api")]
mod lapin_adapters {
    use std::borrow::Cow;

    use lapin::types::{AMQPValue, FieldTable, ShortString};
    use lapin::BasicProperties;

    use super::{extract, inject_headers, Headers};

    /// Headers as lapin carries them. [`get`](Headers::get) reads any string
    /// type the sender used (pika and kombu send long strings; some clients
    /// send byte arrays); other types (Celery sends a missing `parent_id` as
    /// void) are `None` but still [`contained`](Headers::contains).
    #[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
    impl Headers for FieldTable {
        fn get(&self, name: &str) -> Option<Cow<'_, str>> {
            let bytes: &[u8] = match self.inner().get(name)? {
                AMQPValue::LongString(s) => s.as_bytes(),
                AMQPValue::ShortString(s) => s.as_str().as_bytes(),
                AMQPValue::ByteArray(b) => b.as_slice(),
                _ => return None,
            };
            std::str::from_utf8(bytes).ok().map(Cow::Borrowed)
        }
        fn contains(&self, name: &str) -> bool {
            self.contains_key(name)
        }
        fn set(&mut self, name: &str, value: &str) {
            self.insert(ShortString::from(name), AMQPValue::LongString(value.into()));
        }
    }

    /// `props` with `id` in the headers (see [`inject_headers`]; other
    /// headers are kept) and in the `correlation_id` property when `props`
    /// has none. An existing `correlation_id` property is kept as it is:
    /// RabbitMQ's RPC pattern and Celery give it a meaning of their own.
    ///
    /// ```no_run
    /// # async fn send(channel: lapin::Channel) -> Result<(), lapin::Error> {
    /// // In a scope, `logcollect::correlation::current()` gives the id to pass on.
    /// let id = logcollect::correlation::generate();
    /// let props = logcollect::correlation::inject_properties(lapin::BasicProperties::default(), &id);
    /// channel
    ///     .basic_publish("".into(), "jobs".into(), Default::default(), b"{}", props)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
    pub fn inject_properties(props: BasicProperties, id: &str) -> BasicProperties {
        let mut headers = props.headers().clone().unwrap_or_default();
        inject_headers(&mut headers, id);
        // A short string holds at most 255 bytes: a longer id travels in the
        // headers only.
        let props = match ShortString::try_new(id) {
            Ok(s) if props.correlation_id().is_none() => props.with_correlation_id(s),
            _ => props,
        };
        props.with_headers(headers)
    }

    /// The correlation id of a message: [`extract`] over its headers and its
    /// `correlation_id` property.
    #[cfg_attr(docsrs, doc(cfg(feature = "lapin-api")))]
    pub fn extract_properties(props: &BasicProperties) -> Option<String> {
        let property = props.correlation_id().as_ref().map(|s| s.as_str());
        extract(props.headers().as_ref(), property)
    }
}

#[cfg(feature = "lapin-api")]
pub use lapin_adapters::{extract_properties, inject_properties};

#[cfg(feature = "tracing")]
mod span {
    use std::sync::Arc;

    use tracing_subscriber::registry::LookupSpan as _;
    use tracing_subscriber::Registry;

    use super::FIELD;

    /// The id as stored in a span's registry data, for [`current`].
    #[derive(Debug, Clone)]
    struct CorrelationId(Arc<str>);

    /// A new span (target `logcollect::correlation`, name `correlation`, level
    /// INFO) whose records carry `correlation_id` = `id`. Enter it, or
    /// instrument a future with it; spans opened inside it inherit the id,
    /// and a nested scope overrides it.
    ///
    /// The id is used as given (this is for ids your code chooses); check
    /// ids from outside with [`is_valid`](super::is_valid).
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn scope(id: impl AsRef<str>) -> tracing::Span {
        let span = tracing::info_span!(
            target: "logcollect::correlation",
            "correlation",
            correlation_id = tracing::field::Empty
        );
        attach(&span, id.as_ref());
        span
    }

    /// Puts `id` on an existing span: records the `correlation_id` field
    /// (which the span must declare, e.g. as `tracing::field::Empty`, for
    /// it to be shipped) and stores the id for [`current`]. This is how the
    /// request span of `logcollect-tower` and the task span of
    /// `logcollect-jobs` get theirs.
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn attach(span: &tracing::Span, id: &str) {
        span.record(FIELD, id);
        span.with_subscriber(|(span_id, dispatch)| {
            if let Some(data) = dispatch
                .downcast_ref::<Registry>()
                .and_then(|registry| registry.span(span_id))
            {
                data.extensions_mut().replace(CorrelationId(Arc::from(id)));
            }
        });
    }

    /// The correlation id of the current span or its nearest parent that has
    /// one (set by [`scope`] or [`attach`]), if any.
    ///
    /// Works across `.await` points: an instrumented future enters its span
    /// each time it is polled, on whichever thread polls it.
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn current() -> Option<String> {
        tracing::Span::current()
            .with_subscriber(|(span_id, dispatch)| {
                let registry = dispatch.downcast_ref::<Registry>()?;
                let data = registry.span(span_id)?;
                data.scope().find_map(|s| {
                    s.extensions()
                        .get::<CorrelationId>()
                        .map(|c| c.0.to_string())
                })
            })
            .flatten()
    }
}

#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub use span::{attach, current, scope};

#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub use crate::front::spans::{TraceIds, SPAN_ID_FIELD, TRACE_ID_FIELD};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        for ok in [
            "abc-123",
            "a",
            "0190f3c2-7a1b-7c3d-9e4f-0a1b2c3d4e5f",
            "svc:req.1_x",
            &"x".repeat(MAX_ID_LEN),
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "\"\n{",
            "é",
            "a/b",
            "a\u{0}",
            &"x".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_valid_uuid_v7() {
        let id = generate();
        assert!(is_valid(&id));
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        assert_ne!(id, generate());
    }

    #[test]
    fn traceparent_of_a_uuid_carries_its_bits() {
        let id = "0190f3c2-7a1b-7c3d-9e4f-0a1b2c3d4e5f";
        let tp = traceparent(id);
        assert_eq!(tp.len(), 55);
        assert!(
            tp.starts_with("00-0190f3c27a1b7c3d9e4f0a1b2c3d4e5f-"),
            "{tp}"
        );
        assert!(tp.ends_with("-00"), "never claims sampled: {tp}");
        assert_eq!(
            trace_id_from_traceparent(&tp),
            Some("0190f3c27a1b7c3d9e4f0a1b2c3d4e5f")
        );
        // An id read back from a traceparent maps to the same trace id.
        let again = traceparent("0190f3c27a1b7c3d9e4f0a1b2c3d4e5f");
        assert_eq!(&again[..36], &tp[..36]);
    }

    #[test]
    fn traceparent_of_other_ids_is_random_and_well_formed() {
        for id in ["order-42", "00000000-0000-0000-0000-000000000000"] {
            let a = traceparent(id);
            let b = traceparent(id);
            assert!(trace_id_from_traceparent(&a).is_some(), "{a}");
            assert_ne!(a[3..35], b[3..35]);
        }
    }

    #[test]
    fn malformed_traceparents_are_rejected() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_from_traceparent(good),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id_from_traceparent(bad), None, "{bad}");
        }
        // A later version may append fields.
        assert!(trace_id_from_traceparent(&format!("01{}-extra", &good[2..])).is_some());
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn neutral_headers_round_trip() {
        let mut h = map(&[("x-other", "keep")]);
        inject_headers(&mut h, "abc-123");
        assert_eq!(h[HEADER], "abc-123");
        assert_eq!(h["x-other"], "keep");
        assert!(trace_id_from_traceparent(&h[TRACEPARENT_HEADER]).is_some());
        assert_eq!(extract_headers(&h).as_deref(), Some("abc-123"));
        // A second injection replaces our header, keeps the traceparent.
        let tp = h[TRACEPARENT_HEADER].clone();
        inject_headers(&mut h, "def-456");
        assert_eq!(h[HEADER], "def-456");
        assert_eq!(h[TRACEPARENT_HEADER], tp);
        // The same through a BTreeMap and through a trait object.
        let mut b = BTreeMap::new();
        inject_headers(&mut b, "abc-123");
        let dynamic: &dyn Headers = &b;
        assert_eq!(extract_headers(dynamic).as_deref(), Some("abc-123"));
    }

    #[test]
    fn neutral_headers_keep_their_traceparent() {
        let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = map(&[(TRACEPARENT_HEADER, theirs)]);
        inject_headers(&mut h, "abc-123");
        assert_eq!(h[TRACEPARENT_HEADER], theirs);
        assert_eq!(extract_headers(&h).as_deref(), Some("abc-123"));
    }

    #[test]
    fn neutral_extraction_order() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let celery = map(&[
            (CELERY_TASK_HEADER, "proj.add"),
            (CELERY_ROOT_ID_HEADER, "root-1"),
            (CELERY_PARENT_ID_HEADER, "parent-1"),
            (CELERY_ID_HEADER, "task-3"),
            (TRACEPARENT_HEADER, tp),
        ]);
        assert_eq!(
            extract(Some(&celery), Some("prop-1")).as_deref(),
            Some("root-1")
        );
        let mut h = celery.clone();
        h.insert(HEADER.into(), "req-9".into());
        assert_eq!(extract(Some(&h), Some("prop-1")).as_deref(), Some("req-9"));
        h.insert(HEADER.into(), "bad id".into());
        h.remove(CELERY_ROOT_ID_HEADER);
        assert_eq!(extract(Some(&h), None).as_deref(), Some("parent-1"));
        // Celery's names mean nothing without a `task` header.
        let mut h = celery;
        h.remove(CELERY_TASK_HEADER);
        assert_eq!(extract(Some(&h), Some("prop-1")).as_deref(), Some("prop-1"));
        assert_eq!(
            extract(Some(&h), None).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            extract::<HashMap<String, String>>(None, Some(" p ")).as_deref(),
            Some("p")
        );
        assert_eq!(extract_headers(&HashMap::<String, String>::new()), None);
    }

    #[test]
    fn sources_order() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let all = Sources {
            header: Some("h"),
            celery_root_id: Some("r"),
            celery_parent_id: Some("p"),
            celery_id: Some("i"),
            property: Some("c"),
            traceparent: Some(tp),
        };
        assert_eq!(all.choose().as_deref(), Some("h"));
        let s = Sources {
            header: Some("bad id"),
            ..all
        };
        assert_eq!(s.choose().as_deref(), Some("r"));
        let s = Sources {
            celery_root_id: None,
            ..s
        };
        assert_eq!(s.choose().as_deref(), Some("p"));
        let s = Sources {
            celery_parent_id: None,
            ..s
        };
        assert_eq!(s.choose().as_deref(), Some("i"));
        let s = Sources {
            celery_id: None,
            ..s
        };
        assert_eq!(s.choose().as_deref(), Some("c"));
        let s = Sources {
            property: None,
            ..s
        };
        assert_eq!(
            s.choose().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let s = Sources {
            traceparent: Some("junk"),
            ..s
        };
        assert_eq!(s.choose(), None);
        assert_eq!(from_parts(None, Some(" c "), None).as_deref(), Some("c"));
    }

    #[test]
    fn id_generators() {
        let v7 = IdGenerator::default().generate();
        assert_eq!(uuid::Uuid::parse_str(&v7).unwrap().get_version_num(), 7);
        let v4 = IdGenerator::UuidV4.generate();
        let u = uuid::Uuid::parse_str(&v4).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(v4, u.hyphenated().to_string(), "hyphenated lowercase");
        assert_ne!(v4, IdGenerator::UuidV4.generate());
        fn fixed() -> String {
            "fixed-1".into()
        }
        assert_eq!(IdGenerator::Custom(fixed).generate(), "fixed-1");
        assert_eq!(format!("{:?}", IdGenerator::Custom(fixed)), "Custom(..)");
    }

    #[test]
    fn request_ids_from_http_headers() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ids = |r, c, t| RequestIds::from_headers(r, c, t, IdGenerator::UuidV4);
        let x = ids(Some("req-1"), None, None);
        assert_eq!(
            (x.request_id.as_str(), x.correlation_id.as_str()),
            ("req-1", "req-1")
        );
        let x = ids(None, Some("corr-1"), Some(tp));
        assert_eq!(
            (x.request_id.as_str(), x.correlation_id.as_str()),
            ("corr-1", "corr-1")
        );
        // A traceparent names the flow; the request keeps its own id.
        let x = ids(Some("req-1"), None, Some(tp));
        assert_eq!(x.request_id, "req-1");
        assert_eq!(x.correlation_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let x = ids(None, None, Some(tp));
        assert_eq!(
            uuid::Uuid::parse_str(&x.request_id)
                .unwrap()
                .get_version_num(),
            4
        );
        assert_eq!(x.correlation_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        // Invalid values are ignored, the generator fills in.
        let x = ids(Some("a b"), Some("{"), Some("00-zz"));
        assert_eq!(
            uuid::Uuid::parse_str(&x.request_id)
                .unwrap()
                .get_version_num(),
            4
        );
        assert_eq!(x.correlation_id, x.request_id);
        let x = RequestIds::from_headers(None, None, None, IdGenerator::default());
        assert_eq!(
            uuid::Uuid::parse_str(&x.request_id)
                .unwrap()
                .get_version_num(),
            7
        );
    }
}

#[cfg(all(test, feature = "lapin-api"))]
mod lapin_tests {
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::BasicProperties;

    use super::*;

    fn header_str(headers: &FieldTable, key: &str) -> Option<String> {
        Headers::get(headers, key).map(Cow::into_owned)
    }

    #[test]
    fn headers_round_trip() {
        let mut h = FieldTable::default();
        inject_headers(&mut h, "abc-123");
        assert_eq!(header_str(&h, HEADER).as_deref(), Some("abc-123"));
        assert!(trace_id_from_traceparent(&header_str(&h, TRACEPARENT_HEADER).unwrap()).is_some());
        assert_eq!(extract_headers(&h).as_deref(), Some("abc-123"));
    }

    #[test]
    fn properties_round_trip_and_keep_other_headers() {
        let mut other = FieldTable::default();
        other.insert("x-other".into(), AMQPValue::LongString("keep".into()));
        let props = inject_properties(BasicProperties::default().with_headers(other), "abc-123");
        assert_eq!(
            props.correlation_id().as_ref().map(|s| s.as_str()),
            Some("abc-123")
        );
        let h = props.headers().as_ref().unwrap();
        assert_eq!(header_str(h, "x-other").as_deref(), Some("keep"));
        assert_eq!(extract_properties(&props).as_deref(), Some("abc-123"));
    }

    #[test]
    fn extraction_order_header_then_property_then_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = FieldTable::default();
        h.insert(HEADER.into(), AMQPValue::LongString("from-header".into()));
        h.insert(TRACEPARENT_HEADER.into(), AMQPValue::LongString(tp.into()));
        let props = BasicProperties::default()
            .with_headers(h)
            .with_correlation_id("from-property".into());
        assert_eq!(extract_properties(&props).as_deref(), Some("from-header"));

        let mut h = FieldTable::default();
        h.insert(TRACEPARENT_HEADER.into(), AMQPValue::LongString(tp.into()));
        let props = BasicProperties::default()
            .with_headers(h.clone())
            .with_correlation_id("from-property".into());
        assert_eq!(extract_properties(&props).as_deref(), Some("from-property"));

        let props = BasicProperties::default().with_headers(h);
        assert_eq!(
            extract_properties(&props).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(extract_properties(&BasicProperties::default()), None);
    }

    #[test]
    fn invalid_values_are_skipped_and_other_string_types_read() {
        let mut h = FieldTable::default();
        h.insert(HEADER.into(), AMQPValue::LongString("bad\n{\"x".into()));
        let props = BasicProperties::default()
            .with_headers(h)
            .with_correlation_id("good-1".into());
        assert_eq!(extract_properties(&props).as_deref(), Some("good-1"));

        let mut h = FieldTable::default();
        h.insert(HEADER.into(), AMQPValue::ShortString("short-1".into()));
        assert_eq!(extract_headers(&h).as_deref(), Some("short-1"));
        let mut h = FieldTable::default();
        h.insert(
            HEADER.into(),
            AMQPValue::ByteArray(b"bytes-1".to_vec().into()),
        );
        assert_eq!(extract_headers(&h).as_deref(), Some("bytes-1"));
        let mut h = FieldTable::default();
        h.insert(HEADER.into(), AMQPValue::LongLongInt(7));
        assert_eq!(extract_headers(&h), None);
        assert_eq!(
            from_parts(Some(&"x".repeat(500)), None, None),
            None,
            "oversized header"
        );
    }

    #[test]
    fn an_existing_traceparent_and_correlation_id_property_survive_injection() {
        let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = FieldTable::default();
        h.insert(
            TRACEPARENT_HEADER.into(),
            AMQPValue::LongString(theirs.into()),
        );
        h.insert("x-other".into(), AMQPValue::LongString("keep".into()));
        let props = BasicProperties::default()
            .with_headers(h)
            .with_correlation_id("rpc-reply-7".into())
            .with_reply_to("amq.rabbitmq.reply-to".into());
        let props = inject_properties(props, "abc-123");
        assert_eq!(
            props.correlation_id().as_ref().map(|s| s.as_str()),
            Some("rpc-reply-7"),
            "the RPC correlation id is kept"
        );
        let h = props.headers().as_ref().unwrap();
        assert_eq!(
            h.inner().get(TRACEPARENT_HEADER),
            Some(&AMQPValue::LongString(theirs.into())),
            "their traceparent is kept byte for byte"
        );
        assert_eq!(header_str(h, HEADER).as_deref(), Some("abc-123"));
        assert_eq!(header_str(h, "x-other").as_deref(), Some("keep"));
        // Our id is still what we read back (the header comes first).
        assert_eq!(extract_properties(&props).as_deref(), Some("abc-123"));

        // The same through inject_headers alone, with a traceparent of any type.
        let mut h = FieldTable::default();
        h.insert(TRACEPARENT_HEADER.into(), AMQPValue::LongLongInt(1));
        inject_headers(&mut h, "abc-123");
        assert_eq!(
            h.inner().get(TRACEPARENT_HEADER),
            Some(&AMQPValue::LongLongInt(1))
        );
    }

    #[test]
    fn injected_traceparents_never_claim_sampling() {
        for id in ["abc-123", "0190f3c2-7a1b-7c3d-9e4f-0a1b2c3d4e5f"] {
            let mut h = FieldTable::default();
            inject_headers(&mut h, id);
            let tp = header_str(&h, TRACEPARENT_HEADER).unwrap();
            let flags = u8::from_str_radix(&tp[53..], 16).unwrap();
            assert_eq!(flags & 1, 0, "sampled flag set in {tp}");
        }
    }

    /// The headers Celery 5 (protocol 2) puts on a task message; `parent_id`
    /// is void for a task sent outside any task.
    fn celery_headers(root: &str, parent: Option<&str>, id: &str) -> FieldTable {
        let mut h = FieldTable::default();
        h.insert("lang".into(), AMQPValue::LongString("py".into()));
        h.insert(
            CELERY_TASK_HEADER.into(),
            AMQPValue::LongString("proj.add".into()),
        );
        h.insert(CELERY_ID_HEADER.into(), AMQPValue::LongString(id.into()));
        h.insert(
            CELERY_ROOT_ID_HEADER.into(),
            AMQPValue::LongString(root.into()),
        );
        h.insert(
            CELERY_PARENT_ID_HEADER.into(),
            parent.map_or(AMQPValue::Void, |p| AMQPValue::LongString(p.into())),
        );
        h
    }

    #[test]
    fn celery_root_id_then_parent_id_then_id_before_the_property() {
        let props = |h: FieldTable, prop: &str| {
            BasicProperties::default()
                .with_headers(h)
                .with_correlation_id(prop.into())
        };
        // A subtask: the flow's root wins over the task's own id (the property).
        let p = props(
            celery_headers("root-1", Some("parent-1"), "task-3"),
            "task-3",
        );
        assert_eq!(extract_properties(&p).as_deref(), Some("root-1"));
        // No valid root: the parent, then the task id.
        let p = props(
            celery_headers("bad root", Some("parent-1"), "task-3"),
            "task-3",
        );
        assert_eq!(extract_properties(&p).as_deref(), Some("parent-1"));
        let mut h = celery_headers("bad root", None, "task-3");
        h.insert(CELERY_ROOT_ID_HEADER.into(), AMQPValue::Void);
        assert_eq!(
            extract_properties(&props(h, "prop-1")).as_deref(),
            Some("task-3")
        );
        // asgi-correlation-id's Celery extension: CORRELATION_ID first of all.
        let mut h = celery_headers("root-1", None, "task-3");
        h.insert(HEADER.into(), AMQPValue::LongString("req-9".into()));
        assert_eq!(
            extract_properties(&props(h.clone(), "task-3")).as_deref(),
            Some("req-9")
        );
        assert_eq!(extract_headers(&h).as_deref(), Some("req-9"));
        // Without the property too (headers only).
        assert_eq!(
            extract_headers(&celery_headers("root-1", None, "task-3")).as_deref(),
            Some("root-1")
        );
    }

    #[test]
    fn celery_header_names_are_read_only_on_celery_messages() {
        // An `id` header on a message that is not a Celery task is someone
        // else's business.
        let mut h = FieldTable::default();
        h.insert(
            CELERY_ID_HEADER.into(),
            AMQPValue::LongString("row-17".into()),
        );
        h.insert(
            CELERY_ROOT_ID_HEADER.into(),
            AMQPValue::LongString("x-1".into()),
        );
        let p = BasicProperties::default()
            .with_headers(h)
            .with_correlation_id("prop-1".into());
        assert_eq!(extract_properties(&p).as_deref(), Some("prop-1"));
    }

    #[test]
    fn an_overlong_id_travels_in_headers_only() {
        let id = "x".repeat(300);
        let props = inject_properties(BasicProperties::default(), &id);
        assert!(props.correlation_id().is_none());
        assert_eq!(
            header_str(props.headers().as_ref().unwrap(), HEADER).as_deref(),
            Some(id.as_str())
        );
    }
}

#[cfg(all(test, feature = "tracing"))]
mod span_tests {
    use std::time::Duration;

    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn no_scope_no_id() {
        let _d = tracing::subscriber::set_default(tracing_subscriber::registry());
        assert_eq!(current(), None);
    }

    #[test]
    fn scopes_nest_innermost_wins_and_children_inherit() {
        let _d = tracing::subscriber::set_default(tracing_subscriber::registry());
        let outer = scope("outer-1");
        let _o = outer.enter();
        assert_eq!(current().as_deref(), Some("outer-1"));
        {
            let child = tracing::info_span!("child");
            let _c = child.enter();
            assert_eq!(current().as_deref(), Some("outer-1"));
            let inner = scope("inner-1");
            let _i = inner.enter();
            assert_eq!(current().as_deref(), Some("inner-1"));
        }
        assert_eq!(current().as_deref(), Some("outer-1"));
    }

    #[test]
    fn works_behind_layers_and_per_layer_filters() {
        use tracing_subscriber::Layer as _;
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::filter::LevelFilter::ERROR);
        let _d = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let span = scope("behind-1");
        let _e = span.enter();
        assert_eq!(current().as_deref(), Some("behind-1"));
    }

    #[test]
    fn follows_futures_across_await_points_on_a_multi_thread_runtime() {
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let _d = tracing::dispatcher::set_default(&dispatch);
        let mut handles = Vec::new();
        for i in 0..16 {
            let dispatch = dispatch.clone();
            let id = format!("task-{i}");
            let fut = async move {
                let mut seen = Vec::new();
                for _ in 0..10 {
                    seen.push(current());
                    // Yield to the scheduler so the task may resume on another worker thread.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    seen.push(current());
                }
                seen
            }
            .instrument(scope(&id));
            handles.push((
                id,
                rt.spawn(tracing::instrument::WithSubscriber::with_subscriber(
                    fut, dispatch,
                )),
            ));
        }
        for (id, h) in handles {
            let seen = rt.block_on(h).unwrap();
            assert!(
                seen.iter().all(|s| s.as_deref() == Some(id.as_str())),
                "{id}: {seen:?}"
            );
        }
        // Outside every future: nothing.
        assert_eq!(current(), None);
    }
}
