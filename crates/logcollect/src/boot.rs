//! One-call set-up, mirroring the Python library's `boot` module.

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::Config;
use crate::error::Error;
#[cfg(any(feature = "log", feature = "tracing"))]
use crate::error::ErrorKind;
#[cfg(feature = "log")]
use crate::front::log::LogcollectLogger;
#[cfg(feature = "tracing")]
use crate::front::tracing::LogcollectLayer;
use crate::record::{ExceptionInfo, Level, Record};
use crate::ship::{Shipper, ShipperGuard};

/// Starts a shipper for `config` and installs the front-ends on the root:
/// the `log` logger (feature `log`) and a global `tracing` subscriber with
/// the logcollect layer (feature `tracing`). Returns the guard that flushes
/// and stops the shipper when dropped; keep it alive until the end of `main`.
///
/// Never waits for the broker: a broker that is down is reported on stderr
/// and in [`Stats`](crate::Stats), and records wait in the queue. Unless the
/// configuration's `panic_hook` is off, panics are shipped as `CRITICAL`
/// records ([`install_panic_hook`]).
///
/// Errors: [`ErrorKind::AlreadyInstalled`] when a global `tracing`
/// subscriber is already set (build your own registry with [`layer`]
/// instead). When a `log` logger is already installed, `log` records are left
/// to it (a `tracing_log::LogTracer` forwards them to our layer); a notice
/// says so on stderr, and no record is sent twice.
///
/// ```no_run
/// let _guard = logcollect::boot::default_config(
///     logcollect::Config::builder()
///         .broker_uri("amqp://guest:guest@localhost//")
///         .activity_identity([("project", "github"), ("application", "backend")])
///         .build()?,
/// )?;
/// log::info!("shipped to RabbitMQ");
/// # Ok::<(), logcollect::Error>(())
/// ```
pub fn default_config(config: Config) -> Result<ShipperGuard, Error> {
    let shipper = Shipper::new(config)?;
    install(&shipper)?;
    Ok(shipper.guard())
}

/// How long the panic hook waits for the broker to confirm the panic's
/// record (and those before it): a healthy broker confirms in milliseconds;
/// a process about to die must not hang on a broker that is away (the record
/// then waits in the spool, if there is one).
pub const PANIC_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Installs a panic hook that ships every panic as a `CRITICAL` record of
/// logger `panic` (message, location, thread, and the backtrace when
/// `RUST_BACKTRACE` enables one), waits up to [`PANIC_FLUSH_TIMEOUT`] for the
/// broker, then calls the hook that was installed before (by default the
/// one that prints the panic on stderr). The boot helpers call it when the
/// configuration's `panic_hook` is on (the default).
///
/// A panic on the shipper thread itself is not shipped (it could never be).
pub fn install_panic_hook(shipper: &Shipper) {
    let shipper = shipper.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        ship_panic(&shipper, info);
        previous(info);
    }));
}

fn ship_panic(shipper: &Shipper, info: &std::panic::PanicHookInfo<'_>) {
    if crate::ship::suppressed() {
        return;
    }
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "Box<dyn Any>".to_owned());
    let thread = std::thread::current();
    let thread_name = thread
        .name()
        .map_or_else(|| format!("{:?}", thread.id()), str::to_owned);
    // The text the default hook prints, and the backtrace when
    // `RUST_BACKTRACE` asks for one.
    let mut text = format!("thread '{thread_name}' panicked");
    if let Some(l) = info.location() {
        let _ = write!(text, " at {}:{}:{}", l.file(), l.line(), l.column());
    }
    let _ = write!(text, ":\n{message}");
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        let _ = write!(text, "\nstack backtrace:\n{backtrace}");
    }
    let mut record = Record::new(Level::Critical, "panic", message.clone())
        .thread_name(thread_name)
        .exception(ExceptionInfo::new("panic", message, text));
    if let Some(l) = info.location() {
        record = record.file(l.file()).line(l.line());
    }
    if shipper.submit(&record) {
        let _ = shipper.flush(PANIC_FLUSH_TIMEOUT);
    }
}

/// The same as [`default_config`] under the name Rust's logging crates use
/// (`tracing_subscriber`'s `try_init`): returns the error instead of
/// panicking.
///
/// ```no_run
/// let _guard = logcollect::boot::try_init(logcollect::Config::from_env()?)?;
/// # Ok::<(), logcollect::Error>(())
/// ```
pub fn try_init(config: Config) -> Result<ShipperGuard, Error> {
    default_config(config)
}

/// [`try_init`] that panics on error: the shortcut for `main`.
pub fn init(config: Config) -> ShipperGuard {
    match try_init(config) {
        Ok(guard) => guard,
        Err(e) => panic!("logcollect::boot::init failed: {e}"),
    }
}

