//! The `tracing` front-end: a `tracing_subscriber::Layer`.

use std::error::Error as StdError;
use std::fmt::{self, Write as _};

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record as SpanRecord};
use tracing_core::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::spans::{write_trace_ids, SpanFields};
use crate::encode::{Location, RecordWriter};
use crate::record::Level;
use crate::ship::{suppressed, Shipper};

/// A `tracing_subscriber::Layer` that ships every event it accepts, with the
/// fields of the spans around it (innermost wins).
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
/// let (layer, _guard) = logcollect::boot::layer(logcollect::Config::from_env()?)?;
/// tracing_subscriber::registry().with(layer).init();
/// # Ok::<(), logcollect::Error>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
#[derive(Debug, Clone)]
pub struct LogcollectLayer {
    shipper: Shipper,
    /// Set when a per-layer filter applying the same levels and ignored
    /// targets sits in front of this layer (as `boot` installs it): the
    /// check per event is then already done, once per callsite.
    prefiltered: bool,
}

impl LogcollectLayer {
    /// A layer feeding `shipper`.
    pub fn new(shipper: Shipper) -> Self {
        LogcollectLayer {
            shipper,
            prefiltered: false,
        }
    }

    /// A layer behind a filter that already applies the configuration's
    /// levels and ignored targets.
    pub(crate) fn prefiltered(shipper: Shipper) -> Self {
        LogcollectLayer {
            shipper,
            prefiltered: true,
        }
    }
}

pub(crate) fn level(l: &tracing_core::Level) -> Level {
    match *l {
        tracing_core::Level::ERROR => Level::Error,
        tracing_core::Level::WARN => Level::Warning,
        tracing_core::Level::INFO => Level::Info,
        tracing_core::Level::DEBUG => Level::Debug,
        _ => Level::Trace,
    }
}

/// Writes an event's fields into the record.
struct EventVisitor<'w, 'e> {
    w: &'w mut RecordWriter<'e>,
    /// Events bridged from `log` carry `log.target`, `log.file`… fields that
    /// only repeat the metadata.
    skip_log_fields: bool,
}

impl EventVisitor<'_, '_> {
    fn skip(&self, field: &Field) -> bool {
        self.skip_log_fields && field.name().starts_with("log.")
    }
}

impl Visit for EventVisitor<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.w.message_writer(), "{value:?}");
        } else if !self.skip(field) {
            self.w.display(field.name(), format_args!("{value:?}"));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.w.message_str(value);
        } else if !self.skip(field) {
            self.w.str(field.name(), value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if !self.skip(field) {
            self.w.i64(field.name(), value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if !self.skip(field) {
            self.w.u64(field.name(), value);
        }
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.w.i128(field.name(), value);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.w.u64(field.name(), v),
            Err(_) => self.w.display(field.name(), format_args!("{value}")),
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.w.f64(field.name(), value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.w.bool(field.name(), value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn StdError + 'static)) {
        self.w.error(field.name(), value);
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.w.str(field.name(), &String::from_utf8_lossy(value));
    }
}

impl<S> Layer<S> for LogcollectLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if suppressed() {
            return;
        }
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        if suppressed() {
            return;
        }
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            match ext.get_mut::<SpanFields>() {
                Some(fields) => values.record(fields),
                None => {
                    let mut fields = SpanFields::default();
                    values.record(&mut fields);
                    ext.insert(fields);
                }
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if suppressed() {
            return;
        }
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let lvl = level(meta.level());
        let target = meta.target();
        // Events bridged from `log` pass the filter as target "log": their
        // real target is checked here.
        let checked = self.prefiltered && normalized.is_none();
        if !checked && !self.shipper.wants(target, lvl) {
            return;
        }
        let loc = Location {
            file: meta.file(),
            line: meta.line(),
            module: meta.module_path(),
        };
        self.shipper.emit(lvl, target, loc, |w| {
            event.record(&mut EventVisitor {
                w: &mut *w,
                skip_log_fields: normalized.is_some(),
            });
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope {
                    let ext = span.extensions();
                    if let Some(fields) = ext.get::<SpanFields>() {
                        fields.write_to(w);
                    }
                    write_trace_ids(&ext, w);
                }
            }
        });
    }
}
