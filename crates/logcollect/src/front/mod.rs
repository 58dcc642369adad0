//! The front-ends: `log` and `tracing` records in, encoded records out; and
//! the level handle that changes what both let through at run time.

#[cfg(feature = "log")]
pub(crate) mod log;
#[cfg(feature = "tracing")]
pub(crate) mod spans;
#[cfg(feature = "tracing")]
pub(crate) mod tracing;

#[cfg(feature = "log")]
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;
use crate::filter::Filter;
use crate::ship::{Shipper, ShipperGuard};

/// Set once boot installed a logcollect `log` logger: only then does a level
/// change touch `log`'s global maximum level (another logger's is not ours
/// to change).
#[cfg(feature = "log")]
static LOG_LOGGER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Boot calls this after installing a `log` logger that feeds a shipper.
#[cfg(feature = "log")]
pub(crate) fn log_logger_installed() {
    LOG_LOGGER_INSTALLED.store(true, Ordering::Relaxed);
}

/// Changes the level filter of a shipper while the program runs, for both
/// front-ends at once: the next `log` or `tracing` call sees the new levels.
/// Cheap to clone; safe to use from any thread.
///
/// Get it from [`Shipper::level_handle`] or [`ShipperGuard::level_handle`].
///
/// ```no_run
/// let guard = logcollect::boot::default_config(logcollect::Config::from_env()?)?;
/// let levels = guard.level_handle();
/// levels.set("info,my_app::db=debug")?; // e.g. from an admin endpoint
/// tracing::debug!(target: "my_app::db", "now shipped");
/// # Ok::<(), logcollect::Error>(())
/// ```
///
/// A change replaces the whole filter (the configuration's `level`); the
/// ignored targets stay. `tracing`'s per-call-site cache is rebuilt and, when
/// boot installed the `log` logger, `log`'s maximum level follows the new
/// filter. A layer you put behind your own filter (`tracing_subscriber`'s
/// `reload`, a `Targets`) is still limited by that filter.
#[derive(Debug, Clone)]
pub struct LevelHandle {
    shipper: Shipper,
}

impl LevelHandle {
    /// Parses `RUST_LOG`-style directives (`debug`, `info,my_app=trace`, see
    /// [`Filter`]) and puts them in force. A spec that does not parse is an
    /// error and changes nothing.
    pub fn set(&self, directives: &str) -> Result<(), Error> {
        self.set_filter(Filter::parse(directives)?);
        Ok(())
    }

    /// Puts `filter` in force.
    pub fn set_filter(&self, filter: Filter) {
        #[cfg(feature = "log")]
        let max = log::level_filter(filter.max_level());
        self.shipper.set_filter(filter);
        #[cfg(feature = "log")]
        if LOG_LOGGER_INSTALLED.load(Ordering::Relaxed) {
            ::log::set_max_level(max);
        }
        // Call sites cached `never` (or `always`) under the old levels.
        #[cfg(feature = "tracing")]
        tracing_core::callsite::rebuild_interest_cache();
    }

    /// The filter in force.
    pub fn get(&self) -> Filter {
        self.shipper.filter()
    }
}

impl Shipper {
    /// A handle that changes this shipper's levels at run time.
    pub fn level_handle(&self) -> LevelHandle {
        LevelHandle {
            shipper: self.clone(),
        }
    }
}

impl ShipperGuard {
    /// A handle that changes the shipper's levels at run time (see
    /// [`LevelHandle`]).
    pub fn level_handle(&self) -> LevelHandle {
        self.shipper().level_handle()
    }
}
