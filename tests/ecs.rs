//! The ECS profile against the real broker: two shippers of one process with
//! different profiles each deliver only their own shape, through every
//! front-end (hand-built records, `tracing` events with spans, `log`
//! records), from several threads at once; type stability on the wire.
//! No global logger is installed, so these tests share one process.

use std::time::Duration;

use logcollect::{Level, LogcollectLayer, LogcollectLogger, Profile, Record, Shipper};
use logcollect_tests::{config, unique, Capture, Msg};
use serde_json::Value;
use tracing_subscriber::prelude::*;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct IoLike(&'static str);
impl std::fmt::Display for IoLike {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for IoLike {}

/// Logs the same records through every front-end into `shipper`.
fn log_everything(shipper: &Shipper, n: usize) {
    for i in 0..n {
        shipper.submit(
            &Record::new(Level::Info, "app::submit", format!("submitted {i}"))
                .field("i", i as u64)
                .field("host", "user-host")
                .field("db.rows", 3u64),
        );
    }
    let subscriber = tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", request_id = "req-7", user = "ann");
        let _entered = span.enter();
        for i in 0..n {
            let err = IoLike("disk full");
            tracing::warn!(
                target: "app::tracing",
                i = i as u64,
                error = &err as &(dyn std::error::Error + 'static),
                traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "traced {i}"
            );
        }
    });
    let logger = LogcollectLogger::new(shipper.clone());
    for i in 0..n {
        log::Log::log(
            &logger,
            &log::Record::builder()
                .level(log::Level::Error)
                .target("app::log")
                .file(Some("src/main.rs"))
                .line(Some(9))
                .key_values(&[("i", i as u64)])
                .args(format_args!("logged {i}"))
                .build(),
        );
    }
}

fn assert_logcollect_shape(m: &Msg) {
    let b = m.body.as_object().expect("one object per message");
    assert_eq!(b["@version"], 1, "{}", m.body);
    assert!(b["host"].is_string(), "{}", m.body);
    assert!(b["levelname"].is_string(), "{}", m.body);
    assert!(b["logger"].is_string());
    assert!(b["process"].is_u64());
    for k in ["log", "ecs", "event", "service", "labels", "extra"] {
        assert!(!b.contains_key(k), "{k} in a logcollect record: {}", m.body);
    }
    assert!(!b.keys().any(|k| k.contains('.') && k != "db.rows"));
    let id = m.properties.message_id().as_ref().unwrap().to_string();
    assert_eq!(b["record_id"], id.as_str());
    assert_eq!(b["project"], "demo");
}

fn assert_ecs_shape(m: &Msg) {
    let b = m.body.as_object().expect("one object per message");
    assert_eq!(b["ecs"]["version"], logcollect::ECS_VERSION, "{}", m.body);
    assert!(b["host"]["hostname"].is_string(), "{}", m.body);
    assert!(b["log"]["level"].is_string());
    assert!(b["process"]["pid"].is_u64());
    assert_eq!(b["service"]["name"], "backend");
    assert_eq!(b["labels"]["project"], "demo");
    for k in [
        "@version",
        "levelname",
        "logger",
        "record_id",
        "type",
        "seq",
    ] {
        assert!(!b.contains_key(k), "{k} in an ECS record: {}", m.body);
    }
    fn no_dots(v: &Value) {
        if let Value::Object(o) = v {
            for (k, v) in o {
                assert!(!k.contains('.'), "dotted key {k:?}");
                no_dots(v);
            }
        }
    }
    no_dots(&m.body);
    let id = m.properties.message_id().as_ref().unwrap().to_string();
    assert_eq!(b["event"]["id"], id.as_str());
}

#[test]
fn two_shippers_with_different_profiles_never_mix() {
    let (ex_lc, ex_ecs) = (unique("ecs-mix-lc"), unique("ecs-mix-ecs"));
    let cap_lc = Capture::topic(&ex_lc, "logstash.#");
    let cap_ecs = Capture::topic(&ex_ecs, "logstash.#");
    let lc = Shipper::new(config(&ex_lc).build().unwrap()).unwrap();
    let ecs = Shipper::new(config(&ex_ecs).profile(Profile::Ecs).build().unwrap()).unwrap();
    assert_eq!(ecs.config().profile(), Profile::Ecs);
    const N: usize = 20;
    // Both profiles from two threads at once, and interleaved on one thread
    // (the encoders share that thread's scratch buffers).
    std::thread::scope(|s| {
        s.spawn(|| log_everything(&lc, N));
        s.spawn(|| log_everything(&ecs, N));
    });
    for i in 0..N {
        let r = Record::new(Level::Info, "app::mixed", format!("mixed {i}"));
        assert!(lc.submit(&r));
        assert!(ecs.submit(&r));
    }
    lc.flush(WAIT).unwrap();
    ecs.flush(WAIT).unwrap();
    let total = 4 * N;
    let got_lc = cap_lc.take(total, WAIT);
    let got_ecs = cap_ecs.take(total, WAIT);
    for m in &got_lc {
        assert_eq!(m.exchange, ex_lc);
        assert_logcollect_shape(m);
    }
    for m in &got_ecs {
        assert_eq!(m.exchange, ex_ecs);
        assert_ecs_shape(m);
    }
    let routing = |msgs: &[Msg]| {
        let mut keys: Vec<String> = msgs.iter().map(|m| m.routing_key.clone()).collect();
        keys.sort();
        keys
    };
    assert_eq!(routing(&got_lc), routing(&got_ecs), "same routing keys");

    // The same tracing event in both shapes.
    let traced = |msgs: &[Msg], logger_of: fn(&Value) -> &Value| -> Value {
        let m = msgs
            .iter()
            .find(|m| logger_of(&m.body) == "app::tracing")
            .unwrap();
        println!("{}", String::from_utf8_lossy(&m.raw));
        m.body.clone()
    };
    let l = traced(&got_lc, |b| &b["logger"]);
    assert_eq!(l["levelname"], "WARNING");
    assert_eq!(l["request_id"], "req-7");
    assert_eq!(l["exc_info"], "disk full");
    assert_eq!(
        l["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    let e = traced(&got_ecs, |b| &b["log"]["logger"]);
    assert_eq!(e["log"]["level"], "warn");
    assert_eq!(e["http"]["request"]["id"], "req-7");
    // `user` is an ECS object: a user's scalar `user` moves under `extra`.
    assert_eq!(e["extra"]["user"], "ann");
    assert!(e.get("user").is_none(), "{e}");
    assert_eq!(e["data_stream"]["dataset"], "backend.log");
    assert_eq!(e["trace"]["id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(e["span"]["id"], "00f067aa0ba902b7");
    assert_eq!(
        e["error"],
        serde_json::json!({"type": "error", "message": "disk full", "stack_trace": "disk full"})
    );
    // A hand-built record's fields: `host` moved, `db.rows` nested.
    let sub = got_ecs
        .iter()
        .find(|m| m.body["log"]["logger"] == "app::submit")
        .unwrap();
    assert_eq!(sub.body["extra"]["host"], "user-host");
    assert_eq!(sub.body["db"]["rows"], 3);
    assert_eq!(sub.body["host"]["hostname"], lc.config().host());
    let sub = got_lc
        .iter()
        .find(|m| m.body["logger"] == "app::submit")
        .unwrap();
    assert_eq!(sub.body["extra_host"], "user-host");
    assert_eq!(sub.body["db.rows"], 3);
    // `log` records carry the call site.
    let logged = got_ecs
        .iter()
        .find(|m| m.body["log"]["logger"] == "app::log")
        .unwrap();
    assert_eq!(
        logged.body["log"]["origin"],
        serde_json::json!({"file": {"name": "src/main.rs", "line": 9}})
    );
    assert!(cap_lc.drain(Duration::from_millis(300)).is_empty());
    assert!(cap_ecs.drain(Duration::from_millis(300)).is_empty());
    lc.shutdown(WAIT).unwrap();
    ecs.shutdown(WAIT).unwrap();
}

#[test]
fn type_changes_are_renamed_on_the_wire_in_both_profiles() {
    for profile in [Profile::Logcollect, Profile::Ecs] {
        let ex = unique("ecs-types");
        let cap = Capture::topic(&ex, "logstash.#");
        let shipper = Shipper::new(config(&ex).profile(profile).build().unwrap()).unwrap();
        let values: [logcollect::FieldValue; 4] =
            [1i64.into(), "many".into(), 2.5f64.into(), true.into()];
        for v in values {
            shipper.submit(&Record::new(Level::Info, "app::types", "m").field("count", v));
        }
        shipper.flush(WAIT).unwrap();
        let msgs = cap.take(4, WAIT);
        let keys: Vec<(&str, &Value)> = msgs
            .iter()
            .map(|m| {
                m.body
                    .as_object()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| k.starts_with("count"))
                    .map(|(k, v)| (k.as_str(), v))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("count", &Value::from(1)),
                ("count_str", &Value::from("many")),
                ("count", &Value::from(2.5)),
                ("count_bool", &Value::from(true)),
            ],
            "{profile}"
        );
        shipper.shutdown(WAIT).unwrap();
    }
}