/// Installs the front-ends for an existing shipper (see [`default_config`]).
#[cfg_attr(
    not(any(feature = "log", feature = "tracing")),
    allow(unused_variables)
)]
pub fn install(shipper: &Shipper) -> Result<(), Error> {
    #[cfg(feature = "tracing")]
    {
        set_subscriber(filtered_layer(shipper))?;
    }
    #[cfg(feature = "log")]
    {
        let logger = LogcollectLogger::new(shipper.clone());
        let max = logger.max_level();
        set_logger(logger, max);
    }
    if shipper.config().panic_hook() {
        install_panic_hook(shipper);
    }
    Ok(())
}

/// Installs `layer` on a `tracing_subscriber` registry as the global
/// `tracing` subscriber and `logger` as the `log` logger (with `max_level`
/// for `log::set_max_level`): the path every boot helper takes, for
/// integrations that bring their own layer and logger (`logcollect-jobs`
/// installs its task filter and task logger through it).
///
/// Errors: [`ErrorKind::AlreadyInstalled`] when a global `tracing`
/// subscriber is already set; nothing is installed then. When a `log`
/// logger is already installed, `log` records are left to it and a notice
/// says so on stderr.
#[cfg(all(feature = "log", feature = "tracing"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "log", feature = "tracing"))))]
pub fn install_with<L>(
    layer: L,
    logger: impl log::Log + 'static,
    max_level: log::LevelFilter,
) -> Result<(), Error>
where
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    set_subscriber(layer)?;
    set_logger(logger, max_level);
    Ok(())
}

/// Sets `layer` on a registry as the global `tracing` subscriber.
#[cfg(feature = "tracing")]
fn set_subscriber<L>(layer: L) -> Result<(), Error>
where
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber).map_err(|e| {
        Error::with_source(
            ErrorKind::AlreadyInstalled,
            "a global tracing subscriber is already set; add `logcollect::boot::layer()` to your own registry instead",
            e,
        )
    })
}

/// Sets `logger` as the `log` logger, or says on stderr why `log` records
/// are left to the one already installed.
#[cfg(feature = "log")]
fn set_logger(logger: impl log::Log + 'static, max_level: log::LevelFilter) {
    match log::set_boxed_logger(Box::new(logger)) {
        Ok(()) => {
            log::set_max_level(max_level);
            crate::front::log_logger_installed();
        }
        Err(_) => crate::report::eprint_line(
            "a `log` logger is already installed: `log` records reach logcollect only if that logger forwards them to tracing (tracing_log::LogTracer)",
        ),
    }
}

/// The layer as the boot helpers install it: behind a per-layer filter
/// applying the configured levels to spans and events (and the ignored targets to events),
/// decided once per call site (and again when a
/// [`LevelHandle`](crate::LevelHandle) changes the levels). A span or event
/// below the level is skipped by the `tracing` macros themselves, as with
/// `tracing_subscriber`'s `EnvFilter`: a disabled `trace_span!` costs a few
/// nanoseconds and allocates nothing, and its fields reach no record.
///
/// Put it on your own registry when every call site it rejects may be
/// rejected for all layers (the filter is per layer, so other layers still
/// see what they enable; `tracing`'s global maximum level is the most
/// verbose any layer asks for). `log` records bridged by
/// `tracing_log::LogTracer` pass and are filtered on their real target.
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub fn filtered_layer<S>(
    shipper: &Shipper,
) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    LogcollectLayer::prefiltered(shipper.clone())
        .with_filter(crate::front::tracing::ShipperFilter::new(shipper.clone()))
}

/// A shipper and its layer, for an application that builds its own
/// `tracing_subscriber` registry (with a console layer, say):
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
/// let (layer, _guard) = logcollect::boot::layer(logcollect::Config::from_env()?)?;
/// tracing_subscriber::registry()
///     .with(layer)
///     .with(tracing_subscriber::fmt::layer())
///     .init();
/// # Ok::<(), logcollect::Error>(())
/// ```
///
/// The layer applies the configured level and ignored targets itself and
/// does not disable events for the other layers: every call site stays
/// enabled, and a span below the level is only skipped by the layer (its
/// fields are not recorded). [`filtered_layer`] rejects such call sites
/// up front, which is much cheaper for a disabled span. To ship `log` records
/// too, install `tracing_log::LogTracer` (or call [`install_log`]).
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub fn layer(config: Config) -> Result<(LogcollectLayer, ShipperGuard), Error> {
    let shipper = Shipper::new(config)?;
    if shipper.config().panic_hook() {
        install_panic_hook(&shipper);
    }
    Ok((LogcollectLayer::new(shipper.clone()), shipper.guard()))
}

/// Installs only the `log` logger for `shipper`.
#[cfg(feature = "log")]
#[cfg_attr(docsrs, doc(cfg(feature = "log")))]
pub fn install_log(shipper: &Shipper) -> Result<(), Error> {
    let logger = LogcollectLogger::new(shipper.clone());
    let max = logger.max_level();
    log::set_boxed_logger(Box::new(logger)).map_err(|e| {
        Error::with_source(
            ErrorKind::AlreadyInstalled,
            "a `log` logger is already installed",
            e,
        )
    })?;
    log::set_max_level(max);
    crate::front::log_logger_installed();
    Ok(())
}
