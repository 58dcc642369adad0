//! The task span on every job of an [apalis](https://docs.rs/apalis) worker.
//!
//! apalis workers are tower services, so the integration is a tower layer:
//! [`TaskSpanLayer`] wraps each job's service call in a [`task_span`]
//! whose fields come from the job:
//!
//! | field | from |
//! |---|---|
//! | `task_name` | [`TaskSpanLayer::name`], else the worker's name |
//! | `task_id` | the metadata `message_id` (the AMQP message id with `apalis-amqp`), else the task id |
//! | `task_attempt` | the job's attempt count, 1 for the first run |
//! | `task_queue` | [`TaskSpanLayer::queue`], else the task's queue |
//! | `correlation_id` | the metadata `CORRELATION_ID`, else `correlation_id`, else the trace id of `traceparent` ([`logcollect::correlation::from_parts`]); else a new id |
//!
//! With `apalis-amqp`, the message's `correlation_id` property reaches the
//! metadata as `correlation_id`, and a header reaches it only when its name
//! starts with `x-apalis-` (without that prefix): the bare `CORRELATION_ID`
//! and `traceparent` headers are not visible to apalis jobs. Send the id in
//! the `correlation_id` property (`logcollect::correlation::inject_properties`
//! does, with logcollect's `lapin-api` feature), or from an apalis producer
//! with [`inject_metadata`].
//!
//! ```no_run
//! use apalis_amqp::AmqpBackend;
//! use apalis_core::worker::builder::WorkerBuilder;
//!
//! async fn send_invoice(order: u64) {
//!     tracing::info!(order, "invoice sent"); // carries task_name, task_id, correlation_id, …
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = AmqpBackend::<u64>::new_from_addr("amqp://guest:guest@127.0.0.1:5672/%2f")?
//!     .with_config(apalis_amqp::Config::default().queue("invoices"));
//! WorkerBuilder::new("invoices")
//!     .backend(backend)
//!     // add it after `.retry(..)`, if any, so that each attempt gets its own span
//!     .layer(logcollect_jobs::apalis::TaskSpanLayer::new().queue("invoices"))
//!     .build(send_invoice)
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use apalis_core::task::metadata::MetadataStore;
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use tower_layer::Layer;
use tower_service::Service;
use tracing::instrument::Instrumented;
use tracing::Instrument as _;

use crate::{task_span, TaskInfo};

/// Metadata key of the `CORRELATION_ID` header (sent as
/// `x-apalis-CORRELATION_ID` by `apalis-amqp`).
pub const METADATA_CORRELATION_ID_HEADER: &str = logcollect::correlation::HEADER;

/// Metadata key of the `correlation_id` property (`apalis-amqp` maps the
/// AMQP property to and from this key).
pub const METADATA_CORRELATION_ID: &str = logcollect::correlation::FIELD;

/// Metadata key of the W3C `traceparent`.
pub const METADATA_TRACEPARENT: &str = logcollect::correlation::TRACEPARENT_HEADER;

/// Metadata key of the message id (`apalis-amqp`: the AMQP `message_id`).
pub const METADATA_MESSAGE_ID: &str = "message_id";

/// A tower layer for apalis workers: every job runs inside a task span. See
/// the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct TaskSpanLayer {
    name: Option<Arc<str>>,
    queue: Option<Arc<str>>,
}

impl TaskSpanLayer {
    /// The layer; task name from the worker's name, queue from the task.
    pub fn new() -> Self {
        TaskSpanLayer::default()
    }

    /// The `task_name` of every job (default: the worker's name).
    #[must_use]
    pub fn name(mut self, name: impl AsRef<str>) -> Self {
        self.name = Some(Arc::from(name.as_ref()));
        self
    }

    /// The `task_queue` of every job (default: the task's queue, when the
    /// backend sets one).
    #[must_use]
    pub fn queue(mut self, queue: impl AsRef<str>) -> Self {
        self.queue = Some(Arc::from(queue.as_ref()));
        self
    }
}

impl<S> Layer<S> for TaskSpanLayer {
    type Service = TaskSpan<S>;

