//! The `log::Log` front-end.

use std::time::Duration;

use log::kv::{self, VisitSource};

use crate::encode::{Location, RecordWriter};
use crate::record::Level;
use crate::ship::{suppressed, Shipper};

/// A `log::Log` that ships every record it accepts. Install it with
/// [`boot::default_config`](crate::boot::default_config), or yourself with
/// `log::set_boxed_logger(Box::new(LogcollectLogger::new(shipper)))`.
#[cfg_attr(docsrs, doc(cfg(feature = "log")))]
#[derive(Debug, Clone)]
pub struct LogcollectLogger {
    shipper: Shipper,
}

impl LogcollectLogger {
    /// A logger feeding `shipper`.
    pub fn new(shipper: Shipper) -> Self {
        LogcollectLogger { shipper }
    }

    /// The most verbose `log` level this logger can accept, for `log::set_max_level`.
    pub fn max_level(&self) -> log::LevelFilter {
        level_filter(self.shipper.filter().max_level())
    }
}

/// `log`'s maximum level for a filter's most verbose level.
pub(crate) fn level_filter(max: Option<Level>) -> log::LevelFilter {
    match max {
        None => log::LevelFilter::Off,
        Some(Level::Trace) => log::LevelFilter::Trace,
        Some(Level::Debug) => log::LevelFilter::Debug,
        Some(Level::Info) => log::LevelFilter::Info,
        Some(Level::Warning) => log::LevelFilter::Warn,
        Some(Level::Error | Level::Critical) => log::LevelFilter::Error,
    }
}

pub(crate) fn level(l: log::Level) -> Level {
    match l {
        log::Level::Error => Level::Error,
        log::Level::Warn => Level::Warning,
        log::Level::Info => Level::Info,
        log::Level::Debug => Level::Debug,
        log::Level::Trace => Level::Trace,
    }
}

impl log::Log for LogcollectLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        !suppressed()
            && self
                .shipper
                .wants(metadata.target(), level(metadata.level()))
    }

    fn log(&self, record: &log::Record<'_>) {
        // The suppression flag comes first: the shipper thread never ships
        // its own records, whatever the filter says.
        if suppressed() {
            return;
        }
        let lvl = level(record.level());
        let target = record.target();
        if !self.shipper.wants(target, lvl) {
            return;
        }
        let loc = Location {
            file: record.file(),
            line: record.line(),
            module: record.module_path(),
        };
        self.shipper.emit(lvl, target, loc, |w| {
            w.message_fmt(*record.args());
            let _ = record.key_values().visit(&mut KvVisitor(&mut *w));
            // A `log` record made inside a `tracing` span carries the span's
            // fields, as an event there does.
            #[cfg(feature = "tracing")]
            super::spans::add_current(w);
        });
    }

    fn flush(&self) {
        let timeout = self.shipper.config().shutdown_timeout();
        let _ = self.shipper.flush(timeout.max(Duration::from_millis(1)));
    }
}

struct KvVisitor<'w, 'e>(&'w mut RecordWriter<'e>);

impl<'kvs> VisitSource<'kvs> for KvVisitor<'_, '_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let key = key.as_str();
        let w = &mut *self.0;
        if let Some(s) = value.to_borrowed_str() {
            w.str(key, s);
        } else if let Some(b) = value.to_bool() {
            w.bool(key, b);
        } else if let Some(i) = value.to_i64() {
            w.i64(key, i);
        } else if let Some(u) = value.to_u64() {
            w.u64(key, u);
        } else if let Some(i) = value.to_i128() {
            w.i128(key, i);
        } else if let Some(f) = value.to_f64() {
            w.f64(key, f);
        } else if let Some(e) = value.to_borrowed_error() {
            w.error(key, e);
        } else {
            w.display(key, format_args!("{value}"));
        }
        Ok(())
    }
}
