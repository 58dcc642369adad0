//! `TraceIdsLayer` with a real OpenTelemetry SDK tracer and
//! `tracing-opentelemetry`, shipping to the real broker: records inside
//! spans carry the spans' trace and span ids, records outside carry none.

use std::time::Duration;

use logcollect::{LogcollectLayer, Shipper};
use logcollect_opentelemetry::TraceIdsLayer;
use logcollect_tests::{config, unique, Capture, Msg};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    cap: Capture,
    shipper: Shipper,
    dispatch: tracing::Dispatch,
    _provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Rig {
    fn new(prefix: &str, profile: Option<&str>) -> Rig {
        let ex = unique(prefix);
        let cap = Capture::topic(&ex, "logstash.#");
        let mut builder = config(&ex);
        if let Some(p) = profile {
            builder = builder.profile(p.parse().unwrap());
        }
        let shipper = Shipper::new(builder.build().unwrap()).unwrap();
        // A real SDK tracer (always sampling); spans go nowhere else.
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
                .with(TraceIdsLayer::new())
                .with(LogcollectLayer::new(shipper.clone())),
        );
        Rig {
            cap,
            shipper,
            dispatch,
            _provider: provider,
        }
    }

    fn records(&self, n: usize) -> Vec<Msg> {
        self.shipper.flush(WAIT).unwrap();
        let mut msgs = self.cap.take(n, WAIT);
        msgs.sort_by_key(|m| m.field("n").as_u64());
        msgs
    }
}

/// The OpenTelemetry ids of a `tracing` span, as the SDK knows them.
fn ids(span: &tracing::Span) -> (String, String) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.trace_id().to_string(), sc.span_id().to_string())
}

#[test]
fn records_inside_spans_carry_their_trace_and_span_ids() {
    let rig = Rig::new("otel-ids", None);
    let (outer_ids, inner_ids) = tracing::dispatcher::with_default(&rig.dispatch, || {
        tracing::info!(n = 0u64, "outside every span");
        let outer = tracing::info_span!("checkout");
        let outer_ids = {
            let _e = outer.enter();
            tracing::info!(n = 1u64, "in the outer span");
            let inner = tracing::info_span!("charge_card");
            let _i = inner.enter();
            tracing::info!(n = 2u64, "in the inner span");
            (ids(&outer), ids(&inner))
        };
        outer_ids
    });
    let msgs = rig.records(3);
    assert!(msgs[0].field("trace_id").is_null(), "{}", msgs[0].body);
    assert!(msgs[0].field("span_id").is_null());
    assert_eq!(msgs[1].str("trace_id"), outer_ids.0, "{}", msgs[1].body);
    assert_eq!(msgs[1].str("span_id"), outer_ids.1);
    assert_eq!(msgs[2].str("trace_id"), outer_ids.0, "one trace");
    assert_eq!(
        msgs[2].str("span_id"),
        inner_ids.1,
        "the innermost span's id"
    );
    assert_ne!(inner_ids.1, outer_ids.1);
    assert_eq!(outer_ids.0.len(), 32);
    assert_eq!(outer_ids.1.len(), 16);
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn a_remote_parent_gives_its_trace_id_and_ecs_writes_trace_dot_id() {
    let rig = Rig::new("otel-remote", Some("ecs"));
    let remote = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let span_id = tracing::dispatcher::with_default(&rig.dispatch, || {
        let span = tracing::info_span!("handle_request");
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote))
            .unwrap();
        let _e = span.enter();
        tracing::info!(n = 1u64, "served");
        ids(&span).1
    });
    let m = &rig.records(1)[0];
    assert_eq!(
        m.field("trace")["id"],
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "{}",
        m.body
    );
    assert_eq!(m.field("span")["id"], span_id.as_str());
    assert_ne!(
        span_id, "00f067aa0ba902b7",
        "a new span under the remote one"
    );
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn log_records_inside_a_span_carry_the_ids_too() {
    let rig = Rig::new("otel-log", None);
    let logger = logcollect::LogcollectLogger::new(rig.shipper.clone());
    let (trace_id, span_id) = tracing::dispatcher::with_default(&rig.dispatch, || {
        let span = tracing::info_span!("legacy");
        let _e = span.enter();
        log::Log::log(
            &logger,
            &log::Record::builder()
                .args(format_args!("from log"))
                .level(log::Level::Info)
                .target("app::legacy")
                .key_values(&[("n", 1u64)])
                .build(),
        );
        ids(&span)
    });
    let m = &rig.records(1)[0];
    assert_eq!(m.str("message"), "from log");
    assert_eq!(m.str("trace_id"), trace_id, "{}", m.body);
    assert_eq!(m.str("span_id"), span_id);
    rig.shipper.shutdown(WAIT).unwrap();
}