    fn layer(&self, inner: S) -> TaskSpan<S> {
        TaskSpan {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`TaskSpanLayer`] makes.
#[derive(Debug, Clone)]
pub struct TaskSpan<S> {
    inner: S,
    layer: TaskSpanLayer,
}

impl<S> TaskSpan<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The [`TaskInfo`] for an apalis task (see the [module docs](self));
/// `name` and `queue` override the task's own.
pub fn task_info<Args>(task: &Task<Args>, name: Option<&str>, queue: Option<&str>) -> TaskInfo {
    let md = task.metadata();
    let name = name
        .map(str::to_owned)
        .or_else(|| {
            task.data()
                .get::<WorkerContext>()
                .map(|w| w.name().to_owned())
        })
        .unwrap_or_else(|| std::any::type_name::<Args>().to_owned());
    TaskInfo {
        name,
        id: md
            .get(METADATA_MESSAGE_ID)
            .map(str::to_owned)
            .or_else(|| task.task_id().map(ToString::to_string)),
        // apalis counts an attempt when the job's future is first polled,
        // inside this layer, so the run about to start is one more.
        attempt: Some(task.attempt() as u64 + 1),
        queue: queue
            .map(str::to_owned)
            .or_else(|| task.queue().map(ToString::to_string)),
        correlation_id: correlation_id(md),
    }
}

/// The correlation id in an apalis task's metadata (invalid values skipped).
pub fn correlation_id(md: &MetadataStore) -> Option<String> {
    logcollect::correlation::from_parts(
        md.get(METADATA_CORRELATION_ID_HEADER),
        md.get(METADATA_CORRELATION_ID),
        md.get(METADATA_TRACEPARENT),
    )
}

/// Puts `id` into a task's metadata for an apalis producer: as
/// `correlation_id` (the AMQP property with `apalis-amqp`) and
/// `traceparent` (header `x-apalis-traceparent`), each only when the
/// metadata has none: as `logcollect::correlation::inject_properties`,
/// this never replaces someone else's RPC id or trace context.
pub fn inject_metadata(md: &mut MetadataStore, id: &str) {
    // Keys and values are plain strings; insertion cannot fail for them.
    if md.get(METADATA_CORRELATION_ID).is_none() {
        let _ = md.insert(METADATA_CORRELATION_ID, id.to_owned());
    }
    if md.get(METADATA_TRACEPARENT).is_none() {
        let _ = md.insert(
            METADATA_TRACEPARENT,
            logcollect::correlation::traceparent(id),
        );
    }
}

impl<S, Args> Service<Task<Args>> for TaskSpan<S>
where
    S: Service<Task<Args>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let info = task_info(
            &task,
            self.layer.name.as_deref(),
            self.layer.queue.as_deref(),
        );
        let span = task_span(&info);
        let future = {
            let _entered = span.enter();
            self.inner.call(task)
        };
        future.instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use apalis_core::task::builder::TaskBuilder;
    use apalis_core::task::task_id::TaskId;

    use super::*;

    #[test]
    fn task_info_from_an_apalis_task() {
        let mut md = MetadataStore::new();
        md.insert("correlation_id", "order-42").unwrap();
        md.insert("message_id", "m-1").unwrap();
        let task = TaskBuilder::new(7u32)
            .with_metadata(md)
            .task_id(TaskId::from_int(3))
            .build();
        let info = task_info(&task, Some("send"), Some("q"));
        assert_eq!(
            info,
            TaskInfo {
                name: "send".into(),
                id: Some("m-1".into()),
                attempt: Some(1),
                queue: Some("q".into()),
                correlation_id: Some("order-42".into()),
            }
        );
        let task = TaskBuilder::new(7u32).task_id(TaskId::from_int(3)).build();
        let info = task_info(&task, None, None);
        assert_eq!(info.name, "u32");
        assert_eq!(info.id.as_deref(), Some("3"));
        assert_eq!(info.correlation_id, None);
    }

    #[test]
    fn metadata_round_trip_and_precedence() {
        let mut md = MetadataStore::new();
        inject_metadata(&mut md, "abc-123");
        assert_eq!(correlation_id(&md).as_deref(), Some("abc-123"));
        md.insert("CORRELATION_ID", "from-header").unwrap();
        assert_eq!(correlation_id(&md).as_deref(), Some("from-header"));
        // Someone else's values are kept.
        let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut md = MetadataStore::new();
        md.insert("correlation_id", "rpc-7").unwrap();
        md.insert("traceparent", theirs).unwrap();
        inject_metadata(&mut md, "abc-123");
        assert_eq!(md.get("correlation_id"), Some("rpc-7"));
        assert_eq!(md.get("traceparent"), Some(theirs));
        let mut md = MetadataStore::new();
        md.insert("correlation_id", "bad id\n").unwrap();
        md.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        assert_eq!(
            correlation_id(&md).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
