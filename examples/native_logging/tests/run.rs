//! The example as a user runs it: against the real broker, and with none.

use std::process::Command;
use std::time::Duration;

use logcollect_tests::{unique, Capture};

#[test]
fn delivers_one_info_record_from_logger_test() {
    let ex = unique("example");
    let cap = Capture::topic(&ex, "logstash.#");
    let out = Command::new(env!("CARGO_BIN_EXE_native_logging"))
        .env("LOGCOLLECT_EXCHANGE", &ex)
        .env_remove("LOGCOLLECT_BROKER_URI")
        .env_remove("LOGCOLLECT_ACTIVITY_IDENTITY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let m = &cap.take(1, Duration::from_secs(30))[0];
    assert_eq!(m.routing_key, "logstash.test");
    assert_eq!(m.str("levelname"), "INFO");
    assert_eq!(m.str("logger"), "test");
    assert_eq!(m.str("project"), "logcollect");
    assert_eq!(m.str("subsystem"), "native_test");
    let n = m.field("random").as_u64().unwrap();
    assert!(m.str("message").ends_with(&n.to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("confirmed by the broker"), "{stderr}");
}

#[test]
fn without_broker_exits_zero_within_deadline_and_says_what_was_lost() {
    let out = Command::new(env!("CARGO_BIN_EXE_native_logging"))
        .env(
            "LOGCOLLECT_BROKER_URI",
            "amqp://guest:pw-s3cret-xyz@127.0.0.1:1//",
        )
        .env("LOGCOLLECT_SHUTDOWN_TIMEOUT", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 record(s) not delivered"), "{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    // Reported once per cause, not once per attempt or per record.
    assert_eq!(
        stderr.matches("cannot connect to").count(),
        2,
        "the report and the shutdown summary: {stderr}"
    );
    assert!(
        !stderr.contains("pw-s3cret-xyz"),
        "password leaked: {stderr}"
    );
}
