//! The shipper against the real broker, without global installs (so these
//! tests can share one process and run in parallel).

use std::time::Duration;

use logcollect::{Level, Record, Shipper};
use logcollect_tests::{config, declare_exchange, delete_exchange, unique, Capture, Proxy};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn n_records_then_guard_drop_delivers_all_n_and_stats_match() {
    let ex = unique("ship-n");
    let cap = Capture::topic(&ex, "logstash.#");
    let shipper = Shipper::new(config(&ex).build().unwrap()).unwrap();
    let guard = shipper.guard();
    const N: usize = 3000;
    for i in 0..N {
        assert!(shipper.submit(
            &Record::new(Level::Info, "app::bulk", format!("record {i}")).field("i", i as u64)
        ));
    }
    drop(guard);
    let msgs = cap.take(N, WAIT);
    let mut seen = vec![false; N];
    for m in &msgs {
        let i = m.field("i").as_u64().unwrap() as usize;
        assert!(!seen[i], "record {i} twice");
        seen[i] = true;
        assert_eq!(m.routing_key, "logstash.app.bulk");
        assert_eq!(m.str("message"), format!("record {i}"));
    }
    let s = shipper.stats();
    assert_eq!(s.accepted, N as u64);
    assert_eq!(s.confirmed, N as u64, "{s:?}");
    assert_eq!(s.pending(), 0);
    assert_eq!(s.lost(), 0, "{s:?}");
    assert_eq!(s.unroutable, 0);
    assert!(s.published >= N as u64);
    assert!(
        cap.drain(Duration::from_millis(300)).is_empty(),
        "no extra messages"
    );
}

#[test]
fn amqp_properties_and_record_id() {
    let ex = unique("ship-props");
    let cap = Capture::topic(&ex, "logstash.#");
    let shipper = Shipper::new(config(&ex).durable(false).build().unwrap()).unwrap();
    shipper.submit(&Record::new(Level::Warning, "props", "p"));
    shipper.flush(WAIT).unwrap();
    let m = &cap.take(1, WAIT)[0];
    let p = &m.properties;
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(*p.delivery_mode(), Some(1), "transient when not durable");
    let id = p.message_id().as_ref().expect("message_id").to_string();
    assert_eq!(m.str("record_id"), id);
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(uuid.get_version_num(), 7);
    shipper.shutdown(WAIT).unwrap();
}

#[test]
fn durable_config_declares_durable_exchange_and_persistent_messages() {
    let ex = unique("ship-durable");
    let cap = Capture::start(&ex, lapin::ExchangeKind::Topic, true, "logstash.#");
    let shipper = Shipper::new(config(&ex).durable(true).build().unwrap()).unwrap();
    shipper.submit(&Record::new(Level::Info, "d", "durable"));
    shipper.flush(WAIT).unwrap();
    let m = &cap.take(1, WAIT)[0];
    assert_eq!(*m.properties.delivery_mode(), Some(2));
    let s = shipper.stats();
    assert_eq!(s.confirmed, 1);
    shipper.shutdown(WAIT).unwrap();
    delete_exchange(&ex);
}

#[test]
fn unroutable_records_are_counted_and_reported() {
    let ex = unique("ship-unroutable");
    let shipper = Shipper::new(config(&ex).build().unwrap()).unwrap();
    for i in 0..5 {
        shipper.submit(&Record::new(Level::Info, "nobody", format!("lost {i}")));
    }
    shipper.flush(WAIT).unwrap();
    let s = shipper.stats();
    // Acknowledged by the broker but routed nowhere: lost, not confirmed.
    assert_eq!(s.confirmed, 0);
    assert_eq!(s.unroutable, 5, "{s:?}");
    assert_eq!(s.lost_accepted(), 5);
    assert!(s.balanced(), "{s:?}");
    assert!(s.last_error.unwrap().contains("no queue bound"));
    shipper.shutdown(WAIT).unwrap();
    delete_exchange(&ex);
}

#[test]
fn exchange_declared_with_another_type_is_reported_and_used() {
    let ex = unique("ship-conflict");
    declare_exchange(&ex, lapin::ExchangeKind::Direct, false);
    let cap = Capture::start(&ex, lapin::ExchangeKind::Direct, false, "logstash.conflict");
    let shipper = Shipper::new(config(&ex).build().unwrap()).unwrap();
    shipper.submit(&Record::new(Level::Info, "conflict", "still delivered"));
    shipper.flush(WAIT).unwrap();
    let m = &cap.take(1, WAIT)[0];
    assert_eq!(m.str("message"), "still delivered");
    shipper.shutdown(WAIT).unwrap();
    delete_exchange(&ex);
}

