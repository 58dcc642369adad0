//! # logcollect-opentelemetry
//!
//! OpenTelemetry trace and span ids on `logcollect` records: inside a
//! `tracing` span that [`tracing-opentelemetry`](https://docs.rs/tracing-opentelemetry)
//! gave an OpenTelemetry context, every record carries `trace_id` and
//! `span_id` (32 and 16 lowercase hex digits; the ECS profile writes them as
//! `trace.id` and `span.id`), so Kibana jumps from a log line to its trace
//! and back.
//!
//! ```no_run
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::prelude::*;
//!
//! # fn run(provider: opentelemetry_sdk::trace::SdkTracerProvider) -> Result<(), logcollect::Error> {
//! let (logcollect_layer, _guard) = logcollect::boot::layer(logcollect::Config::from_env()?)?;
//! tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("my-service")))
//!     // after the OpenTelemetry layer: it reads the context that layer made
//!     .with(logcollect_opentelemetry::TraceIdsLayer::new())
//!     .with(logcollect_layer)
//!     .init();
//!
//! let span = tracing::info_span!("checkout");
//! let _entered = span.enter();
//! tracing::info!("paid"); // trace_id = "4bf92f35…", span_id = "00f067aa…"
//! # Ok(()) }
//! ```
//!
//! ## How
//!
//! When a span is entered for the first time, [`TraceIdsLayer`] asks
//! `tracing-opentelemetry` for the span's OpenTelemetry context
//! ([`tracing_opentelemetry::get_otel_context`]) and, when its span context
//! is valid, stores the ids in the span's registry data as
//! [`logcollect::correlation::TraceIds`], which the `logcollect` layer
//! writes into every record made inside the span (the innermost span's ids
//! win). `log` records bridged to `tracing` get them too.
//!
//! - Set a remote parent ([`OpenTelemetrySpanExt::set_parent`](tracing_opentelemetry::OpenTelemetrySpanExt::set_parent),
//!   e.g. from an incoming `traceparent`) before the span is first entered:
//!   the ids are read then, and the OpenTelemetry span starts then.
//! - Records of a span that is never entered (an event with an explicit
//!   `parent:`) and records outside every span carry no ids.
//! - A span whose context is invalid (no tracer, or a tracer that is a
//!   no-op) adds nothing.
//!
//! The core `logcollect` crate never depends on OpenTelemetry: its
//! versions live in this crate only.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::OnceLock;

use logcollect::correlation::TraceIds;
use opentelemetry::trace::TraceContextExt as _;
use tracing::dispatcher::WeakDispatch;
use tracing::span::Id;
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A `tracing_subscriber` layer that puts each span's OpenTelemetry trace
/// and span ids on the records made inside it. Add it after
/// `tracing_opentelemetry`'s layer. See the [crate docs](crate).
#[derive(Debug, Default)]
pub struct TraceIdsLayer {
    /// The subscriber this layer is part of, to ask `tracing-opentelemetry`
    /// for a span's context (weak: the subscriber owns the layer).
    dispatch: OnceLock<WeakDispatch>,
}

impl TraceIdsLayer {
    /// The layer.
    pub fn new() -> Self {
        TraceIdsLayer::default()
    }
}

impl<S> Layer<S> for TraceIdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        if span.extensions().get::<TraceIds>().is_some() {
            return;
        }
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        // No extensions may be held here: the lookup locks them.
        let Some(cx) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            return;
        };
        let otel_span = cx.span();
        let sc = otel_span.span_context();
        if !sc.is_valid() {
            return;
        }
        span.extensions_mut().replace(TraceIds {
            trace_id: sc.trace_id().to_string(),
            span_id: sc.span_id().to_string(),
        });
    }
}
