//! # logcollect-jobs
//!
//! Task-worker helpers for `logcollect` (the role the Python library's
//! `celery_config` plays): a task span so every record inside a task carries
//! the task's name, id, attempt, queue and correlation id; the
//! `collect_root_logs` switch, which ships only the records made inside
//! tasks when it is `false`; and, with the feature `apalis`, a tower layer
//! that puts the task span on every job of an [apalis](https://docs.rs/apalis)
//! worker.
//!
//! ```no_run
//! use logcollect_jobs::{Collect, TaskInfo};
//!
//! # async fn run() -> Result<(), logcollect::Error> {
//! // `config_from_env`: `LOGCOLLECT_*` as `Config::from_env`, with a durable
//! // exchange unless `LOGCOLLECT_DURABLE` says otherwise (as `celery_config`).
//! let _guard = logcollect_jobs::boot(logcollect_jobs::config_from_env()?, Collect::TasksOnly)?;
//! tracing::info!("worker started"); // outside any task: not shipped
//!
//! let info = TaskInfo::new("send_invoice")
//!     .id("42")
//!     .attempt(1)
//!     .queue("orders")
//!     .correlation_id("order-42"); // e.g. read from the message
//! logcollect_jobs::in_task(&info, async {
//!     tracing::info!("invoice sent"); // task_name, task_id, … correlation_id = "order-42"
//!     log::info!("so is this one");   // `log` records too (task fields and correlation_id)
//! })
//! .await;
//! # Ok(()) }
//! ```
//!
//! ## The task span
//!
//! [`task_span`] makes a span named `task` (target [`TASK_SPAN_TARGET`],
//! level INFO) with these fields, which every record inside the task
//! carries:
//!
//! | field | from [`TaskInfo`] |
//! |---|---|
//! | `task_name` | `name` |
//! | `task_id` | `id`, when set |
//! | `task_attempt` | `attempt` (1 for the first run), when set |
//! | `task_queue` | `queue`, when set |
//! | `correlation_id` | `correlation_id`; when unset, the id of the scope the task runs in ([`logcollect::correlation::current`]), else a new UUIDv7 |
//!
//! Read the correlation id from the message with
//! [`logcollect::correlation::extract`] over its headers and its
//! `correlation_id` property (or `correlation::extract_properties` on a
//! lapin message, with logcollect's `lapin-api` feature): the
//! `CORRELATION_ID` header, then the `correlation_id` property, then
//! `traceparent`, so a job enqueued by a web request logs under the
//! request's id.
//!
//! ## Which records a worker ships: [`Collect`]
//!
//! [`Collect::All`] ships every record (Python's `collect_root_logs=True`).
//! [`Collect::TasksOnly`] ships only records made inside a task span (or a
//! span opened inside one): the worker's own chatter, its libraries' and
//! the job framework's records outside tasks stay out of Logstash
//! (`collect_root_logs=False`). [`boot`] sets this up globally;
//! [`task_layer`] is the same layer for your own `tracing_subscriber`
//! registry, and [`TaskFilter`] the per-layer filter behind it.
//!
//! This selects records by *where they are made* (inside a task span or
//! not), where Python's `celery_config` selects by *logger name* (the
//! `celery.task` logger and the task modules' loggers with
//! `collect_root_logs=False`). A record from any library, made while a task
//! runs, is shipped here with the task's fields; in Python it is shipped
//! only if its logger is one of the selected. For the logger-name
//! behaviour, use [`Collect::All`] behind a target filter
//! ([`Config`]'s `level`, e.g. `"warn,myapp::tasks=debug"`, or a
//! `tracing_subscriber` `Targets` filter on the layer).
//!
//! `log` records: [`boot`] installs [`TaskLogger`], which applies the same
//! rule (with `TasksOnly`, a `log` record outside a task is dropped) and adds
//! the task's fields (`task_name`, `task_id`, `task_attempt`, `task_queue`)
//! and the current `correlation_id` to the record's own key-values, which
//! are kept. Fields of other spans are not added to `log` records; use
//! `tracing` for those.
//!
//! ## Feature flags
//!
//! | feature | default | what |
//! |---|---|---|
//! | `apalis` | no | `apalis::TaskSpanLayer` for apalis workers |
//!
//! ## Defaults
//!
//! | setting | default |
//! |---|---|
//! | records shipped ([`Collect`]) | [`Collect::TasksOnly`] ([`DEFAULT_COLLECT`]) |
//! | exchange durable ([`config_from_env`]) | `true` ([`DEFAULT_DURABLE`]), as Python's `celery_config`; `LOGCOLLECT_DURABLE` overrides |
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::future::Future;
use std::sync::Arc;

