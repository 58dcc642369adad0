//! Mirror of the Python library's `test_native/native_logging.py`: configure
//! from the environment, log one INFO record with a random number from logger
//! `test`, flush, exit 0.
//!
//! ```text
//! cargo run -p native_logging
//! LOGCOLLECT_BROKER_URI=amqp://guest:guest@127.0.0.1:5672// cargo run -p native_logging
//! ```
//!
//! With no broker reachable it still exits 0 within the shutdown deadline and
//! says on stderr what was not delivered.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Code gives defaults; every LOGCOLLECT_* variable that is set overrides them.
    let config = match logcollect::Config::builder()
        .broker_uri("amqp://guest:guest@127.0.0.1:5672//")
        .activity_identity([("project", "logcollect"), ("subsystem", "native_test")])
        .env_overrides()
        .and_then(|b| b.build())
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("native_logging: {e}");
            return ExitCode::from(2);
        }
    };
    let guard = match logcollect::boot::default_config(config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("native_logging: {e}");
            return ExitCode::from(2);
        }
    };
    let number: u32 = rand::random_range(0..1_000_000);
    log::info!(target: "test", random = number; "native logging test, random number {number}");
    let shipper = guard.shipper().clone();
    drop(guard); // flushes within LOGCOLLECT_SHUTDOWN_TIMEOUT (default 5 s)
    let stats = shipper.stats();
    if stats.accepted == 0 {
        // Not an error: the configured level (LOGCOLLECT_LEVEL) is above INFO.
        eprintln!("native_logging: the INFO record was filtered out by the configured level; nothing was sent");
    } else if stats.accepted == 1 && stats.confirmed == 1 {
        eprintln!("native_logging: record with random number {number} confirmed by the broker");
    }
    // Exit 0 either way, as the Python example: what was not delivered has
    // already been reported on stderr by the shutdown.
    ExitCode::SUCCESS
}
