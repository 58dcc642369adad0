//! Asserting on what your code logs, without a broker: [`capture`] runs a
//! closure with a `tracing` subscriber of its own and returns every record
//! the closure logged, encoded by the real encoder with your configuration
//! (profile, identity, guards, redaction), as parsed JSON.
//!
//! ```
//! use logcollect::testing;
//!
//! fn charge(order: u64) {
//!     tracing::info!(order, card = "4242", password = "hunter2", "charged");
//! }
//!
//! let (_, records) = testing::capture(|| charge(42));
//! assert_eq!(records.len(), 1);
//! assert_eq!(records[0]["message"], "charged");
//! assert_eq!(records[0]["levelname"], "INFO");
//! assert_eq!(records[0]["order"], 42);
//! assert_eq!(records[0]["password"], "[redacted]");
//! ```
//!
//! No thread is started and nothing is sent. The subscriber is the calling
//! thread's default while the closure runs (`tracing::subscriber::with_default`),
//! so tests running in parallel never see each other's records; records
//! made on other threads the closure starts are not captured (instrument
//! them with the current dispatcher to include them). `log` records are
//! captured when they reach `tracing` (install `tracing_log::LogTracer` once
//! in the test binary).
//!
//! The records are `serde_json::Value`s: this module follows `serde_json`'s
//! versions, which is its point.

use tracing_subscriber::layer::SubscriberExt as _;

use crate::config::Config;
use crate::front::tracing::LogcollectLayer;
use crate::ship::Shipper;

/// Runs `f` and returns its result with the records it logged, encoded with
/// a configuration made for tests: every level (`trace`), host `test`, the
/// defaults otherwise (redaction on).
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<serde_json::Value>) {
    let config = Config::builder()
        .level("trace")
        .host("test")
        .build()
        .expect("the test configuration is valid");
    capture_with(config, f)
}

/// [`capture`] with your configuration (its level filter, ignored targets,
/// profile, identity, redaction…; broker settings are not used).
pub fn capture_with<R>(config: Config, f: impl FnOnce() -> R) -> (R, Vec<serde_json::Value>) {
    let shipper = Shipper::capturing(config);
    let subscriber = tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone()));
    let out = tracing::subscriber::with_default(subscriber, f);
    let records = shipper
        .take_captured()
        .into_iter()
        .map(|e| serde_json::from_slice(&e.body).expect("the encoder writes one JSON object"))
        .collect();
    (out, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_captures_see_only_their_own_records() {
        let threads: Vec<_> = (0..4u64)
            .map(|i| {
                std::thread::spawn(move || {
                    let (_, records) = capture(|| {
                        for n in 0..50u64 {
                            tracing::info!(target: "app", i, n, "record");
                        }
                    });
                    assert_eq!(records.len(), 50);
                    assert!(records.iter().all(|r| r["i"] == i));
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
    }

    #[test]
    fn the_configuration_shapes_the_records() {
        let config = Config::builder()
            .level("warning")
            .profile(crate::encode::Profile::Ecs)
            .build()
            .unwrap();
        let (_, records) = capture_with(config, || {
            tracing::info!(target: "app", "filtered");
            tracing::warn!(target: "app::db", "kept");
        });
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["log"]["level"], "warn");
        assert_eq!(records[0]["log"]["logger"], "app::db");
    }

    #[test]
    fn a_level_handle_changes_the_next_call() {
        let config = Config::builder().level("info").build().unwrap();
        let shipper = Shipper::capturing(config);
        let subscriber = tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone()));
        let levels = shipper.level_handle();
        tracing::subscriber::with_default(subscriber, || {
            let debug = |n: u64| tracing::debug!(target: "app", n, "debug");
            debug(1);
            levels.set("debug").unwrap();
            debug(2);
            levels.set("info").unwrap();
            debug(3);
        });
        let kept: Vec<u64> = shipper
            .take_captured()
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
                v["n"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(kept, [2]);
    }
}