use logcollect::{Config, Error, LogcollectLayer, LogcollectLogger, Shipper, ShipperGuard};
use tracing::instrument::Instrumented;
use tracing::subscriber::Interest;
use tracing::{Event, Instrument as _, Metadata, Subscriber};
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::layer::{Context, Filter, Layer as _};
use tracing_subscriber::registry::LookupSpan;

#[cfg(feature = "apalis")]
#[cfg_attr(docsrs, doc(cfg(feature = "apalis")))]
pub mod apalis;

/// Target of the task spans [`task_span`] makes; [`TaskFilter`] looks for
/// spans of this target.
pub const TASK_SPAN_TARGET: &str = "logcollect_jobs::task";

/// Name of the task spans.
pub const TASK_SPAN_NAME: &str = "task";

/// Which records a worker ships by default: [`Collect::TasksOnly`], as
/// Python's `celery_config(collect_root_logs=False)`.
pub const DEFAULT_COLLECT: Collect = Collect::TasksOnly;

/// Whether [`config_from_env`] declares the exchange durable when
/// `LOGCOLLECT_DURABLE` is unset: `true`, as Python's `celery_config`
/// (a worker and its Python neighbours then share one exchange; RabbitMQ
/// refuses to redeclare an exchange with other flags).
pub const DEFAULT_DURABLE: bool = true;

/// Which records a worker ships (Python's `collect_root_logs`). See the
/// [crate docs](crate#which-records-a-worker-ships-collect) for how this
/// differs from Celery's selection by logger name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Collect {
    /// Only records made inside a task span (`collect_root_logs=False`).
    #[default]
    TasksOnly,
    /// Every record (`collect_root_logs=True`).
    All,
}

/// A worker's [`Config`] from the `LOGCOLLECT_*` environment variables, as
/// [`Config::from_env`] reads them, except that the exchange is durable
/// unless `LOGCOLLECT_DURABLE` says otherwise ([`DEFAULT_DURABLE`]), as
/// Python's `celery_config` declares it.
pub fn config_from_env() -> Result<Config, Error> {
    config_from(|name| std::env::var(name).ok())
}

fn config_from(get: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
    Config::builder()
        .env_from(|name| {
            let value = get(name).filter(|v| !v.trim().is_empty());
            if name == "LOGCOLLECT_DURABLE" {
                value.or_else(|| Some(DEFAULT_DURABLE.to_string()))
            } else {
                value
            }
        })?
        .build()
}

/// What a task span says about the task. Fill what your runner knows:
///
/// ```
/// let info = logcollect_jobs::TaskInfo::new("resize_image")
///     .id("7f3c")
///     .attempt(2);
/// assert_eq!(info.name, "resize_image");
/// ```
///
/// New fields may come in a minor release (`#[non_exhaustive]`): build it
/// with [`TaskInfo::new`] and the setters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task's name (`task_name`), e.g. `send_invoice` or `app.tasks.add`.
    pub name: String,
    /// The task's id (`task_id`), e.g. the message id.
    pub id: Option<String>,
    /// Which attempt this is, 1 for the first run (`task_attempt`).
    pub attempt: Option<u64>,
    /// The queue the task came from (`task_queue`).
    pub queue: Option<String>,
    /// The correlation id the task runs under (`correlation_id`); see
    /// [`task_span`] for what happens when it is `None`.
    pub correlation_id: Option<String>,
}

impl TaskInfo {
    /// A task called `name`, nothing else known yet.
    pub fn new(name: impl Into<String>) -> Self {
        TaskInfo {
            name: name.into(),
            ..TaskInfo::default()
        }
    }

    /// Sets the task's id.
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the attempt, 1 for the first run.
    #[must_use]
    pub fn attempt(mut self, attempt: u64) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Sets the queue the task came from.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sets the correlation id the task runs under.
    #[must_use]
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
}

