//! The `tracing` front-end: a `tracing_subscriber::Layer`.

use std::error::Error as StdError;
use std::fmt::{self, Write as _};

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record as SpanRecord};
use tracing_core::subscriber::Interest;
use tracing_core::{Event, LevelFilter, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{self, Context};
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

    /// Whether the spans of `meta` are worth recording: their level passes
    /// the filter for their target. A span below the level carries nothing
    /// into the records inside it, as with `EnvFilter`, where it is not even
    /// created.
    fn wants_span(&self, meta: &Metadata<'_>) -> bool {
        self.prefiltered || passes(&self.shipper, meta)
    }
}

/// The per-layer filter boot puts in front of the layer: the configured
/// levels (and, for events, the ignored targets), decided once per
/// call site. A call site below the level gets `Interest::never`, so the
/// `tracing` macros skip it before building a span or an event (what
/// `EnvFilter` does); the answer depends only on the call site and the
/// filter in force, and a [`LevelHandle`](crate::LevelHandle) rebuilds
/// `tracing`'s interest cache when it changes the filter.
#[derive(Debug, Clone)]
pub(crate) struct ShipperFilter {
    shipper: Shipper,
}

impl ShipperFilter {
    pub(crate) fn new(shipper: Shipper) -> Self {
        ShipperFilter { shipper }
    }

    fn passes(&self, meta: &Metadata<'_>) -> bool {
        // `log` records bridged by LogTracer carry target "log" here; the
        // layer filters them on their real target.
        meta.target() == "log" || passes(&self.shipper, meta)
    }
}

/// Whether the configuration lets a span or event of `meta` through: its
/// level and target pass the filter, and for an event, the target is not
/// ignored. Ignored targets keep records (our own, the AMQP client's) from
/// being shipped; a span of theirs only carries fields into other records
/// (`logcollect::correlation::scope` is one), so spans are held to the
/// levels alone.
fn passes(shipper: &Shipper, meta: &Metadata<'_>) -> bool {
    let (target, lvl) = (meta.target(), level(meta.level()));
    if meta.is_span() {
        carries_ids(target) || shipper.passes(target, lvl)
    } else {
        shipper.wants(target, lvl)
    }
}

/// The targets of the spans that carry request, task and correlation ids
/// into the records made inside them: logcollect's own integrations and
/// `correlation::scope`. They are INFO spans; a service at level WARNING
/// must still find the request's ids on its warnings, so these spans pass
/// whatever the level. There is one per request or task, never one per
/// poll, so letting them through costs little.
const ID_SPAN_TARGETS: [&str; 4] = [
    "logcollect::correlation",
    "logcollect_tower",
    "logcollect_actix",
    "logcollect_jobs",
];

fn carries_ids(target: &str) -> bool {
    ID_SPAN_TARGETS
        .iter()
        .any(|t| crate::filter::target_matches(t, target))
}

