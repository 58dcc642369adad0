//! A shipper whose broker cannot be reached, dropped or shut down while its
//! first connection attempt is still in flight, must leave no panic behind
//! in lapin's `lapin-io-loop` thread (it used to print "Task did not
//! complete: task N was cancelled" with a backtrace).
//!
//! Its own test binary: the panic hook it installs is process-wide.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use logcollect::Shipper;
use logcollect_tests::{config, unique};

/// Nothing listens on port 1: every connection attempt is refused at once.
const DEAD_BROKER: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

fn dead_shipper() -> Shipper {
    Shipper::new(
        config(&unique("dead-drop"))
            .broker_uri(DEAD_BROKER)
            .shutdown_timeout(Duration::from_millis(50))
            .build()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn dropping_a_shipper_mid_connect_leaves_no_io_loop_panic() {
    let io_loop_panics = Arc::new(AtomicUsize::new(0));
    let previous = std::panic::take_hook();
    let counted = io_loop_panics.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("lapin-io-loop") {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));

    for i in 0..50 {
        let shipper = dead_shipper();
        if i % 2 == 0 {
            drop(shipper);
        } else {
            let _ = shipper.shutdown(Duration::from_millis(10));
        }
    }
    // lapin's io-loop threads outlive the shippers: give the last ones time
    // to get to where they used to panic.
    std::thread::sleep(Duration::from_secs(2));

    assert_eq!(io_loop_panics.load(Ordering::SeqCst), 0);
}
