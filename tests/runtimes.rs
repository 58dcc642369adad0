//! Shutdown and flush work from plain threads and from inside both tokio
//! flavours (the shipper owns its own runtime, so blocking calls made from
//! the application's runtime cannot starve it).

use std::time::Duration;

use logcollect::{LogcollectLayer, Shipper};
use logcollect_tests::{config, unique, Capture};
use tracing_subscriber::layer::SubscriberExt;

const WAIT: Duration = Duration::from_secs(30);

fn run_case(tag: &str, body: impl FnOnce(&Shipper)) {
    let ex = unique(tag);
    let cap = Capture::topic(&ex, "logstash.#");
    let shipper = Shipper::new(config(&ex).build().unwrap()).unwrap();
    let subscriber = tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone()));
    tracing::subscriber::with_default(subscriber, || body(&shipper));
    let msgs = cap.take(100, WAIT);
    assert!(msgs.iter().all(|m| m.str("message") == tag));
    assert_eq!(shipper.stats().confirmed, 100);
}

fn log_100(tag: &str) {
    for i in 0..100 {
        tracing::info!(i, "{tag}");
    }
}

#[test]
fn plain_thread() {
    run_case("plain", |shipper| {
        log_100("plain");
        let guard = shipper.guard();
        drop(guard); // shutdown on drop, in a plain function
    });
}

#[test]
fn multi_thread_runtime() {
    run_case("multi", |shipper| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            log_100("multi");
            shipper.flush(WAIT).unwrap();
            shipper.shutdown(WAIT).unwrap();
        });
    });
}

#[test]
fn current_thread_runtime() {
    run_case("current", |shipper| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            log_100("current");
            // Blocking flush + guard drop inside a current-thread runtime
            // must not deadlock.
            shipper.flush(WAIT).unwrap();
            let guard = shipper.guard();
            drop(guard);
        });
    });
}