impl<S> layer::Filter<S> for ShipperFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        self.passes(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.passes(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // Read again on every interest cache rebuild, so a level handle
        // raising the level lifts the global maximum too. `log` records
        // bridged by LogTracer are held to it as well; `log`'s own maximum
        // level follows the same filter.
        //
        // Below INFO the hint stays INFO: the INFO spans that carry ids
        // (`ID_SPAN_TARGETS`) must reach `callsite_enabled`; every other
        // INFO call site is then disabled by its cached interest.
        Some(match self.shipper.filter().max_level() {
            None => LevelFilter::OFF,
            Some(Level::Critical | Level::Error | Level::Warning | Level::Info) => {
                LevelFilter::INFO
            }
            Some(Level::Debug) => LevelFilter::DEBUG,
            Some(Level::Trace) => LevelFilter::TRACE,
        })
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
        if suppressed() || !self.wants_span(attrs.metadata()) {
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
                // A span first recorded now, unless it is one not worth it.
                None if self.wants_span(span.metadata()) => {
                    let mut fields = SpanFields::default();
                    values.record(&mut fields);
                    ext.insert(fields);
                }
                None => {}
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

#[cfg(all(test, feature = "testing"))]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::Registry;

    use super::*;
    use crate::config::Config;

    /// Call-site interest is global: each new dispatcher (each test's
    /// `with_default`) rebuilds it for every call site, on the thread that
    /// registers it, which can race with another test evaluating a call
    /// site (seen: a disabled span found enabled, 2 runs in 7). These tests
    /// take turns.
    static INTEREST: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        INTEREST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn capturing(level: &str) -> Shipper {
        Shipper::capturing(Config::builder().level(level).build().unwrap())
    }

    fn records(shipper: &Shipper) -> Vec<serde_json::Value> {
        shipper
            .take_captured()
            .iter()
            .map(|e| serde_json::from_slice(&e.body).unwrap())
            .collect()
    }

    /// An info record inside an enabled info span inside a disabled trace
    /// span.
    fn nested_spans() {
        let outer = tracing::trace_span!(target: "app", "poll", poll_field = "noisy");
        let _o = outer.enter();
        let inner = tracing::info_span!(target: "app", "request", request_id = "r-1");
        let _i = inner.enter();
        tracing::info!(target: "app", "handled");
    }

    fn assert_only_enabled_span_fields(records: &[serde_json::Value]) {
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["request_id"], "r-1", "{}", records[0]);
        assert!(
            records[0].get("poll_field").is_none(),
            "a disabled span's fields were recorded: {}",
            records[0]
        );
    }

    #[test]
    fn the_plain_layer_records_no_fields_of_a_span_below_the_level() {
        let _serial = serial();
        let shipper = capturing("info");
        let subscriber = tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone()));
        tracing::subscriber::with_default(subscriber, nested_spans);
        assert_only_enabled_span_fields(&records(&shipper));
    }

    #[test]
    fn the_filtered_layer_disables_a_span_below_the_level() {
        let _serial = serial();
        let shipper = capturing("info");
        let subscriber = tracing_subscriber::registry().with(crate::boot::filtered_layer(&shipper));
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::trace_span!(target: "app", "t").is_disabled());
            assert!(!tracing::info_span!(target: "app", "i").is_disabled());
            nested_spans();
        });
        assert_only_enabled_span_fields(&records(&shipper));
    }

    /// A warning inside a request span of `logcollect-tower` (an INFO span)
    /// at level WARNING: the request's ids stay on the record, while an
    /// application's own INFO span is still disabled.
    fn warning_in_a_request_span() {
        let request =
            tracing::info_span!(target: "logcollect_tower", "request", request_id = "r-9");
        let _r = request.enter();
        let handler = tracing::info_span!(target: "app", "handler", handler_field = "x");
        let _h = handler.enter();
        tracing::warn!(target: "app", "slow");
    }

    fn assert_ids_kept(records: &[serde_json::Value]) {
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["request_id"], "r-9", "{}", records[0]);
        assert!(records[0].get("handler_field").is_none(), "{}", records[0]);
    }

    #[test]
    fn spans_that_carry_ids_pass_below_the_level_with_the_filtered_layer() {
        let _serial = serial();
        let shipper = capturing("warning");
        let subscriber = tracing_subscriber::registry().with(crate::boot::filtered_layer(&shipper));
        tracing::subscriber::with_default(subscriber, warning_in_a_request_span);
        assert_ids_kept(&records(&shipper));
    }

    #[test]
    fn spans_that_carry_ids_pass_below_the_level_with_the_plain_layer() {
        let _serial = serial();
        let shipper = capturing("warning");
        let subscriber = tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone()));
        tracing::subscriber::with_default(subscriber, warning_in_a_request_span);
        assert_ids_kept(&records(&shipper));
    }

    /// The metadata of a span call site at `level`, from a subscriber that
    /// enables everything.
    fn span_meta(level: &str) -> &'static Metadata<'static> {
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let span = match level {
                "trace" => tracing::trace_span!(target: "app::db", "t"),
                _ => tracing::info_span!(target: "app::db", "i"),
            };
            span.metadata().expect("an enabled span")
        })
    }

    #[test]
    fn a_call_site_below_the_level_gets_interest_never() {
        let _serial = serial();
        let shipper = capturing("info,noisy=off");
        let filter = ShipperFilter::new(shipper.clone());
        let interest = |m| layer::Filter::<Registry>::callsite_enabled(&filter, m);
        let hint = || layer::Filter::<Registry>::max_level_hint(&filter);
        let (trace, info) = (span_meta("trace"), span_meta("info"));
        assert!(interest(trace).is_never());
        assert!(interest(info).is_always());
        assert_eq!(hint(), Some(LevelFilter::INFO));
        // What a level handle does before it rebuilds the interest cache.
        shipper.set_filter(crate::Filter::parse("info,app::db=trace").unwrap());
        assert!(interest(trace).is_always());
        assert_eq!(hint(), Some(LevelFilter::TRACE));
        shipper.set_filter(crate::Filter::parse("off").unwrap());
        assert!(interest(info).is_never());
        assert_eq!(hint(), Some(LevelFilter::OFF));
    }

    #[test]
    fn a_raised_level_re_enables_a_disabled_span_call_site() {
        let _serial = serial();
        let shipper = capturing("info");
        let levels = shipper.level_handle();
        let subscriber = tracing_subscriber::registry().with(crate::boot::filtered_layer(&shipper));
        tracing::subscriber::with_default(subscriber, || {
            let step = |n: u64| {
                let span = tracing::debug_span!(target: "app", "step", span_n = n);
                let _e = span.enter();
                tracing::warn!(target: "app", n, "inside");
            };
            step(1);
            levels.set("debug").unwrap();
            step(2);
            levels.set("info").unwrap();
            step(3);
        });
        let got: Vec<(u64, Option<u64>)> = records(&shipper)
            .iter()
            .map(|r| (r["n"].as_u64().unwrap(), r["span_n"].as_u64()))
            .collect();
        assert_eq!(got, [(1, None), (2, Some(2)), (3, None)]);
    }

    /// `Shipper::wants` passes over ignored targets by their first and last
    /// bytes before comparing them: only a target an ignored one starts
    /// (then `::`, `.` or nothing) is dropped.
    #[test]
    fn ignored_targets_are_told_apart_from_targets_sharing_their_ends() {
        let shipper = Shipper::capturing(
            Config::builder()
                .level("info")
                .ignored_targets(["lapin", "b", "x.y"])
                .build()
                .unwrap(),
        );
        let ignored = [
            "lapin",
            "lapin::channel",
            "lapin.io",
            "b",
            "b::c",
            "x.y",
            "x.y::z",
        ];
        let kept = [
            "lapinn",
            "lapi",
            "lan",
            "bench::caller",
            "bb",
            "x.yz",
            "x",
            "app",
            "l",
        ];
        for t in ignored {
            assert!(!shipper.wants(t, Level::Info), "{t} is ignored");
        }
        for t in kept {
            assert!(shipper.wants(t, Level::Info), "{t} is not ignored");
        }
    }
}