#[test]
fn broker_unreachable_at_start_then_up_delivers_everything() {
    let ex = unique("ship-late");
    let cap = Capture::topic(&ex, "logstash.#");
    let proxy = Proxy::closed();
    let shipper = Shipper::new(
        config(&ex)
            .broker_uri(proxy.uri())
            .reconnect_max(Duration::from_millis(500))
            .build()
            .unwrap(),
    )
    .unwrap();
    // Nothing listens: every call must still return (this loop finishing is
    // the proof that logging does not wait for the broker).
    for i in 0..200u64 {
        assert!(shipper.submit(&Record::new(Level::Info, "late", "before").field("i", i)));
    }
    // The shipper has tried and failed at least once before the broker comes.
    let t0 = std::time::Instant::now();
    while shipper.stats().connect_failures == 0 {
        assert!(t0.elapsed() < WAIT, "no connection attempt reported");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = shipper.stats();
    assert!(!s.connected);
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("refused"),
        "{s:?}"
    );
    assert!(
        !s.last_error.unwrap().contains("guest:guest"),
        "password must not leak"
    );
    proxy.open();
    shipper.flush(WAIT).expect("flush once the broker answers");
    let msgs = cap.take(200, WAIT);
    let mut ids: Vec<u64> = msgs
        .iter()
        .map(|m| m.field("i").as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..200).collect::<Vec<_>>());
    shipper.shutdown(WAIT).unwrap();
}