/// The span for one run of a task (see the [crate docs](crate) for its
/// fields). Enter it around synchronous work or instrument the task's
/// future with it ([`in_task`]).
///
/// The correlation id is `info.correlation_id` when set (used as given:
/// check ids read from messages with
/// [`logcollect::correlation::is_valid`], which the `extract_*` helpers do).
/// Otherwise the task inherits the correlation id of the scope it runs in,
/// and when there is none it gets a new one, so the records of one run can
/// always be found together.
pub fn task_span(info: &TaskInfo) -> tracing::Span {
    let span = tracing::info_span!(
        target: TASK_SPAN_TARGET,
        TASK_SPAN_NAME,
        task_name = info.name.as_str(),
        task_id = tracing::field::Empty,
        task_attempt = tracing::field::Empty,
        task_queue = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
    );
    if let Some(id) = &info.id {
        span.record("task_id", id.as_str());
    }
    if let Some(attempt) = info.attempt {
        span.record("task_attempt", attempt);
    }
    if let Some(queue) = &info.queue {
        span.record("task_queue", queue.as_str());
    }
    store_task_fields(&span, info);
    match &info.correlation_id {
        Some(id) => logcollect::correlation::attach(&span, id),
        None => {
            if logcollect::correlation::current().is_none() {
                logcollect::correlation::attach(&span, &logcollect::correlation::generate());
            }
        }
    }
    span
}

/// Runs `task` inside the [`task_span`] for `info`: every record the future
/// makes, across all its `.await` points, carries the task's fields.
pub fn in_task<F: Future>(info: &TaskInfo, task: F) -> Instrumented<F> {
    task.instrument(task_span(info))
}

/// A task span's fields, kept in its registry data for [`TaskLogger`].
#[derive(Debug, Clone)]
struct TaskFields(Arc<TaskInfo>);

fn store_task_fields(span: &tracing::Span, info: &TaskInfo) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(data) = dispatch
            .downcast_ref::<tracing_subscriber::Registry>()
            .and_then(|registry| registry.span(id))
        {
            data.extensions_mut()
                .replace(TaskFields(Arc::new(info.clone())));
        }
    });
}

/// The innermost task around the current span: `None` outside tasks,
/// `Some(None)` inside a task span whose fields are unknown (not made by
/// [`task_span`] under a registry), `Some(Some(fields))` otherwise.
fn current_task() -> Option<Option<Arc<TaskInfo>>> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            let span = registry.span(id)?;
            let task = span.scope().find(|s| is_task_span(s.metadata()))?;
            let fields = task.extensions().get::<TaskFields>().map(|f| f.0.clone());
            Some(fields)
        })
        .flatten()
}

/// Whether the current span is a task span or inside one.
pub fn in_task_scope() -> bool {
    current_task().is_some()
}

fn is_task_span(meta: &Metadata<'_>) -> bool {
    meta.target() == TASK_SPAN_TARGET && meta.name() == TASK_SPAN_NAME
}

/// A per-layer filter implementing [`Collect`]: with `All` it lets
/// everything through; with `TasksOnly` it lets an event through only when
/// it is made inside a task span ([`task_span`]). Spans always pass, so their
/// fields are known to the events inside them.
///
/// The check uses the span context the event is made in (for a `log` record
/// forwarded by `LogTracer`, the thread's current span), and for an event
/// with an explicit `parent:`, that parent too.
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
/// let (layer, _guard) = logcollect::boot::layer(logcollect::Config::from_env()?)?;
/// tracing_subscriber::registry()
///     .with(layer.with_filter(logcollect_jobs::TaskFilter::new(logcollect_jobs::Collect::TasksOnly)))
///     .with(tracing_subscriber::fmt::layer()) // the console still sees everything
///     .init();
/// # Ok::<(), logcollect::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskFilter {
    collect_root_logs: bool,
    /// Events more verbose than this are refused before any span lookup
    /// ([`task_layer`] sets the shipper's most verbose level; the layer
    /// applies its full filter afterwards anyway).
    max: tracing::level_filters::LevelFilter,
}

impl TaskFilter {
    /// The filter.
    pub fn new(collect: Collect) -> Self {
        TaskFilter {
            collect_root_logs: collect == Collect::All,
            max: tracing::level_filters::LevelFilter::TRACE,
        }
    }

    fn with_max_level(mut self, max: Option<logcollect::Level>) -> Self {
        use logcollect::Level;
        use tracing::level_filters::LevelFilter;
        self.max = match max {
            None => LevelFilter::OFF,
            Some(Level::Trace) => LevelFilter::TRACE,
            Some(Level::Debug) => LevelFilter::DEBUG,
            Some(Level::Info) => LevelFilter::INFO,
            Some(Level::Warning) => LevelFilter::WARN,
            Some(Level::Error | Level::Critical) => LevelFilter::ERROR,
        };
        self
    }

    /// Which records pass.
    pub fn collect(&self) -> Collect {
        if self.collect_root_logs {
            Collect::All
        } else {
            Collect::TasksOnly
        }
    }
}

