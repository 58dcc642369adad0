//! Secrets logged by mistake arrive as `[redacted]`: by field name (exact
//! or glob) and by value pattern, from `tracing` events, span fields and
//! hand-built records, counted in the stats; and as they are when
//! redaction is off.

use std::time::Duration;

use logcollect::{Level, LogcollectLayer, Record, Shipper};
use logcollect_tests::{config, unique, Capture};
use tracing_subscriber::prelude::*;

const WAIT: Duration = Duration::from_secs(30);

fn log_secrets(shipper: &Shipper) {
    let subscriber = tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", session_token = "tok-123");
        let _in = span.enter();
        tracing::info!(
            target: "app::auth",
            user = "ann",
            password = "hunter2",
            header = "Bearer abc.def",
            "login"
        );
    });
    assert!(shipper
        .submit(&Record::new(Level::Info, "app::auth", "key rotated").field("API_KEY", "k-456")));
    shipper.flush(WAIT).unwrap();
}

#[test]
fn a_logged_password_arrives_redacted() {
    let ex = unique("redact");
    let cap = Capture::topic(&ex, "logstash.#");
    let shipper = Shipper::new(config(&ex).build().unwrap()).unwrap();
    log_secrets(&shipper);
    let msgs = cap.take(2, WAIT);
    let login = msgs.iter().find(|m| m.str("message") == "login").unwrap();
    assert_eq!(login.str("user"), "ann");
    assert_eq!(login.str("password"), "[redacted]");
    assert_eq!(login.str("header"), "[redacted]");
    assert_eq!(login.str("session_token"), "[redacted]");
    let rotated = msgs
        .iter()
        .find(|m| m.str("message") == "key rotated")
        .unwrap();
    assert_eq!(rotated.str("API_KEY"), "[redacted]");
    for m in &msgs {
        let raw = String::from_utf8_lossy(&m.raw);
        for secret in ["hunter2", "abc.def", "tok-123", "k-456"] {
            assert!(!raw.contains(secret), "{secret} in {raw}");
        }
    }
    assert_eq!(shipper.stats().redacted, 4);
    shipper.shutdown(WAIT).unwrap();
}

#[test]
fn redaction_off_sends_values_as_they_are() {
    let ex = unique("redact-off");
    let cap = Capture::topic(&ex, "logstash.#");
    let shipper = Shipper::new(config(&ex).redaction(false).build().unwrap()).unwrap();
    log_secrets(&shipper);
    let msgs = cap.take(2, WAIT);
    let login = msgs.iter().find(|m| m.str("message") == "login").unwrap();
    assert_eq!(login.str("password"), "hunter2");
    assert_eq!(shipper.stats().redacted, 0);
    shipper.shutdown(WAIT).unwrap();
}