#[test]
fn connections_cut_mid_stream_lose_nothing() {
    let ex = unique("ship-cut");
    let cap = Capture::topic(&ex, "logstash.#");
    let proxy = Proxy::closed();
    proxy.open();
    let shipper = Shipper::new(
        config(&ex)
            .broker_uri(proxy.uri())
            .reconnect_max(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap();
    const N: u64 = 3000;
    for i in 0..N {
        shipper.submit(&Record::new(Level::Info, "cut", "x").field("i", i));
        if i % 1000 == 500 {
            proxy.cut();
        }
    }
    shipper.flush(WAIT).expect("flush after cuts");
    let s = shipper.stats();
    assert_eq!(s.confirmed, N, "{s:?}");
    let msgs = cap.drain(Duration::from_secs(1));
    let mut ids: Vec<u64> = msgs
        .iter()
        .map(|m| m.field("i").as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    let dups = ids.len() - {
        let mut d = ids.clone();
        d.dedup();
        d.len()
    };
    ids.dedup();
    assert_eq!(ids, (0..N).collect::<Vec<_>>(), "every record arrives");
    // Duplicates can only be republished records: never more than republishes.
    assert!(
        dups as u64 <= s.republished,
        "dups {dups} > republished {}",
        s.republished
    );
    shipper.shutdown(WAIT).unwrap();
}

#[test]
fn shutdown_with_broker_down_reports_undelivered_and_returns_in_time() {
    let proxy = Proxy::closed(); // never opened
    let shipper = Shipper::new(
        config(&unique("ship-down"))
            .broker_uri(proxy.uri())
            .build()
            .unwrap(),
    )
    .unwrap();
    for _ in 0..10 {
        shipper.submit(&Record::new(Level::Info, "down", "never"));
    }
    let err = shipper.shutdown(Duration::from_millis(300)).unwrap_err();
    assert_eq!(err, logcollect::ShutdownError::Timeout);
    let s = shipper.stats();
    assert_eq!(s.undelivered_at_shutdown, 10, "{s:?}");
    assert_eq!(s.pending(), 0);
    assert_eq!(
        shipper.shutdown(Duration::from_millis(10)),
        Err(logcollect::ShutdownError::AlreadyShutdown)
    );
    // After shutdown: refused and counted, no panic.
    assert!(!shipper.submit(&Record::new(Level::Info, "down", "after")));
    assert_eq!(shipper.stats().dropped_after_shutdown, 1);
}

#[test]
fn queue_full_drops_newest_and_counts_exactly() {
    let proxy = Proxy::closed();
    let shipper = Shipper::new(
        config(&unique("ship-full"))
            .broker_uri(proxy.uri())
            .queue_capacity(10)
            .confirm_window(1)
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut accepted = 0;
    for _ in 0..100 {
        if shipper.submit(&Record::new(Level::Info, "full", "x")) {
            accepted += 1;
        }
    }
    let s = shipper.stats();
    assert_eq!(s.accepted, accepted);
    assert_eq!(s.accepted + s.dropped_queue_full, 100);
    assert!(s.dropped_queue_full >= 100 - 11, "{s:?}");
    let _ = shipper.shutdown(Duration::from_millis(100));
}

/// Waits until the shipper has failed to connect at least once.
fn first_failure(shipper: &Shipper) -> logcollect::Stats {
    let t0 = std::time::Instant::now();
    loop {
        let s = shipper.stats();
        if s.connect_failures > 0 && s.last_error.is_some() {
            return s;
        }
        assert!(t0.elapsed() < WAIT, "no connection failure reported: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn wrong_password_is_a_clear_error_without_the_password() {
    let shipper = Shipper::new(
        config(&unique("ship-badpw"))
            .broker_uri("amqp://guest:pw-s3cret-xyz@127.0.0.1:5672//")
            .build()
            .unwrap(),
    )
    .unwrap();
    shipper.submit(&Record::new(Level::Info, "badpw", "x"));
    let s = first_failure(&shipper);
    let e = s.last_error.unwrap();
    assert!(e.contains("login refused") && e.contains("guest"), "{e}");
    assert!(!e.contains("pw-s3cret-xyz"), "{e}");
    assert!(!format!("{shipper:?}").contains("pw-s3cret-xyz"));
    let _ = shipper.shutdown(Duration::from_millis(100));
}

#[test]
fn missing_vhost_is_a_clear_error() {
    let shipper = Shipper::new(
        config(&unique("ship-vhost"))
            .broker_uri("amqp://guest:guest@127.0.0.1:5672//no-such-vhost")
            .build()
            .unwrap(),
    )
    .unwrap();
    shipper.submit(&Record::new(Level::Info, "vhost", "x"));
    let e = first_failure(&shipper).last_error.unwrap();
    assert!(e.contains("vhost \"/no-such-vhost\""), "{e}");
    let _ = shipper.shutdown(Duration::from_millis(100));
}

#[test]
fn failover_list_skips_a_dead_broker() {
    let ex = unique("ship-failover");
    let cap = Capture::topic(&ex, "logstash.#");
    let dead = Proxy::closed();
    let shipper = Shipper::new(
        config(&ex)
            .broker_uri(format!(
                "{};amqp://guest:guest@127.0.0.1:5672//",
                dead.uri()
            ))
            .build()
            .unwrap(),
    )
    .unwrap();
    shipper.submit(&Record::new(
        Level::Info,
        "failover",
        "via the second broker",
    ));
    shipper.flush(WAIT).unwrap();
    assert_eq!(cap.take(1, WAIT)[0].str("message"), "via the second broker");
    let s = shipper.stats();
    // A process starts at a random broker of its list: the dead one was
    // tried first, or not at all.
    assert!(s.connect_failures <= 1, "{s:?}");
    assert_eq!(s.connects, 1);
    shipper.shutdown(WAIT).unwrap();
}

#[test]
fn durability_conflict_is_reported_and_records_still_delivered() {
    let ex = unique("ship-durconflict");
    // The exchange exists durable; the shipper asks for non-durable.
    let cap = Capture::start(&ex, lapin::ExchangeKind::Topic, true, "logstash.#");
    let shipper = Shipper::new(config(&ex).durable(false).build().unwrap()).unwrap();
    shipper.submit(&Record::new(Level::Info, "dur", "delivered anyway"));
    shipper.flush(WAIT).unwrap();
    assert_eq!(cap.take(1, WAIT)[0].str("message"), "delivered anyway");
    shipper.shutdown(WAIT).unwrap();
    delete_exchange(&ex);
}

#[test]
fn ten_megabyte_record_arrives_cut_to_the_cap_as_valid_json() {
    let ex = unique("ship-huge");
    let cap = Capture::topic(&ex, "logstash.#");
    let shipper = Shipper::new(config(&ex).build().unwrap()).unwrap();
    let huge = "é\u{1}\"".repeat(10 * 1024 * 1024 / 4);
    shipper.submit(&Record::new(Level::Info, "huge", huge).field("k", "v"));
    shipper.flush(WAIT).unwrap();
    let m = &cap.take(1, WAIT)[0];
    assert!(
        m.raw.len() <= logcollect::DEFAULT_MAX_RECORD_BYTES,
        "{}",
        m.raw.len()
    );
    assert_eq!(m.field("truncated").as_bool(), Some(true));
    assert!(m.field("original_bytes").as_u64().unwrap() > 10 * 1024 * 1024);
    assert!(m.str("message").ends_with("…[truncated]"));
    assert_eq!(m.str("k"), "v");
    assert_eq!(shipper.stats().truncated, 1);
    shipper.shutdown(WAIT).unwrap();
}
