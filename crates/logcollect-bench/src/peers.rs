//! The peers a log call is compared with, built the same way by
//! `benches/caller.rs` (one thread, criterion) and `src/bin/caller_threads.rs`
//! (per-call latency, 1 and 4 threads):
//!
//! - logcollect's [`LogcollectLayer`] for `tracing` (its [`LogcollectLogger`]
//!   is used directly for `log`);
//! - [`appender_json`]: `tracing-appender`'s non-blocking writer with
//!   `tracing-subscriber`'s JSON formatter, writing to `std::io::sink()`;
//! - [`OtelPeer`]: OpenTelemetry's logs SDK, its batch processor and an
//!   exporter that drops every batch.
//!
//! [`LogcollectLogger`]: logcollect::LogcollectLogger

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use logcollect::{LogcollectLayer, Shipper};
use opentelemetry_appender_log::OpenTelemetryLogBridge;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder, BatchLogProcessor, LogBatch, LogExporter, SdkLogger, SdkLoggerProvider,
};
use tracing::Dispatch;
use tracing_appender::non_blocking::{ErrorCounter, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt as _;

/// logcollect's layer over `s`, as its own dispatcher.
pub fn logcollect_dispatch(s: &Shipper) -> Dispatch {
    Dispatch::new(tracing_subscriber::registry().with(LogcollectLayer::new(s.clone())))
}

/// tracing-appender (default: 128,000 lines, lossy) + JSON formatter → sink.
///
/// Keep the guard until the calls are done (dropping it stops the writer's
/// thread); the counter says how many lines the full buffer dropped.
pub fn appender_json() -> (Dispatch, WorkerGuard, ErrorCounter) {
    let (writer, guard) = tracing_appender::non_blocking(std::io::sink());
    let dropped = writer.error_counter();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().json().with_writer(writer));
    (Dispatch::new(subscriber), guard, dropped)
}

/// An exporter that drops every batch. It counts the records it was handed
/// (one atomic add per batch, on the processor's thread, not the caller's),
/// so a benchmark can check that every call reached it.
#[derive(Debug, Clone, Default)]
pub struct NoopLogExporter {
    exported: Arc<AtomicU64>,
}

impl LogExporter for NoopLogExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        self.exported
            .fetch_add(batch.iter().count() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// OpenTelemetry's logs SDK: an [`SdkLoggerProvider`] with its batch
/// processor over a [`NoopLogExporter`]. `tracing` events reach it through
/// `opentelemetry-appender-tracing`'s layer ([`OtelPeer::dispatch`]), `log`
/// records through `opentelemetry-appender-log`'s logger
/// ([`OtelPeer::log_bridge`]).
#[derive(Debug)]
pub struct OtelPeer {
    provider: SdkLoggerProvider,
    exported: Arc<AtomicU64>,
}

impl OtelPeer {
    /// A provider whose queue holds `queue_capacity` records. The other batch
    /// settings keep the SDK's defaults (512 records a batch, 1 s delay).
    ///
    /// The benchmarks size the queue above the calls they make, as they do
    /// for logcollect's: a full queue would make the rest of the calls take
    /// the drop path (nothing crosses threads), which is not the path the
    /// benchmark is named after. The SDK's default (2,048) fills in about a
    /// millisecond whenever the caller outruns the processor's thread.
    pub fn new(queue_capacity: usize) -> OtelPeer {
        let exporter = NoopLogExporter::default();
        let exported = exporter.exported.clone();
        // `BatchConfigBuilder::default()` also reads the `OTEL_BLRP_*`
        // environment variables; the setting made here wins over them.
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(queue_capacity)
            .build();
        let processor = BatchLogProcessor::builder(exporter)
            .with_batch_config(config)
            .build();
        let provider = SdkLoggerProvider::builder()
            .with_log_processor(processor)
            .build();
        OtelPeer { provider, exported }
    }

    /// The appender-tracing layer over this provider, as its own dispatcher.
    pub fn dispatch(&self) -> Dispatch {
        Dispatch::new(
            tracing_subscriber::registry().with(OpenTelemetryTracingBridge::new(&self.provider)),
        )
    }

    /// The `log::Log` of `opentelemetry-appender-log` over this provider.
    ///
    /// Why this and not `tracing_log::LogTracer` into [`OtelPeer::dispatch`]
    /// (the route of the tracing-appender peer): each peer takes `log`
    /// records through the front-end its own project ships for them.
    /// logcollect has its own `log::Log` (`LogcollectLogger`) and so has
    /// OpenTelemetry, which is what an OpenTelemetry user installs for
    /// `log`; tracing-appender has none, so `LogTracer` is its only route.
    /// It is also the cheaper route (no `log` → `tracing` event), so the
    /// comparison does not flatter logcollect.
    pub fn log_bridge(&self) -> OpenTelemetryLogBridge<SdkLoggerProvider, SdkLogger> {
        OpenTelemetryLogBridge::new(&self.provider)
    }

    /// Shuts the provider down (its processor exports what is still queued)
    /// and returns how many records reached the exporter in all.
    pub fn finish(self, timeout: Duration) -> u64 {
        let _ = self.provider.shutdown_with_timeout(timeout);
        self.exported.load(Ordering::Relaxed)
    }
}