fn scope_has_task<S>(span: Option<tracing_subscriber::registry::SpanRef<'_, S>>) -> bool
where
    S: for<'a> LookupSpan<'a>,
{
    span.is_some_and(|s| s.scope().any(|s| is_task_span(s.metadata())))
}

impl<S> Filter<S> for TaskFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        // `LogTracer` asks only this (never `event_enabled`) before it sends
        // a `log` record, so the contextual check must happen here.
        if meta.is_span() {
            return true;
        }
        // Cheap level check first (a `log` record bridged by `LogTracer` comes
        // with its own level here too).
        if *meta.level() > self.max {
            return false;
        }
        self.collect_root_logs || scope_has_task(cx.lookup_current())
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_span() {
            Interest::always()
        } else if *meta.level() > self.max {
            Interest::never()
        } else if self.collect_root_logs {
            Interest::always()
        } else {
            // The answer depends on the span context of each event.
            Interest::sometimes()
        }
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        self.collect_root_logs || event.is_contextual() || scope_has_task(cx.event_span(event))
    }
}

/// The logcollect layer for `shipper` behind a [`TaskFilter`]: add it to
/// your own `tracing_subscriber` registry.
pub fn task_layer<S>(
    shipper: &Shipper,
    collect: Collect,
) -> Filtered<LogcollectLayer, TaskFilter, S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let filter = TaskFilter::new(collect).with_max_level(shipper.config().filter().max_level());
    LogcollectLayer::new(shipper.clone()).with_filter(filter)
}

/// One-call set-up for a task worker, mirroring
/// [`logcollect::boot::default_config`]: starts a shipper for `config`,
/// installs a global `tracing` subscriber with [`task_layer`] and the `log`
/// logger [`TaskLogger`], and returns the guard that flushes and stops the
/// shipper when dropped.
///
/// `collect`: which records are shipped ([`Collect`]). The Python
/// `celery_config` declares the exchange durable: [`config_from_env`] does
/// too, or set [`durable`](logcollect::ConfigBuilder::durable) to share its
/// exchange.
///
/// Errors: [`ErrorKind::AlreadyInstalled`](logcollect::ErrorKind::AlreadyInstalled)
/// when a global `tracing` subscriber is already set. When a `log` logger is
/// already installed, `log` records are left to it and a notice says so on
/// stderr.
///
/// ```no_run
/// use logcollect_jobs::Collect;
/// let _guard = logcollect_jobs::boot(logcollect_jobs::config_from_env()?, Collect::TasksOnly)?;
/// # Ok::<(), logcollect::Error>(())
/// ```
pub fn boot(config: Config, collect: Collect) -> Result<ShipperGuard, Error> {
    let shipper = Shipper::new(config)?;
    install(&shipper, collect)?;
    Ok(shipper.guard())
}

/// Installs [`boot`]'s global subscriber and `log` logger for an existing
/// shipper.
pub fn install(shipper: &Shipper, collect: Collect) -> Result<(), Error> {
    let logger = TaskLogger::new(shipper.clone(), collect);
    let max = logger.max_level();
    logcollect::boot::install_with(task_layer(shipper, collect), logger, max)?;
    if shipper.config().panic_hook() {
        logcollect::boot::install_panic_hook(shipper);
    }
    Ok(())
}

/// A `log::Log` for task workers: the core's [`LogcollectLogger`] plus
/// [`Collect`] and the task's fields.
///
/// A record made inside a task span gets `task_name`, `task_id`,
/// `task_attempt` and `task_queue` (those that are set), and every record
/// made inside a correlation scope gets `correlation_id`; the record's own
/// key-values come first and win. With [`Collect::TasksOnly`], records
/// made outside task spans are dropped. The task is found through the
/// current `tracing` span, so the thread's (or the future's) `tracing`
/// subscriber must be a `tracing_subscriber` registry, as [`boot`] installs.
#[derive(Debug, Clone)]
pub struct TaskLogger {
    inner: LogcollectLogger,
    collect_root_logs: bool,
}

impl TaskLogger {
    /// A logger feeding `shipper`.
    pub fn new(shipper: Shipper, collect: Collect) -> Self {
        TaskLogger {
            inner: LogcollectLogger::new(shipper),
            collect_root_logs: collect == Collect::All,
        }
    }

    /// The most verbose `log` level this logger can accept, for
    /// `log::set_max_level`.
    pub fn max_level(&self) -> log::LevelFilter {
        self.inner.max_level()
    }
}

