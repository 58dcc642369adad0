//! Whole records, byte for byte: the encoder is pure, so a fixed stamp
//! (time and id), fixed settings (pid included) and a record that names its
//! thread give the same bytes every time, in both profiles.

use super::*;

const ID: u128 = 0x0190_f3c2_7a1b_7c3d_9e4f_0a1b_2c3d_4e5f;

/// 2024-01-02T03:04:05.678901Z.
const MICROS: u64 = 1_704_164_645_678_901;

fn settings(profile: Profile) -> EncoderSettings {
    EncoderSettings {
        host: "vm".to_owned(),
        tags: vec!["web".to_owned()],
        type_name: "Logstash".to_owned(),
        activity_identity: vec![
            ("project".to_owned(), "demo".to_owned()),
            ("application".to_owned(), "backend".to_owned()),
        ],
        routing_prefix: "logstash".to_owned(),
        max_record_bytes: 1024 * 1024,
        process_id: 4242,
        profile,
        ecs_service_key: DEFAULT_ECS_SERVICE_KEY.to_owned(),
        ecs_extra_prefix: DEFAULT_ECS_EXTRA_PREFIX.to_owned(),
        redact_fields: Vec::new(),
        redact_values: Vec::new(),
    }
}

fn stamp(micros: u64) -> Stamp {
    Stamp {
        micros,
        id: uuid::Uuid::from_u128(ID),
    }
}

fn record() -> Record {
    let mut r = Record::new(Level::Warning, "app::db", "slow query")
        .field("elapsed_ms", 1500u64)
        .field("user", "ann")
        .field("ok", false);
    r.thread_name = Some("worker-1".to_owned());
    r.file = Some("src/db.rs".to_owned());
    r.line = Some(42);
    r.module_path = Some("app::db".to_owned());
    r
}

fn text(e: &Encoded) -> &str {
    std::str::from_utf8(&e.body).expect("UTF-8")
}

#[test]
fn logcollect_record_byte_for_byte() {
    let enc = Encoder::new(&settings(Profile::Logcollect));
    let out = enc
        .encode(&record(), stamp(MICROS))
        .expect("not re-entrant");
    assert_eq!(
        text(&out),
        concat!(
            r#"{"@timestamp":"2024-01-02T03:04:05.678901Z","@version":1,"host":"vm","tags":["web"],"#,
            r#""type":"Logstash","seq":1,"levelname":"WARNING","logger":"app::db","stack_info":null,"#,
            r#""process":4242,"threadName":"worker-1","pathname":"src/db.rs","lineno":42,"#,
            r#""module":"app::db","record_id":"0190f3c2-7a1b-7c3d-9e4f-0a1b2c3d4e5f","#,
            r#""elapsed_ms":1500,"user":"ann","ok":false,"message":"slow query","#,
            r#""project":"demo","application":"backend"}"#
        )
    );
    assert_eq!(out.id, uuid::Uuid::from_u128(ID));
    assert_eq!(out.routing_key, "logstash.app.db");
    assert!(!out.truncated);
    // The same tick again counts `seq` up; nothing else changes.
    let again = enc
        .encode(&record(), stamp(MICROS))
        .expect("not re-entrant");
    assert_eq!(text(&again), text(&out).replace("\"seq\":1", "\"seq\":2"));
}

#[test]
fn ecs_record_byte_for_byte() {
    let enc = Encoder::new(&settings(Profile::Ecs));
    let out = enc
        .encode(&record(), stamp(MICROS))
        .expect("not re-entrant");
    assert_eq!(
        text(&out),
        concat!(
            r#"{"@timestamp":"2024-01-02T03:04:05.678901Z","#,
            r#""log":{"level":"warn","logger":"app::db","origin":{"file":{"name":"src/db.rs","line":42}}},"#,
            r#""ecs":{"version":"8.11.0"},"host":{"hostname":"vm","name":"vm"},"#,
            r#""service":{"name":"backend"},"labels":{"project":"demo"},"#,
            r#""data_stream":{"dataset":"backend.log"},"tags":["web"],"#,
            r#""event":{"dataset":"backend.log","sequence":1,"id":"0190f3c2-7a1b-7c3d-9e4f-0a1b2c3d4e5f"},"#,
            r#""process":{"pid":4242,"thread":{"name":"worker-1"}},"message":"slow query","#,
            r#""elapsed_ms":1500,"extra":{"user":"ann"},"ok":false}"#
        )
    );
    assert_eq!(out.id, uuid::Uuid::from_u128(ID));
    assert_eq!(out.routing_key, "logstash.app.db");
}

#[test]
fn a_records_own_time_wins_over_the_stamp() {
    let enc = Encoder::new(&settings(Profile::Logcollect));
    let mut r = record();
    r.timestamp = Some(std::time::UNIX_EPOCH + std::time::Duration::from_micros(MICROS));
    let out = enc.encode(&r, stamp(0)).expect("not re-entrant");
    assert!(
        text(&out).starts_with(r#"{"@timestamp":"2024-01-02T03:04:05.678901Z","#),
        "{}",
        text(&out)
    );
}

#[test]
fn a_stamps_id_is_a_uuid_v7_of_the_stamps_own_time() {
    let mut ids = std::collections::HashSet::new();
    for _ in 0..1000 {
        let s = Stamp::now();
        assert_eq!(s.id.get_version(), Some(uuid::Version::SortRand));
        assert_eq!(s.id.get_variant(), uuid::Variant::RFC4122);
        let bits = s.id.as_u128();
        let millis = (bits >> 80) as u64;
        let sub_milli = ((bits >> 64) & 0xfff) as u64;
        assert_eq!(millis, s.micros / 1000, "{}", s.id);
        assert_eq!(sub_milli, (s.micros % 1000) * 4096 / 1000, "{}", s.id);
        assert!(ids.insert(s.id), "repeated id {}", s.id);
    }
}
