//! `boot::default_config` installs both front-ends globally, so this file is
//! its own process. Records from `log` and `tracing` arrive with the field set
//! of the Python reference messages and the right routing keys.

use std::time::Duration;

use logcollect_tests::{config, json_type, reference_body, unique, Capture, Msg};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Outer(&'static str);
impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&std::fmt::Error)
    }
}

/// Every field of the reference body exists in ours with the same JSON type.
fn assert_superset_of_reference(ours: &Msg, reference: &str, skip: &[&str]) {
    let r = reference_body(reference);
    for (k, v) in &r {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let mine = ours
            .body
            .get(k)
            .unwrap_or_else(|| panic!("{reference}: field {k} missing in {}", ours.body));
        assert_eq!(json_type(mine), json_type(v), "{reference}: type of {k}");
    }
}

#[test]
fn log_and_tracing_records_reach_the_exchange() {
    let ex = unique("boot");
    let cap = Capture::topic(&ex, "logstash.#");
    let guard = logcollect::boot::default_config(config(&ex).build().unwrap()).unwrap();

    // Scenario a: a plain info from logger `test`.
    log::info!(target: "test", "hello");
    // Scenario b: formatted args, dotted logger, key-values of several types.
    log::warn!(target: "app::db::pool", user = "ann", n = 7, ratio = 1.5, ok = true; "pool {} of {}", 3, 4);
    // tracing with span fields (innermost wins) and an error with a source.
    {
        let outer = tracing::info_span!("request", request_id = "r-1", shared = "outer");
        let _o = outer.enter();
        let inner = tracing::info_span!("db", shared = "inner", table = "users");
        let _i = inner.enter();
        let err = Outer("query failed");
        tracing::error!(target: "app::jobs", order = 42u64, error = &err as &dyn std::error::Error, "job {} failed", "j1");
    }
    // A `log` record inside a span carries the span's fields too.
    {
        let span = tracing::info_span!("req", request_id = "r-9");
        let _e = span.enter();
        log::info!(target: "app::web", "handled");
    }
    // The AMQP client's own records are never shipped, even at TRACE.
    guard.shipper().flush(WAIT).unwrap();
    let msgs = cap.drain(Duration::from_secs(1));
    assert_eq!(
        msgs.len(),
        4,
        "exactly our four records: {:#?}",
        msgs.iter().map(|m| &m.body).collect::<Vec<_>>()
    );

    let a = &msgs[0];
    assert_eq!(a.routing_key, "logstash.test");
    assert_eq!(a.str("message"), "hello");
    assert_eq!(a.str("levelname"), "INFO");
    assert_eq!(a.str("logger"), "test");
    assert_eq!(a.str("project"), "demo");
    assert_eq!(
        a.field("process").as_u64(),
        Some(u64::from(std::process::id()))
    );
    assert_superset_of_reference(a, "lc_a.json", &[]);
    assert_superset_of_reference(a, "lc_i.json", &[]);
    // A true UTC timestamp with microseconds and Z.
    let ts = a.str("@timestamp");
    assert_eq!(ts.len(), 27, "{ts}");
    assert!(ts.ends_with('Z'));

    let b = &msgs[1];
    assert_eq!(b.routing_key, "logstash.app.db.pool");
    assert_eq!(b.str("logger"), "app::db::pool");
    assert_eq!(b.str("message"), "pool 3 of 4");
    assert_eq!(b.str("levelname"), "WARNING");
    assert_eq!(b.str("user"), "ann");
    assert_eq!(b.field("n").as_i64(), Some(7));
    assert_eq!(b.field("ratio").as_f64(), Some(1.5));
    assert_eq!(b.field("ok").as_bool(), Some(true));
    assert_superset_of_reference(b, "lc_b.json", &[]);

    let c = &msgs[2];
    assert_eq!(c.routing_key, "logstash.app.jobs");
    assert_eq!(c.str("levelname"), "ERROR");
    assert_eq!(c.str("message"), "job j1 failed");
    assert_eq!(c.field("order").as_u64(), Some(42));
    assert_eq!(c.str("request_id"), "r-1");
    assert_eq!(c.str("table"), "users");
    assert_eq!(c.str("shared"), "inner", "innermost span wins");
    assert_eq!(c.str("error"), "query failed");
    assert!(
        c.str("exc_info")
            .contains("query failed\nCaused by: an error occurred when formatting an argument"),
        "{}",
        c.body
    );
    assert_eq!(c.field("error_chain").as_array().unwrap().len(), 1);
    assert_superset_of_reference(c, "lc_d.json", &[]);

    let d = &msgs[3];
    assert_eq!(d.str("logger"), "app::web");
    assert_eq!(d.str("request_id"), "r-9", "span fields on a log record");

    for m in &msgs {
        assert_eq!(m.exchange, ex);
        let logger = m.str("logger");
        for t in ["lapin", "amq_protocol", "tokio", "async_rs", "logcollect"] {
            assert!(
                !logger.starts_with(t),
                "AMQP client record shipped: {}",
                m.body
            );
        }
    }
    let s = guard.shipper().stats();
    assert_eq!((s.accepted, s.confirmed, s.lost()), (4, 4, 0), "{s:?}");

    // Logging after shutdown must neither recurse nor panic; it is counted.
    let shipper = guard.shipper().clone();
    drop(guard);
    for i in 0..1000 {
        log::error!("after shutdown {i}");
        tracing::error!(i, "after shutdown");
    }
    assert_eq!(shipper.stats().dropped_after_shutdown, 2000);
    assert!(cap.drain(Duration::from_millis(300)).is_empty());
}