/// A record's key-values followed by the task's fields and correlation id.
struct WithTaskFields<'a, 'r> {
    base: &'a dyn log::kv::Source,
    task: Option<&'r TaskInfo>,
    correlation_id: Option<&'r str>,
}

impl log::kv::Source for WithTaskFields<'_, '_> {
    fn visit<'kvs>(
        &'kvs self,
        visitor: &mut dyn log::kv::VisitSource<'kvs>,
    ) -> Result<(), log::kv::Error> {
        use log::kv::{Key, Value};
        self.base.visit(visitor)?;
        if let Some(t) = self.task {
            visitor.visit_pair(Key::from_str("task_name"), Value::from(t.name.as_str()))?;
            if let Some(id) = &t.id {
                visitor.visit_pair(Key::from_str("task_id"), Value::from(id.as_str()))?;
            }
            if let Some(attempt) = t.attempt {
                visitor.visit_pair(Key::from_str("task_attempt"), Value::from(attempt))?;
            }
            if let Some(queue) = &t.queue {
                visitor.visit_pair(Key::from_str("task_queue"), Value::from(queue.as_str()))?;
            }
        }
        if let Some(c) = self.correlation_id {
            visitor.visit_pair(
                Key::from_str(logcollect::correlation::FIELD),
                Value::from(c),
            )?;
        }
        Ok(())
    }
}

impl log::Log for TaskLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata) && (self.collect_root_logs || in_task_scope())
    }

    fn log(&self, record: &log::Record<'_>) {
        // The core logger's filter is cheap; looking spans up is not.
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        let task = current_task();
        if task.is_none() && !self.collect_root_logs {
            return;
        }
        let task = task.flatten();
        let correlation_id = logcollect::correlation::current();
        if task.is_none() && correlation_id.is_none() {
            self.inner.log(record);
            return;
        }
        let kvs = WithTaskFields {
            base: record.key_values(),
            task: task.as_deref(),
            correlation_id: correlation_id.as_deref(),
        };
        self.inner
            .log(&record.to_builder().key_values(&kvs).build());
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults() {
        assert_eq!(DEFAULT_COLLECT, Collect::TasksOnly);
        assert_eq!(Collect::default(), DEFAULT_COLLECT);
        assert_eq!(TaskFilter::new(Collect::All).collect(), Collect::All);
        assert_eq!(
            TaskFilter::new(Collect::TasksOnly).collect(),
            Collect::TasksOnly
        );
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let c = config_from(env(&[])).unwrap();
        assert!(c.durable(), "a worker's exchange is durable by default");
        let c = config_from(env(&[("LOGCOLLECT_DURABLE", "")])).unwrap();
        assert!(c.durable(), "an empty variable counts as unset");
        let c = config_from(env(&[("LOGCOLLECT_DURABLE", "false")])).unwrap();
        assert!(!c.durable(), "the environment overrides");
        let c = config_from(env(&[("LOGCOLLECT_EXCHANGE", "tasks-x")])).unwrap();
        assert_eq!(c.exchange(), "tasks-x");
        assert!(c.durable());
        assert!(
            !logcollect::Config::builder().build().unwrap().durable(),
            "the core's default stays as Python's default_config"
        );
    }

    #[test]
    fn in_task_scope_follows_task_spans() {
        let _d = tracing::subscriber::set_default(tracing_subscriber::registry());
        assert!(!in_task_scope());
        let span = task_span(&TaskInfo::new("t"));
        let _e = span.enter();
        assert!(in_task_scope());
        let child = tracing::info_span!("child");
        let _c = child.enter();
        assert!(in_task_scope());
    }

    #[test]
    fn task_correlation_id_given_inherited_or_generated() {
        let _d = tracing::subscriber::set_default(tracing_subscriber::registry());
        let given = TaskInfo::new("t").correlation_id("c-1");
        let s = task_span(&given);
        assert_eq!(
            s.in_scope(logcollect::correlation::current).as_deref(),
            Some("c-1")
        );

        let outer = logcollect::correlation::scope("outer-1");
        let s = outer.in_scope(|| task_span(&TaskInfo::new("t")));
        assert_eq!(
            s.in_scope(logcollect::correlation::current).as_deref(),
            Some("outer-1")
        );

        let a = task_span(&TaskInfo::new("t")).in_scope(logcollect::correlation::current);
        let b = task_span(&TaskInfo::new("t")).in_scope(logcollect::correlation::current);
        assert!(a.is_some() && b.is_some() && a != b, "{a:?} {b:?}");
    }
}
