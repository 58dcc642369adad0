//! Span fields, shared by both front-ends: the `tracing` layer stores each
//! span's fields (pre-encoded) in the registry, and both the layer and the
//! `log` logger add the fields of the spans around a record to it.

use std::error::Error as StdError;
use std::fmt::{self, Write as _};

use tracing_core::field::{Field, Visit};

use crate::encode::{push_f64, push_json_bytes, push_u64, JsonStrWriter, RecordWriter};

/// A span's fields, pre-encoded as JSON values when the span is created, so
/// each event inside it only copies bytes.
#[derive(Debug, Default)]
pub(crate) struct SpanFields(Vec<(&'static str, String)>);

impl SpanFields {
    /// Adds the span's fields to a record (a key the record already has
    /// keeps its first value: the event's own, then the innermost span's).
    pub(crate) fn write_to(&self, w: &mut RecordWriter<'_>) {
        for (k, json) in &self.0 {
            w.raw(k, json);
        }
    }

    fn set(&mut self, key: &'static str, json: String) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = json,
            None => self.0.push((key, json)),
        }
    }
}

impl Visit for SpanFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut v = Vec::new();
        v.push(b'"');
        let _ = write!(JsonStrWriter(&mut v), "{value:?}");
        v.push(b'"');
        self.set(field.name(), into_string(v));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let mut v = Vec::new();
        push_json_bytes(&mut v, value);
        self.set(field.name(), into_string(v));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        let mut v = Vec::new();
        push_u64(&mut v, value);
        self.set(field.name(), into_string(v));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let mut v = Vec::new();
        push_f64(&mut v, value);
        self.set(field.name(), into_string(v));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), value.to_string());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn StdError + 'static)) {
        self.record_str(field, &value.to_string());
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.record_str(field, &String::from_utf8_lossy(value));
    }
}

fn into_string(v: Vec<u8>) -> String {
    // Everything pushed above is valid UTF-8 (escaped valid UTF-8 input).
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Adds the fields of the current `tracing` span and its parents (innermost
/// wins) to a record from another front-end, so a `log` record made inside a
/// request or task span carries `request_id`, `correlation_id`… as a
/// `tracing` event there does. Needs the spans to be in a registry with the
/// logcollect layer (as `boot::default_config` sets up).
#[cfg(feature = "log")]
pub(crate) fn add_current(w: &mut RecordWriter<'_>) {
    use tracing_subscriber::registry::{LookupSpan as _, Registry};
    let _ = tracing::Span::current().with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else {
            return;
        };
        let Some(span) = registry.span(id) else {
            return;
        };
        for span in span.scope() {
            let ext = span.extensions();
            if let Some(fields) = ext.get::<SpanFields>() {
                fields.write_to(w);
            }
            write_trace_ids(&ext, w);
        }
    });
}

/// The OpenTelemetry trace id and span id of a span (lowercase hex, 32
/// and 16 digits), kept in the span's data in the `tracing_subscriber`
/// registry. An integration that knows them (`logcollect-opentelemetry`)
/// stores them with `span.extensions_mut().replace(TraceIds { .. })`;
/// every record made inside the span then carries them as `trace_id` and
/// `span_id` ([`TRACE_ID_FIELD`], [`SPAN_ID_FIELD`]; ECS: `trace.id`,
/// `span.id`), the innermost span's winning, and a field of those names
/// that the span or event declares itself winning over them.
///
/// It lives with the span fields because both front-ends write it;
/// `logcollect::correlation` is where users find it.
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    /// The trace id.
    pub trace_id: String,
    /// The span id.
    pub span_id: String,
}

/// The record field with the OpenTelemetry trace id ([`TraceIds`]; ECS:
/// `trace.id`).
pub const TRACE_ID_FIELD: &str = "trace_id";

/// The record field with the OpenTelemetry span id ([`TraceIds`]; ECS:
/// `span.id`).
pub const SPAN_ID_FIELD: &str = "span_id";

/// Writes a span's [`TraceIds`], if it has some, into a record.
pub(crate) fn write_trace_ids(
    ext: &tracing_subscriber::registry::Extensions<'_>,
    w: &mut RecordWriter<'_>,
) {
    if let Some(ids) = ext.get::<TraceIds>() {
        w.str(TRACE_ID_FIELD, &ids.trace_id);
        w.str(SPAN_ID_FIELD, &ids.span_id);
    }
}
