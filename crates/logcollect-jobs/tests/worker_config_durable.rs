//! `logcollect_jobs::config_from_env()` declares a durable exchange, as
//! Python's `celery_config` does, so a Rust worker and Python workers share
//! one exchange (RabbitMQ refuses to redeclare an exchange with other
//! flags). This file sets environment variables, so it is its own process.

use std::time::Duration;

use logcollect::Shipper;
use logcollect_jobs::{task_layer, task_span, Collect, TaskInfo};
use logcollect_tests::{unique, Capture, AMQP_URL, BROKER};
use tracing_subscriber::layer::SubscriberExt as _;

const WAIT: Duration = Duration::from_secs(30);

/// Deletes the exchange when the test ends, even on a panic: a durable
/// exchange outlives the broker's restarts.
struct DeleteExchange(String);

impl Drop for DeleteExchange {
    fn drop(&mut self) {
        let name = self.0.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            if let Ok(conn) =
                lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await
            {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .exchange_delete(name.as_str().into(), Default::default())
                        .await;
                }
                let _ = conn.close(200, "bye".into()).await;
            }
        });
    }
}

#[test]
fn a_workers_exchange_is_durable_unless_the_environment_says_otherwise() {
    let ex = unique("jobs-durable");
    let _cleanup = DeleteExchange(ex.clone());
    // Nothing else in this process reads the environment concurrently.
    std::env::set_var("LOGCOLLECT_BROKER_URI", BROKER);
    std::env::set_var("LOGCOLLECT_EXCHANGE", &ex);
    std::env::set_var("LOGCOLLECT_LEVEL", "info");
    std::env::remove_var("LOGCOLLECT_DURABLE");
    let config = logcollect_jobs::config_from_env().unwrap();
    assert!(config.durable());
    let shipper = Shipper::new(config).unwrap();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry().with(task_layer(&shipper, Collect::TasksOnly)),
    );
    let task = TaskInfo::new("nightly");
    // The first record makes the shipper connect and declare the exchange
    // (nothing is bound yet, so it goes nowhere).
    tracing::dispatcher::with_default(&dispatch, || {
        task_span(&task).in_scope(|| tracing::info!(n = 1u64, "first"));
    });
    shipper.flush(WAIT).unwrap();
    // Declaring it durable now succeeds only if the shipper declared it
    // durable too (else the broker answers PRECONDITION_FAILED and the
    // capture panics).
    let cap = Capture::start(&ex, lapin::ExchangeKind::Topic, true, "logstash.#");
    tracing::dispatcher::with_default(&dispatch, || {
        task_span(&task).in_scope(|| tracing::info!(n = 2u64, "second"));
    });
    shipper.flush(WAIT).unwrap();
    let m = &cap.take(1, WAIT)[0];
    assert_eq!(m.field("n").as_u64(), Some(2));
    assert_eq!(m.str("task_name"), "nightly");
    assert_eq!(
        m.properties.delivery_mode().unwrap_or(1),
        2,
        "durable: persistent messages"
    );
    shipper.shutdown(WAIT).unwrap();
}
