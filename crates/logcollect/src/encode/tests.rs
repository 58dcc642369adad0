//! Tests of the Logstash JSON encoder: golden comparison with the Python
//! library's recorded output (`tests/fixtures/python-0.14`), timestamp and `seq`,
//! key guards, value conversion, the size cap, error chains, re-entrancy, and
//! property tests of the "always exactly one valid JSON object" promise.

use super::keys::sanitize_key;
use super::logcollect::RESERVED_KEYS;
use super::time::{civil, write_timestamp};
use super::*;

use crate::config::{Config, ConfigBuilder};
use proptest::prelude::*;
use serde_json::{Map, Value};
use std::time::SystemTime;

/// The recorded Python output, kept at the workspace root
/// (`tests/fixtures/python-0.14/README.md` says how it was recorded).
const REF_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/python-0.14/"
);

/// The activity identity of the reference recordings.
const IDENTITY: [(&str, &str); 2] = [("project", "demo"), ("application", "backend")];

/// The default size cap (1 MiB).
const DEFAULT_CAP: usize = crate::config::DEFAULT_MAX_RECORD_BYTES;

/// Built-in fields whose value is deterministic and equal to the reference's.
const SAME_AS_REFERENCE: &[&str] = &[
    "@version",
    "message",
    "host",
    "tags",
    "type",
    "seq",
    "levelname",
    "logger",
    "stack_info",
    "project",
    "application",
];

// ---------------------------------------------------------------- helpers

/// A stamp of this moment, as the shipper makes one.
pub(super) fn now() -> Stamp {
    Stamp {
        micros: now_micros(),
        id: uuid::Uuid::now_v7(),
    }
}

/// Most tests stamp their records with the clock, as the shipper does.
impl Encoder {
    pub(crate) fn begin(
        &self,
        level: Level,
        logger: &str,
        loc: Location<'_>,
    ) -> Option<RecordWriter<'_>> {
        self.start(now(), level, logger, loc)
    }

    pub(crate) fn encode_record(&self, r: &Record) -> Option<Encoded> {
        self.encode(r, now())
    }
}

/// The reference configuration: host `vm`, identity `project=demo,
/// application=backend`, everything else at its default.
fn reference_config() -> ConfigBuilder {
    Config::builder().host("vm").activity_identity(IDENTITY)
}

fn encoder(b: ConfigBuilder) -> Encoder {
    Encoder::new(&b.build().expect("valid test config").encoder_settings())
}

fn capped(max: usize) -> Encoder {
    encoder(reference_config().max_record_bytes(max))
}

fn loc() -> Location<'static> {
    Location::default()
}

/// Keys of the top-level object, in order and with duplicates, read from the
/// raw text (serde_json silently keeps the last of two equal keys).
/// `text` must already be known to be valid JSON.
fn top_level_keys(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut keys = Vec::new();
    let mut depth = 0usize;
    let mut expect_key = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b',' if depth == 1 => expect_key = true,
            b'"' => {
                let start = i;
                i += 1;
                while b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if depth == 1 && expect_key {
                    keys.push(serde_json::from_str(&text[start..=i]).expect("key literal"));
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    keys
}

/// Parses a body: it must be UTF-8, exactly one JSON object (nothing before
/// or after it) and hold no key twice.
fn parse(body: &[u8]) -> Map<String, Value> {
    let text = std::str::from_utf8(body).expect("body is UTF-8");
    let v: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("body is not one JSON value ({e}): {text}"));
    let Value::Object(map) = v else {
        panic!("body is not a JSON object: {text}");
    };
    let keys = top_level_keys(text);
    assert_eq!(keys.len(), map.len(), "a key appears twice: {keys:?}");
    map
}

/// JSON type name, telling integers from floats as Elasticsearch does.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn reference(name: &str) -> Value {
    let path = format!("{REF_DIR}{name}.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reference file {path}: {e}"));
    serde_json::from_str(&text).expect("reference file is JSON")
}

/// Every key of the reference body exists in ours with the same JSON type;
/// the keys in `same_value` also have the same value; the routing keys and
/// the timestamp shape agree. Returns our parsed body.
fn assert_golden(name: &str, ours: &Encoded, same_value: &[&str]) -> Map<String, Value> {
    let r = reference(name);
    let rb = r["body"].as_object().expect("reference body is an object");
    let ob = parse(&ours.body);
    for (k, rv) in rb {
        let ov = ob
            .get(k)
            .unwrap_or_else(|| panic!("{name}: reference key {k:?} missing from ours: {ob:?}"));
        assert_eq!(
            kind(ov),
            kind(rv),
            "{name}: type of {k:?}: ours {ov}, reference {rv}"
        );
    }
    for k in same_value {
        assert_eq!(ob[*k], rb[*k], "{name}: value of {k:?}");
    }
    assert_eq!(
        ours.routing_key,
        r["routing_key"].as_str().expect("reference routing key"),
        "{name}: routing key"
    );
    let (ts, ref_ts) = (
        ob["@timestamp"].as_str().unwrap(),
        rb["@timestamp"].as_str().unwrap(),
    );
    assert_eq!(
        ts.len(),
        ref_ts.len(),
        "{name}: timestamp shape {ts} vs {ref_ts}"
    );
    assert!(ts.ends_with('Z') && ref_ts.ends_with('Z'));
    ob
}

/// An error with a chain of sources: `chain(&["top", "mid", "root"])`
/// (shared with the ECS tests).
#[derive(Debug)]
pub(crate) struct ChainErr {
    msg: String,
    source: Option<Box<ChainErr>>,
}

impl fmt::Display for ChainErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl StdError for ChainErr {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

pub(crate) fn chain(msgs: &[&str]) -> ChainErr {
    let mut err: Option<ChainErr> = None;
    for m in msgs.iter().rev() {
        err = Some(ChainErr {
            msg: (*m).to_owned(),
            source: err.map(Box::new),
        });
    }
    err.expect("at least one message")
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` to Unix microseconds; panics on any other shape.
fn parse_timestamp(ts: &str) -> u64 {
    let b = ts.as_bytes();
    assert_eq!(b.len(), 27, "timestamp {ts:?}");
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        assert_eq!(b[i], c, "timestamp {ts:?} at {i}");
    }
    let num = |r: std::ops::Range<usize>| -> i64 {
        assert!(
            b[r.clone()].iter().all(u8::is_ascii_digit),
            "timestamp {ts:?}"
        );
        ts[r].parse().unwrap()
    };
    let (y, mo, d) = (num(0..4), num(5..7), num(8..10));
    let (h, mi, s, us) = (num(11..13), num(14..16), num(17..19), num(20..26));
    assert!(
        (1..=12).contains(&mo) && (1..=31).contains(&d),
        "timestamp {ts:?}"
    );
    assert!(h < 24 && mi < 60 && s < 60, "timestamp {ts:?}");
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(((days * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + us).unwrap()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

// ------------------------------------------------------------ 1. golden

#[test]
fn golden_lc_a_plain_info_matches_reference_types() {
    let enc = encoder(reference_config());
    let out = enc
        .encode_record(&Record::new(Level::Info, "test", "hello"))
        .expect("not re-entrant");
    let ob = assert_golden("lc_a", &out, SAME_AS_REFERENCE);
    assert_eq!(ob["process"], u64::from(std::process::id()));
    assert!(!out.truncated);
}

#[test]
fn golden_lc_b_formatted_warning_with_dotted_logger() {
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Warning, "app.db.pool", loc()).unwrap();
    w.message_fmt(format_args!("user {} has {} items", "bob", 3));
    assert_golden("lc_b", &w.finish(), SAME_AS_REFERENCE);
}

#[test]
fn golden_lc_c_extra_types_and_collisions_are_renamed_not_overwritten() {
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Info, "app.extra", loc()).unwrap();
    w.message_str("extra types");
    w.str("s", "text");
    w.i64("i", 7);
    w.f64("f", 1.5);
    w.bool("b_true", true);
    w.bool("b_false", false);
    w.null("none");
    w.raw("lst", r#"[1,"two",3.0,null]"#);
    w.raw("dct", r#"{"k":"v","n":1}"#);
    w.str("tup", "(1, 2)");
    w.str("byt", r"b'\x00ab'");
    w.display(
        "when",
        format_args!("datetime.datetime({}, 1, 2, 3, 4, 5, 678901)", 2024),
    );
    w.str("obj", "<Custom id=42>");
    w.str("host", "extra-host");
    w.str("type", "extra-type");
    w.str("logger", "extra-logger");
    w.i64("seq", 99);
    let out = w.finish();
    // `host`, `type`, `logger`, `seq`: the Python library let `extra=`
    // overwrite them (README quirk 9); we keep ours and rename the user's.
    let same: Vec<&str> = SAME_AS_REFERENCE
        .iter()
        .copied()
        .filter(|k| !["host", "type", "logger", "seq"].contains(k))
        .chain([
            "s", "i", "f", "b_true", "b_false", "none", "lst", "dct", "tup", "byt", "when", "obj",
        ])
        .collect();
    let ob = assert_golden("lc_c", &out, &same);
    assert_eq!(ob["host"], "vm");
    assert_eq!(ob["type"], "Logstash");
    assert_eq!(ob["logger"], "app.extra");
    assert_eq!(ob["seq"], 1);
    assert_eq!(ob["extra_host"], "extra-host");
    assert_eq!(ob["extra_type"], "extra-type");
    assert_eq!(ob["extra_logger"], "extra-logger");
    assert_eq!(ob["extra_seq"], 99);
    assert_eq!(kind(&ob["extra_seq"]), "int");
}

#[test]
fn golden_lc_d_error_gives_exc_info_lineno_thread_name() {
    let enc = encoder(reference_config());
    let l = Location {
        file: Some("/srv/demo/scenarios.py"),
        line: Some(122),
        module: Some("app::jobs"),
    };
    let mut w = enc.begin(Level::Error, "app.jobs", l).unwrap();
    w.message_fmt(format_args!("job {} failed", "j1"));
    w.error("error", &chain(&["division by zero"]));
    let out = w.finish();
    let mut same = SAME_AS_REFERENCE.to_vec();
    same.push("lineno");
    let ob = assert_golden("lc_d", &out, &same);
    assert_eq!(ob["exc_info"], "division by zero");
    assert_eq!(ob["error"], "division by zero");
    assert_eq!(ob["error_chain"], Value::Array(vec![]));
    assert_eq!(ob["pathname"], "/srv/demo/scenarios.py");
}

#[test]
fn golden_lc_e_non_ascii_and_control_characters_round_trip() {
    let enc = encoder(reference_config());
    let out = enc
        .encode_record(&Record::new(
            Level::Info,
            "app.unicode",
            "Привет, мир ✓ \u{0} \n tab\t",
        ))
        .unwrap();
    let ob = assert_golden("lc_e", &out, SAME_AS_REFERENCE);
    assert_eq!(ob["message"], "Привет, мир ✓ \u{0} \n tab\t");
    // We send UTF-8 as is (Python escapes it): same string once parsed.
    assert!(std::str::from_utf8(&out.body).unwrap().contains("Привет"));
}

#[test]
fn golden_lc_i_root_logger() {
    let enc = encoder(reference_config());
    let out = enc
        .encode_record(&Record::new(Level::Info, "", "root message"))
        .unwrap();
    let ob = assert_golden("lc_i", &out, SAME_AS_REFERENCE);
    assert_eq!(ob["logger"], "root");
}

#[test]
fn golden_lc_durable_same_body_with_durable_config() {
    let enc = encoder(reference_config().durable(true));
    let out = enc
        .encode_record(&Record::new(Level::Info, "app.durable", "durable exchange"))
        .unwrap();
    assert_golden("lc_durable", &out, SAME_AS_REFERENCE);
}

#[test]
fn golden_lc_g_identity_key_module_replaces_the_builtin_once() {
    let enc = encoder(reference_config().activity_identity([
        ("project", "demo"),
        ("application", "backend"),
        ("module", "billing"),
    ]));
    let l = Location {
        file: Some("src/billing.rs"),
        line: Some(3),
        module: Some("app::billing"),
    };
    let mut w = enc.begin(Level::Info, "app.billing", l).unwrap();
    w.message_str("activity test");
    let out = w.finish();
    let mut same = SAME_AS_REFERENCE.to_vec();
    same.push("module");
    let ob = assert_golden("lc_g", &out, &same);
    assert_eq!(ob["module"], "billing");
    let text = std::str::from_utf8(&out.body).unwrap();
    assert_eq!(text.matches("\"module\"").count(), 1, "{text}");
}

#[test]
fn routing_keys_match_reference() {
    let enc = encoder(reference_config());
    let rk = |name: &str| reference(name)["routing_key"].as_str().unwrap().to_owned();
    assert_eq!(enc.routing_key("test"), rk("lc_a"));
    assert_eq!(enc.routing_key("test"), "logstash.test");
    assert_eq!(enc.routing_key("app.db.pool"), rk("lc_b"));
    assert_eq!(enc.routing_key("app::db::pool"), "logstash.app.db.pool");
    assert_eq!(enc.routing_key(""), rk("lc_i"));
    assert_eq!(enc.routing_key(""), "logstash.root");
    assert_eq!(enc.routing_key("приложение.модуль"), rk("lc_k"));
    assert_eq!(
        enc.routing_key("приложение::модуль"),
        "logstash.приложение.модуль"
    );
    // A routing key over 255 bytes is cut (Python dropped the record, lc_j).
    let long = "n".repeat(300);
    let k = enc.routing_key(&long);
    assert_eq!(k.len(), 255);
    assert_eq!(k, format!("logstash.{long}")[..255]);
    // Cut on a character boundary: 9 + 61 × 4 = 253 bytes.
    let emoji = "😀".repeat(300);
    let k = enc.routing_key(&emoji);
    assert_eq!(k.len(), 253, "{k}");
    assert!(k
        .strip_prefix("logstash.")
        .unwrap()
        .chars()
        .all(|c| c == '😀'));
    // 9 + 1 + 122 × 2 = 254 bytes.
    let cyr = format!("a{}", "ж".repeat(300));
    let k = enc.routing_key(&cyr);
    assert_eq!(k.len(), 254, "{k}");
    assert!(format!("logstash.{cyr}").starts_with(&k));
    // The encoded record carries the same key as `routing_key`.
    let out = enc
        .encode_record(&Record::new(Level::Info, "app::db::pool", "x"))
        .unwrap();
    assert_eq!(out.routing_key, "logstash.app.db.pool");
    assert_eq!(parse(&out.body)["logger"], "app::db::pool");
}

#[test]
fn routing_key_uses_configured_prefix() {
    let enc = encoder(reference_config().routing_key("logs"));
    assert_eq!(enc.routing_key("my_app::db"), "logs.my_app.db");
}

#[test]
fn record_id_is_the_message_id_uuid_v7() {
    let enc = encoder(reference_config());
    let out = enc
        .encode_record(&Record::new(Level::Info, "a", "b"))
        .unwrap();
    let ob = parse(&out.body);
    assert_eq!(ob["record_id"], out.id.hyphenated().to_string());
    assert_eq!(out.id.get_version_num(), 7);
    let out2 = enc
        .encode_record(&Record::new(Level::Info, "a", "b"))
        .unwrap();
    assert_ne!(out.id, out2.id);
}

#[test]
fn levels_have_python_names() {
    let enc = encoder(reference_config());
    for (level, name) in [
        (Level::Trace, "TRACE"),
        (Level::Debug, "DEBUG"),
        (Level::Info, "INFO"),
        (Level::Warning, "WARNING"),
        (Level::Error, "ERROR"),
        (Level::Critical, "CRITICAL"),
    ] {
        let out = enc.encode_record(&Record::new(level, "t", "m")).unwrap();
        assert_eq!(parse(&out.body)["levelname"], name);
    }
}

#[test]
fn configured_tags_and_type_are_written() {
    let enc = encoder(reference_config().tags(["a", "b\"c"]).type_name("Rust"));
    let ob = parse(
        &enc.encode_record(&Record::new(Level::Info, "t", "m"))
            .unwrap()
            .body,
    );
    assert_eq!(ob["tags"], serde_json::json!(["a", "b\"c"]));
    assert_eq!(ob["type"], "Rust");
}

// --------------------------------------------------------- 2. timestamp

#[test]
fn timestamp_is_utc_microseconds_close_to_now() {
    let enc = encoder(reference_config());
    let before = now_micros();
    let out = enc
        .encode_record(&Record::new(Level::Info, "t", "m"))
        .unwrap();
    let after = now_micros();
    let ob = parse(&out.body);
    let ts = ob["@timestamp"].as_str().unwrap();
    let t = parse_timestamp(ts);
    assert!(
        t + 1_000_000 >= before && t <= after + 1_000_000,
        "{ts} ({t}) not within 1 s of [{before}, {after}]"
    );
}

#[test]
fn civil_on_known_instants() {
    let cases: &[(u64, &str)] = &[
        (0, "1970-01-01T00:00:00"),
        (951_782_400, "2000-02-29T00:00:00"),
        (4_102_444_799, "2099-12-31T23:59:59"),
        (1_735_689_599, "2024-12-31T23:59:59"), // day 366 of a leap year
        (978_307_199, "2000-12-31T23:59:59"),   // leap century
        (4_107_542_399, "2100-02-28T23:59:59"), // 2100 is not a leap year
        (4_107_542_400, "2100-03-01T00:00:00"),
        (68_214_896, "1972-02-29T12:34:56"),
        (946_684_799, "1999-12-31T23:59:59"),
        (1_795_494_569, "2026-11-24T04:29:29"), // lc_j's receive time
    ];
    for &(secs, want) in cases {
        assert_eq!(
            std::str::from_utf8(&civil(secs)).unwrap(),
            want,
            "civil({secs})"
        );
    }
}

#[test]
fn civil_agrees_with_inverse_over_a_range_of_days() {
    // Every day from 1970 to 2100 (step 1 day + 1 s, so the time of day moves).
    let mut secs = 0u64;
    while secs < 4_200_000_000 {
        let text = String::from_utf8(civil(secs).to_vec()).unwrap();
        assert_eq!(
            parse_timestamp(&format!("{text}.000000Z")),
            secs * 1_000_000,
            "{text}"
        );
        secs += 86_401;
    }
}

#[test]
fn write_timestamp_pads_the_fraction_to_six_digits() {
    let ts = |micros: u64| {
        let mut v = Vec::new();
        write_timestamp(&mut v, micros);
        String::from_utf8(v).unwrap()
    };
    assert_eq!(ts(0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(ts(7), "1970-01-01T00:00:00.000007Z");
    assert_eq!(ts(1_000_007), "1970-01-01T00:00:01.000007Z");
    assert_eq!(ts(1_999_999), "1970-01-01T00:00:01.999999Z");
    assert_eq!(ts(1_120_000), "1970-01-01T00:00:01.120000Z");
    assert_eq!(ts(951_782_400_123_456), "2000-02-29T00:00:00.123456Z");
    // The per-second cache: same second twice, another second, back again.
    assert_eq!(ts(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
    assert_eq!(ts(4_102_444_799_999_999), "2099-12-31T23:59:59.999999Z");
    assert_eq!(ts(951_782_400_500_000), "2000-02-29T00:00:00.500000Z");
    assert_eq!(ts(951_782_401_000_000), "2000-02-29T00:00:01.000000Z");
}

// --------------------------------------------------------------- 3. seq

#[test]
fn seq_one_per_new_tick_then_counts_up_to_the_cap() {
    let enc = encoder(reference_config());
    assert_eq!(enc.next_seq(100), 1);
    assert_eq!(enc.next_seq(100), 2);
    assert_eq!(enc.next_seq(100), 3);
    let enc = encoder(reference_config());
    let seqs: Vec<u64> = (0..1200).map(|_| enc.next_seq(5_000)).collect();
    let want: Vec<u64> = (1..=1200).map(|i: u64| i.min(1000)).collect();
    assert_eq!(seqs, want);
    // Another tick restarts; the old one is not remembered.
    assert_eq!(enc.next_seq(5_001), 1);
    assert_eq!(enc.next_seq(5_001), 2);
    assert_eq!(enc.next_seq(5_000), 1, "time went backwards");
    assert_eq!(enc.next_seq(4_000), 1, "time went backwards");
    assert_eq!(enc.next_seq(4_000), 2);
}

#[test]
fn seq_works_with_real_clock_values() {
    let enc = encoder(reference_config());
    let t = 1_795_494_569_312_867; // 2026, in microseconds
    assert_eq!(enc.next_seq(t), 1);
    assert_eq!(enc.next_seq(t), 2);
    assert_eq!(enc.next_seq(t + 1), 1);
    assert_eq!(enc.next_seq(t), 1);
}

#[test]
fn seq_in_records_is_an_integer_between_1_and_1000() {
    let enc = encoder(reference_config());
    for _ in 0..50 {
        let ob = parse(
            &enc.encode_record(&Record::new(Level::Info, "t", "m"))
                .unwrap()
                .body,
        );
        let seq = ob["seq"].as_u64().expect("seq is an integer");
        assert!((1..=1000).contains(&seq));
    }
}

// -------------------------------------------------------- 4. key guards

#[test]
fn reserved_user_keys_are_renamed_and_never_overwrite_ours() {
    let enc = encoder(reference_config());
    let l = Location {
        file: Some("src/x.rs"),
        line: Some(7),
        module: Some("app::x"),
    };
    let mut w = enc.begin(Level::Info, "app", l).unwrap();
    w.message_str("real message");
    let plain: Vec<&str> = RESERVED_KEYS
        .iter()
        .copied()
        .filter(|k| !k.starts_with('@'))
        .collect();
    for k in &plain {
        w.str(k, &format!("user-{k}"));
    }
    w.str("@timestamp", "user-ts");
    w.str("@version", "user-version");
    let out = w.finish();
    let ob = parse(&out.body);
    for k in &plain {
        assert_eq!(ob[&format!("extra_{k}")], format!("user-{k}"), "{k}");
    }
    assert_eq!(ob["at_timestamp"], "user-ts");
    assert_eq!(ob["at_version"], "user-version");
    parse_timestamp(ob["@timestamp"].as_str().unwrap());
    assert_eq!(ob["@version"], 1);
    assert_eq!(ob["message"], "real message");
    assert_eq!(ob["host"], "vm");
    assert_eq!(ob["tags"], Value::Array(vec![]));
    assert_eq!(ob["type"], "Logstash");
    assert_eq!(kind(&ob["seq"]), "int");
    assert_eq!(ob["levelname"], "INFO");
    assert_eq!(ob["logger"], "app");
    assert_eq!(ob["stack_info"], Value::Null);
    assert_eq!(ob["process"], u64::from(std::process::id()));
    assert!(!ob["threadName"].as_str().unwrap().starts_with("user-"));
    assert_eq!(ob["pathname"], "src/x.rs");
    assert_eq!(ob["lineno"], 7);
    assert_eq!(ob["module"], "app::x");
    assert_eq!(ob["record_id"], out.id.hyphenated().to_string());
    for k in [
        "exc_info",
        "error_chain",
        "truncated",
        "original_bytes",
        "dropped_fields",
    ] {
        assert!(!ob.contains_key(k), "{k} must not appear from a user field");
    }
    assert!(!out.truncated);
}

#[test]
fn identity_keys_win_over_user_fields() {
    let enc = encoder(reference_config());
    let out = enc
        .encode_record(
            &Record::new(Level::Info, "t", "m")
                .field("project", "user-project")
                .field("application", 5i64),
        )
        .unwrap();
    let ob = parse(&out.body);
    assert_eq!(ob["project"], "demo");
    assert_eq!(ob["application"], "backend");
    assert_eq!(ob["extra_project"], "user-project");
    assert_eq!(ob["extra_application"], 5);
}

#[test]
fn unsafe_keys_are_rewritten() {
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    for k in [
        "@foo", "a[b]", "[a][b]", "_id", "", "@", "@[x]", "_", "a.b", "ok",
    ] {
        w.str(k, &format!("v:{k}"));
    }
    let ob = parse(&w.finish().body);
    for (user, ours) in [
        ("@foo", "at_foo"),
        ("a[b]", "a_b_"),
        ("[a][b]", "extra__a__b_"),
        ("_id", "extra__id"),
        ("", "empty_key"),
        ("@", "at_"),
        ("@[x]", "at__x_"),
        ("_", "extra__"),
        ("a.b", "a.b"),
        ("ok", "ok"),
    ] {
        assert_eq!(ob[ours], format!("v:{user}"), "{user:?} → {ours:?}");
    }
}

#[test]
fn sanitize_key_table() {
    let reserved = |k: &str| RESERVED_KEYS.contains(&k) || k == "project";
    for (key, want) in [
        ("plain", "plain"),
        ("Ünïcødé", "Ünïcødé"),
        ("host", "extra_host"),
        ("project", "extra_project"),
        ("@timestamp", "at_timestamp"),
        ("@foo", "at_foo"),
        ("a[b]", "a_b_"),
        ("_source", "extra__source"),
        ("", "empty_key"),
        ("extra_host", "extra_host"),
    ] {
        assert_eq!(sanitize_key(key, reserved), want, "{key:?}");
    }
}

#[test]
fn duplicate_keys_keep_the_first_value() {
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    w.str("k", "first");
    w.i64("k", 2);
    w.f64("k", 3.5);
    w.str("@foo", "a"); // → at_foo
    w.str("at_foo", "b");
    w.str("extra_host", "literal");
    w.str("host", "renamed"); // → extra_host, already there
    w.null("n");
    w.bool("n", true);
    let ob = parse(&w.finish().body);
    assert_eq!(ob["k"], "first");
    assert_eq!(ob["at_foo"], "a");
    assert_eq!(ob["extra_host"], "literal");
    assert_eq!(ob["n"], Value::Null);
    assert_eq!(ob["host"], "vm");
}

#[test]
fn duplicate_fields_in_a_record_keep_the_first() {
    let enc = encoder(reference_config());
    let r = Record::new(Level::Info, "t", "m")
        .field("user", "ann")
        .field("user", "bob");
    assert_eq!(parse(&enc.encode_record(&r).unwrap().body)["user"], "ann");
}

#[test]
fn identity_key_named_like_a_builtin_replaces_it_once() {
    let enc = encoder(reference_config().activity_identity([
        ("project", "demo"),
        ("host", "ident-host"),
        ("module", "ident-module"),
        ("logger", "ident-logger"),
        ("seq", "ident-seq"),
        ("process", "ident-process"),
        ("tags", "ident-tags"),
    ]));
    let l = Location {
        file: Some("src/a.rs"),
        line: Some(1),
        module: Some("real::module"),
    };
    let mut w = enc.begin(Level::Info, "real.logger", l).unwrap();
    w.message_str("m");
    w.str("host", "user-host");
    w.str("module", "user-module");
    let out = w.finish();
    let ob = parse(&out.body);
    assert_eq!(ob["host"], "ident-host");
    assert_eq!(ob["module"], "ident-module");
    assert_eq!(ob["logger"], "ident-logger");
    assert_eq!(ob["seq"], "ident-seq");
    assert_eq!(ob["process"], "ident-process");
    assert_eq!(ob["tags"], "ident-tags");
    assert_eq!(ob["extra_host"], "user-host");
    assert_eq!(ob["extra_module"], "user-module");
    // The routing key still uses the real logger.
    assert_eq!(out.routing_key, "logstash.real.logger");
    let text = std::str::from_utf8(&out.body).unwrap();
    for k in ["host", "module", "logger", "seq", "process", "tags"] {
        assert_eq!(
            text.matches(&format!("\"{k}\":")).count(),
            1,
            "{k} in {text}"
        );
    }
}

#[test]
fn identity_replacing_every_builtin_still_gives_valid_json() {
    let builtins = [
        "@timestamp",
        "@version",
        "message",
        "host",
        "tags",
        "type",
        "seq",
        "levelname",
        "logger",
        "stack_info",
        "process",
        "threadName",
        "pathname",
        "lineno",
        "module",
        "record_id",
    ];
    // Config refuses `record_id` as an identity key; the encoder must stay
    // valid without it all the same (every built-in replaced, the identity
    // opens the object).
    let with_identity = |b: ConfigBuilder, pairs: Vec<(String, String)>| {
        let mut settings = b.build().unwrap().encoder_settings();
        settings.activity_identity = pairs;
        Encoder::new(&settings)
    };
    let enc = with_identity(
        reference_config(),
        builtins
            .iter()
            .map(|k| ((*k).to_owned(), format!("id-{k}")))
            .collect(),
    );
    let l = Location {
        file: Some("f.rs"),
        line: Some(1),
        module: Some("m"),
    };
    // No user field: the identity's leading comma follows `{`.
    let mut w = enc.begin(Level::Info, "t", l).unwrap();
    w.message_str("m");
    let ob = parse(&w.finish().body);
    assert_eq!(ob.len(), builtins.len());
    for k in builtins {
        assert_eq!(ob[k], format!("id-{k}"));
    }
    // With a user field first.
    let mut w = enc.begin(Level::Info, "t", l).unwrap();
    w.u64("u", 1);
    let ob = parse(&w.finish().body);
    assert_eq!(ob.len(), builtins.len() + 1);
    assert_eq!(ob["u"], 1);
    // Truncated.
    let enc = with_identity(
        reference_config().max_record_bytes(4096),
        builtins
            .iter()
            .map(|k| ((*k).to_owned(), "i".to_owned()))
            .collect(),
    );
    let mut w = enc.begin(Level::Info, "t", l).unwrap();
    w.str("big", &"x".repeat(10_000));
    let out = w.finish();
    assert!(out.truncated);
    assert!(out.body.len() <= 4096);
    let ob = parse(&out.body);
    assert_eq!(ob["truncated"], true);
    assert_eq!(ob["dropped_fields"], 1);
}

#[test]

fn identity_key_named_like_an_error_or_truncation_field_appears_once() {
    let keys = [
        "exc_info",
        "error_chain",
        "truncated",
        "original_bytes",
        "dropped_fields",
    ];
    let enc = encoder(
        reference_config()
            .max_record_bytes(4096)
            .activity_identity(keys.iter().map(|k| (*k, "ident"))),
    );
    let mut w = enc.begin(Level::Error, "t", loc()).unwrap();
    w.message_str(&"x".repeat(10_000));
    w.error("error", &chain(&["top", "root"]));
    let out = w.finish();
    assert!(out.truncated);
    let ob = parse(&out.body); // fails: keys appear twice
    for k in keys {
        assert_eq!(ob[k], "ident", "{k}");
    }
}

// ------------------------------------------------------------ 5. values

#[test]
fn non_finite_floats_become_strings_and_floats_stay_floats() {
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    w.f64("nan", f64::NAN);
    w.f64("inf", f64::INFINITY);
    w.f64("ninf", f64::NEG_INFINITY);
    w.f64("three", 3.0);
    w.f64("neg_zero", -0.0);
    w.f64("huge", 1e300);
    w.f64("max", f64::MAX);
    w.f64("tiny", 5e-324);
    w.f64("min_pos", f64::MIN_POSITIVE);
    w.f64("small", 1.5e-7);
    w.f64("big_whole", 1e16);
    let out = w.finish();
    let text = std::str::from_utf8(&out.body).unwrap();
    assert!(text.contains("\"three\":3.0"), "{text}");
    let ob = parse(&out.body);
    assert_eq!(ob["nan"], "NaN");
    assert_eq!(ob["inf"], "Infinity");
    assert_eq!(ob["ninf"], "-Infinity");
    for (k, v) in [
        ("three", 3.0),
        ("neg_zero", -0.0),
        ("huge", 1e300),
        ("max", f64::MAX),
        ("tiny", 5e-324),
        ("min_pos", f64::MIN_POSITIVE),
        ("small", 1.5e-7),
        ("big_whole", 1e16),
    ] {
        assert_eq!(kind(&ob[k]), "float", "{k}: {}", ob[k]);
        assert_eq!(ob[k].as_f64(), Some(v), "{k}");
    }
}

#[test]
fn integers_are_exact_and_wide_ones_become_strings() {
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    w.i64("i64_min", i64::MIN);
    w.i64("i64_max", i64::MAX);
    w.i64("zero", 0);
    w.i64("neg", -42);
    w.u64("u64_max", u64::MAX);
    w.i128("i128_small", -5);
    w.i128("i128_u64", i128::from(u64::MAX));
    w.i128("i128_over", i128::from(u64::MAX) + 1);
    w.i128("i128_under", i128::from(i64::MIN) - 1);
    w.i128("i128_min", i128::MIN);
    let ob = parse(&w.finish().body);
    assert_eq!(ob["i64_min"].as_i64(), Some(i64::MIN));
    assert_eq!(ob["i64_max"].as_i64(), Some(i64::MAX));
    assert_eq!(ob["zero"].as_i64(), Some(0));
    assert_eq!(ob["neg"].as_i64(), Some(-42));
    assert_eq!(ob["u64_max"].as_u64(), Some(u64::MAX));
    assert_eq!(ob["i128_small"].as_i64(), Some(-5));
    assert_eq!(ob["i128_u64"].as_u64(), Some(u64::MAX));
    assert_eq!(ob["i128_over"], "18446744073709551616");
    assert_eq!(ob["i128_under"], "-9223372036854775809");
    assert_eq!(ob["i128_min"], i128::MIN.to_string());
}

/// Every control character, quotes, backslashes, emoji, RTL text and other
/// troublesome code points.
fn nasty_string() -> String {
    let mut s: String = (0u8..=0x1f).chain([0x7f]).map(char::from).collect();
    s.push_str(" \"quoted\" back\\slash \\\" \\u0041 / 😀👍🏽 שלום עולם مرحبا \u{202E}rtl\u{202C}");
    s.push_str(" \u{2028}\u{2029}\u{FEFF}\u{FFFD}\u{10FFFF} é e\u{301}");
    s
}

#[test]
fn strings_round_trip_exactly() {
    let s = nasty_string();
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Info, &s, loc()).unwrap();
    w.message_str(&s);
    w.str("str", &s);
    w.display("display", format_args!("{s}"));
    w.str(&s, "as key");
    let out = w.finish();
    // JSON forbids raw control characters in strings; we also escape DEL.
    assert!(!out.body.iter().any(|&b| b < 0x20 || b == 0x7f));
    let ob = parse(&out.body);
    assert_eq!(ob["message"], s.as_str());
    assert_eq!(ob["str"], s.as_str());
    assert_eq!(ob["display"], s.as_str());
    assert_eq!(ob["logger"], s.as_str());
    assert_eq!(ob[s.as_str()], "as key");
}

#[test]
fn message_fmt_round_trips_and_keeps_partial_output_of_a_failing_display() {
    struct Failing;
    impl fmt::Display for Failing {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("partial \"")?;
            Err(fmt::Error)
        }
    }
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    w.message_fmt(format_args!("{}", nasty_string()));
    let ob = parse(&w.finish().body);
    assert_eq!(ob["message"], nasty_string());

    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    w.message_fmt(format_args!("a {} b", Failing));
    w.display("field", format_args!("x {Failing}"));
    w.i64("after", 1);
    let ob = parse(&w.finish().body);
    assert!(ob["message"].as_str().unwrap().starts_with("a partial \""));
    assert!(ob["field"].as_str().unwrap().starts_with("x partial \""));
    assert_eq!(ob["after"], 1);
}

#[test]
fn message_writer_replaces_the_message() {
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    w.message_str("old");
    w.message_writer().push_str("new \u{1}");
    assert_eq!(parse(&w.finish().body)["message"], "new \u{1}");
}

#[test]
fn missing_message_is_an_empty_string() {
    let enc = encoder(reference_config());
    let w = enc.begin(Level::Info, "t", loc()).unwrap();
    assert_eq!(parse(&w.finish().body)["message"], "");
}

#[test]
fn invalid_utf8_bytes_become_replacement_characters() {
    // What the tracing front-end's `record_bytes` does with a byte field.
    let bytes: &[u8] = &[b'a', 0xff, 0xfe, b'b', 0xc3, b'"', 0xe2, 0x82];
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    w.str("bytes", &String::from_utf8_lossy(bytes));
    let out = w.finish();
    let ob = parse(&out.body);
    assert_eq!(ob["bytes"], "a\u{FFFD}\u{FFFD}b\u{FFFD}\"\u{FFFD}");
}

#[test]
fn raw_fields_and_null_keep_their_json() {
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    w.raw("obj", r#"{"a":[1,2.5,"x",null,true]}"#);
    w.null("nothing");
    w.bool("yes", true);
    let ob = parse(&w.finish().body);
    assert_eq!(
        ob["obj"],
        serde_json::json!({"a": [1, 2.5, "x", null, true]})
    );
    assert_eq!(ob["nothing"], Value::Null);
    assert_eq!(ob["yes"], true);
}

#[test]
fn record_field_values_have_their_json_types() {
    let enc = encoder(reference_config());
    let mut r = Record::new(Level::Info, "t", "m")
        .field("s", "x")
        .field("i", -1i64)
        .field("u", u64::MAX)
        .field("f", 2.0)
        .field("b", false)
        .field("nan", f64::NAN);
    r.fields.push(("n".into(), FieldValue::Null));
    let ob = parse(&enc.encode_record(&r).unwrap().body);
    assert_eq!(
        ["s", "i", "u", "f", "b", "nan", "n"].map(|k| kind(&ob[k])),
        ["string", "int", "int", "float", "bool", "string", "null"]
    );
}

// -------------------------------------------------------- 6. size cap

#[test]
fn ten_megabyte_message_is_truncated_under_the_cap() {
    let msg = "x".repeat(10 << 20);
    let enc = capped(4096);
    let out = enc
        .encode_record(&Record::new(Level::Info, "app", msg.as_str()))
        .unwrap();
    assert!(out.truncated);
    assert!(out.body.len() <= 4096, "{} bytes", out.body.len());
    let ob = parse(&out.body);
    assert_eq!(ob["truncated"], true);
    assert_eq!(ob["dropped_fields"], 0);
    let m = ob["message"].as_str().unwrap();
    let kept = m.strip_suffix("…[truncated]").expect("truncation marker");
    assert!(
        kept.len() > 1000 && kept.bytes().all(|b| b == b'x'),
        "{} bytes kept",
        kept.len()
    );
    assert_eq!(ob["project"], "demo");
    assert_eq!(ob["application"], "backend");
    assert_eq!(ob["logger"], "app");
    assert_eq!(ob["host"], "vm");
    assert_eq!(kind(&ob["seq"]), "int");
    parse_timestamp(ob["@timestamp"].as_str().unwrap());
    // `original_bytes` is the size the body would have had without the cap.
    let uncapped = encoder(reference_config().max_record_bytes(64 << 20))
        .encode_record(&Record::new(Level::Info, "app", msg.as_str()))
        .unwrap();
    assert!(!uncapped.truncated);
    assert_eq!(
        ob["original_bytes"].as_u64(),
        Some(uncapped.body.len() as u64)
    );
}

#[test]
fn many_big_fields_are_dropped_and_counted() {
    let fields: Vec<(String, FieldValue)> = (0..20)
        .map(|i| (format!("f{i:02}"), FieldValue::Str("v".repeat(1000))))
        .collect();
    let mut r = Record::new(Level::Info, "app", "small message");
    r.fields.clone_from(&fields);
    let out = capped(4096).encode_record(&r).unwrap();
    assert!(out.truncated);
    assert!(out.body.len() <= 4096, "{} bytes", out.body.len());
    let ob = parse(&out.body);
    assert_eq!(ob["truncated"], true);
    let kept: Vec<&String> = ob.keys().filter(|k| k.starts_with('f')).collect();
    let dropped = ob["dropped_fields"].as_u64().unwrap();
    assert!(dropped > 0);
    assert!(!kept.is_empty(), "some fields should still fit");
    assert_eq!(kept.len() as u64 + dropped, 20);
    for k in kept {
        assert_eq!(ob[k].as_str().unwrap().len(), 1000, "{k} is kept whole");
    }
    assert_eq!(ob["message"], "small message");
    assert_eq!(ob["project"], "demo");
    let uncapped = encoder(reference_config()).encode_record(&r).unwrap();
    assert_eq!(
        ob["original_bytes"].as_u64(),
        Some(uncapped.body.len() as u64)
    );
}

#[test]
fn truncation_never_splits_an_escape_or_a_utf8_sequence() {
    let unit = "\u{1}😀";
    for cap in 4096..4096 + 12 {
        let enc = capped(cap);
        for pad in 0..6 {
            let msg = format!("{}{}", "a".repeat(pad), unit.repeat(2000));
            let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
            w.message_str(&msg);
            w.str("field", &unit.repeat(100));
            let out = w.finish();
            assert!(out.truncated);
            assert!(
                out.body.len() <= cap,
                "cap {cap} pad {pad}: {}",
                out.body.len()
            );
            let ob = parse(&out.body); // a split escape or UTF-8 sequence fails here
            let m = ob["message"].as_str().unwrap();
            let kept = m.strip_suffix("…[truncated]").expect("marker");
            let kept = kept.strip_prefix(&"a".repeat(pad)).expect("prefix kept");
            assert!(kept.chars().all(|c| c == '\u{1}' || c == '😀'), "{kept:?}");
            assert!(!kept.is_empty());
        }
    }
}

#[test]
fn record_exactly_at_the_cap_is_not_truncated_one_byte_more_is() {
    let enc = capped(4096);
    let size = |msg: &str| {
        let out = enc
            .encode_record(&Record::new(Level::Info, "t", msg))
            .unwrap();
        (out.body.len(), out)
    };
    let (base, _) = size("");
    let fill = "a".repeat(4096 - base);
    let (len, out) = size(&fill);
    assert_eq!(len, 4096);
    assert!(!out.truncated);
    let ob = parse(&out.body);
    assert!(!ob.contains_key("truncated"));
    assert_eq!(ob["message"], fill.as_str());
    let (len, out) = size(&format!("{fill}a"));
    assert!(out.truncated);
    assert!(len <= 4096);
    assert_eq!(parse(&out.body)["truncated"], true);
    // Just under the cap.
    let (_, out) = size(&fill[1..]);
    assert!(!out.truncated);
}

#[test]
fn truncated_record_keeps_the_error_message() {
    let enc = capped(4096);
    let mut w = enc.begin(Level::Error, "t", loc()).unwrap();
    w.message_str(&"x".repeat(100_000));
    w.error("error", &chain(&["top", "mid", "root"]));
    let out = w.finish();
    assert!(out.truncated);
    assert!(out.body.len() <= 4096);
    let ob = parse(&out.body);
    assert_eq!(ob["exc_info"], "top\nCaused by: mid\nCaused by: root");
    assert_eq!(ob["error"], "top");
}

#[test]
fn huge_exc_info_is_cut_under_the_cap() {
    let enc = capped(4096);
    let big = "e".repeat(50_000);
    let mut w = enc.begin(Level::Error, "t", loc()).unwrap();
    w.message_str(&"m".repeat(50_000));
    w.error("error", &chain(&["top", big.as_str()]));
    let out = w.finish();
    assert!(out.truncated);
    assert!(out.body.len() <= 4096, "{}", out.body.len());
    let ob = parse(&out.body);
    assert!(ob["message"].as_str().unwrap().ends_with("…[truncated]"));
    assert_eq!(ob["truncated"], true);
    assert_eq!(ob["dropped_fields"], 0);
    assert_eq!(ob["error"], "top");
    let exc = ob["exc_info"].as_str().unwrap();
    let kept = exc.strip_suffix("…[truncated]").expect("exc_info marker");
    assert!(kept.starts_with("top\nCaused by: eee"), "{exc}");
}

#[test]

fn truncated_record_keeps_error_chain() {
    let enc = capped(4096);
    let mut w = enc.begin(Level::Error, "t", loc()).unwrap();
    w.message_str(&"x".repeat(100_000));
    w.error("error", &chain(&["top", "mid", "root"]));
    let ob = parse(&w.finish().body);
    assert_eq!(ob["error_chain"], serde_json::json!(["mid", "root"]));
}

#[test]

fn long_logger_name_still_respects_the_cap() {
    let enc = capped(4096);
    let logger = "n".repeat(5000);
    let out = enc
        .encode_record(&Record::new(Level::Info, logger.as_str(), "m"))
        .unwrap();
    assert!(out.body.len() <= 4096, "{} bytes", out.body.len());
    parse(&out.body);
}

// ------------------------------------------------------- 7. error chain

#[test]
fn error_chain_fills_exc_info_and_error_chain_from_the_first_error_only() {
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Error, "t", loc()).unwrap();
    w.message_str("failed");
    w.error("err", &chain(&["top", "mid", "root"]));
    w.error("second", &chain(&["other", "cause"]));
    let out = w.finish();
    let ob = parse(&out.body);
    assert_eq!(ob["err"], "top");
    assert_eq!(ob["second"], "other");
    assert_eq!(ob["exc_info"], "top\nCaused by: mid\nCaused by: root");
    assert_eq!(ob["error_chain"], serde_json::json!(["mid", "root"]));
    assert_eq!(ob["message"], "failed");
}

#[test]
fn error_without_source_has_empty_chain_and_next_record_starts_clean() {
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Error, "t", loc()).unwrap();
    w.error("err", &chain(&["alone \"quoted\"\n"]));
    let ob = parse(&w.finish().body);
    assert_eq!(ob["exc_info"], "alone \"quoted\"\n");
    assert_eq!(ob["error_chain"], Value::Array(vec![]));
    // The scratch buffers are reused: the next record has no error fields.
    let ob = parse(
        &enc.encode_record(&Record::new(Level::Info, "t", "m"))
            .unwrap()
            .body,
    );
    assert!(!ob.contains_key("exc_info"));
    assert!(!ob.contains_key("error_chain"));
}

#[test]
fn very_long_error_chain_is_bounded() {
    let msgs: Vec<String> = (0..100).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = msgs.iter().map(String::as_str).collect();
    let enc = encoder(reference_config());
    let mut w = enc.begin(Level::Error, "t", loc()).unwrap();
    w.error("err", &chain(&refs));
    let ob = parse(&w.finish().body);
    let chain_len = ob["error_chain"].as_array().unwrap().len();
    assert!((1..=32).contains(&chain_len), "{chain_len}");
    assert_eq!(ob["error_chain"][0], "e1");
}

// -------------------------------------------------------- 8. re-entrancy

#[test]
fn begin_returns_none_while_a_writer_is_alive_on_this_thread() {
    let enc = encoder(reference_config());
    let other = encoder(reference_config());
    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    assert!(enc.begin(Level::Info, "t", loc()).is_none());
    assert!(
        other.begin(Level::Info, "t", loc()).is_none(),
        "per thread, not per encoder"
    );
    // Another thread is not affected.
    std::thread::scope(|s| {
        s.spawn(|| {
            let w2 = enc.begin(Level::Info, "t2", loc()).expect("other thread");
            parse(&w2.finish().body);
        });
    });
    w.message_str("outer");
    let out = w.finish();
    assert_eq!(parse(&out.body)["message"], "outer");
    // After finish.
    let w = enc.begin(Level::Info, "t", loc()).expect("after finish");
    // After dropping without finish.
    drop(w);
    let w = enc.begin(Level::Info, "t", loc()).expect("after drop");
    assert!(enc
        .encode_record(&Record::new(Level::Info, "t", "m"))
        .is_none());
    drop(w);
    assert!(enc
        .encode_record(&Record::new(Level::Info, "t", "m"))
        .is_some());
}

#[test]
fn display_that_logs_from_inside_message_fmt_gets_none() {
    struct Logs<'a> {
        enc: &'a Encoder,
        inner_was_none: &'a Cell<Option<bool>>,
    }
    impl fmt::Display for Logs<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let inner = self.enc.begin(Level::Info, "inner", Location::default());
            self.inner_was_none.set(Some(inner.is_none()));
            if let Some(w) = inner {
                let _ = w.finish();
            }
            f.write_str("shown \"value\"")
        }
    }
    let enc = encoder(reference_config());
    let flag = Cell::new(None);
    let logs = Logs {
        enc: &enc,
        inner_was_none: &flag,
    };
    let mut w = enc.begin(Level::Info, "outer", loc()).unwrap();
    w.message_fmt(format_args!("before {logs} after"));
    w.display("field", format_args!("{logs}"));
    let out = w.finish();
    assert_eq!(flag.get(), Some(true));
    let ob = parse(&out.body);
    assert_eq!(ob["message"], "before shown \"value\" after");
    assert_eq!(ob["field"], "shown \"value\"");
    assert_eq!(ob["logger"], "outer");
    // And the encoder works normally afterwards.
    assert!(enc.begin(Level::Info, "t", loc()).is_some());
}

// ---------------------------------------------------- 9. property tests

/// Keys that exercise the guards.
const SPECIAL_KEYS: &[&str] = &[
    "host",
    "message",
    "@timestamp",
    "@version",
    "levelname",
    "record_id",
    "logger",
    "seq",
    "tags",
    "type",
    "process",
    "threadName",
    "stack_info",
    "pathname",
    "lineno",
    "module",
    "exc_info",
    "error_chain",
    "truncated",
    "original_bytes",
    "dropped_fields",
    "project",
    "application",
    "extra_host",
    "extra_project",
    "at_foo",
    "@foo",
    "_id",
    "_source",
    "a[b]",
    "[a][b]",
    "",
    "empty_key",
    "a.b",
    "@",
    "_",
    "[",
    "]",
];

#[derive(Debug, Clone)]
enum V {
    S(String),
    I(i64),
    U(u64),
    F(f64),
    B(bool),
}

/// Any `char`s, control characters included (`any::<String>()` has none).
fn chars(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => chars(12),
        3 => prop::sample::select(SPECIAL_KEYS).prop_map(str::to_owned),
        3 => "[a-c.]{1,2}",
        2 => "[@_\\[\\]a-z.\\x00-\\x1f]{0,6}",
    ]
}

fn value_strategy() -> impl Strategy<Value = V> {
    prop_oneof![
        3 => chars(40).prop_map(V::S),
        1 => ".{0,1500}".prop_map(V::S),
        2 => any::<i64>().prop_map(V::I),
        2 => any::<u64>().prop_map(V::U),
        2 => prop::num::f64::ANY.prop_map(V::F),
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 3.0])
            .prop_map(V::F),
        1 => any::<bool>().prop_map(V::B),
    ]
}

fn message_strategy() -> impl Strategy<Value = String> {
    prop_oneof![4 => chars(60), 1 => ".{0,6000}"]
}

/// A key our guards leave untouched, so the test can find its value.
fn is_plain(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.')
        && !RESERVED_KEYS.contains(&k)
        && !IDENTITY.iter().any(|(i, _)| *i == k)
}

fn assert_value(k: &str, got: &Value, want: &V) {
    match want {
        V::S(s) => assert_eq!(got, s.as_str(), "{k}"),
        V::I(i) => assert_eq!(got.as_i64(), Some(*i), "{k}: {got}"),
        V::U(u) => assert_eq!(got.as_u64(), Some(*u), "{k}: {got}"),
        V::B(b) => assert_eq!(got, b, "{k}"),
        V::F(f) if f.is_nan() => assert_eq!(got, "NaN", "{k}"),
        V::F(f) if f.is_infinite() => {
            assert_eq!(got, if *f > 0.0 { "Infinity" } else { "-Infinity" }, "{k}");
        }
        V::F(f) => {
            assert_eq!(kind(got), "float", "{k}: {got}");
            let g = got.as_f64().unwrap();
            // serde_json's default float parser may be one ULP off.
            assert!(
                g == *f || (g - f).abs() <= f.abs() * 4.0 * f64::EPSILON,
                "{k}: {g} vs {f}"
            );
        }
    }
}

fn check_record(
    enc: &Encoder,
    cap: usize,
    logger: &str,
    message: &str,
    fields: &[(String, V)],
    error: bool,
) {
    let l = Location {
        file: Some("src/lib.rs"),
        line: Some(10),
        module: Some("prop::test"),
    };
    let mut w = enc.begin(Level::Info, logger, l).expect("not re-entrant");
    w.message_str(message);
    for (k, v) in fields {
        match v {
            V::S(s) => w.str(k, s),
            V::I(i) => w.i64(k, *i),
            V::U(u) => w.u64(k, *u),
            V::F(f) => w.f64(k, *f),
            V::B(b) => w.bool(k, *b),
        }
    }
    if error {
        w.error("error", &chain(&["top", "root"]));
    }
    let out = w.finish();
    assert!(out.body.len() <= cap, "{} > {cap}", out.body.len());
    // One object, no duplicate key.
    let ob = parse(&out.body);
    // Built-in fields and their types.
    for (k, t) in [
        ("@timestamp", "string"),
        ("@version", "int"),
        ("message", "string"),
        ("host", "string"),
        ("tags", "array"),
        ("type", "string"),
        ("seq", "int"),
        ("levelname", "string"),
        ("logger", "string"),
        ("stack_info", "null"),
        ("process", "int"),
        ("threadName", "string"),
        ("pathname", "string"),
        ("lineno", "int"),
        ("module", "string"),
        ("record_id", "string"),
        ("project", "string"),
        ("application", "string"),
    ] {
        let v = ob.get(k).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(kind(v), t, "{k}: {v}");
    }
    parse_timestamp(ob["@timestamp"].as_str().unwrap());
    assert_eq!(ob["@version"], 1);
    assert_eq!(ob["host"], "vm");
    assert_eq!(
        ob["logger"],
        if logger.is_empty() { "root" } else { logger }
    );
    assert_eq!(ob["module"], "prop::test");
    assert_eq!(ob["project"], "demo");
    assert_eq!(ob["application"], "backend");
    assert_eq!(ob["record_id"], out.id.hyphenated().to_string());
    for k in ob.keys() {
        assert!(
            !k.starts_with('@') || k == "@timestamp" || k == "@version",
            "key {k:?}"
        );
        assert!(!k.starts_with('_'), "key {k:?}");
        assert!(!k.contains(['[', ']']), "key {k:?}");
    }
    assert_eq!(out.truncated, ob.contains_key("truncated"));
    if out.truncated {
        assert_eq!(ob["truncated"], true);
        assert_eq!(kind(&ob["original_bytes"]), "int");
        assert!(ob["original_bytes"].as_u64().unwrap() > cap as u64);
        assert_eq!(kind(&ob["dropped_fields"]), "int");
    } else {
        assert_eq!(ob["message"], message);
        let mut seen = std::collections::HashSet::new();
        for (k, v) in fields {
            if is_plain(k) && seen.insert(k.as_str()) {
                assert_value(k, &ob[k.as_str()], v);
            }
        }
        if error {
            assert_eq!(ob["exc_info"], "top\nCaused by: root");
            assert_eq!(ob["error_chain"], serde_json::json!(["root"]));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_any_fields_give_one_valid_capped_object(
        logger in chars(40),
        message in message_strategy(),
        fields in prop::collection::vec((key_strategy(), value_strategy()), 0..40),
        error in any::<bool>(),
    ) {
        check_record(&capped(4096), 4096, &logger, &message, &fields, error);
    }

    #[test]
    fn prop_any_fields_with_the_default_cap_keep_every_value(
        logger in chars(40),
        message in chars(200),
        fields in prop::collection::vec((key_strategy(), value_strategy()), 0..40),
    ) {
        let enc = encoder(reference_config());
        check_record(&enc, DEFAULT_CAP, &logger, &message, &fields, false);
    }

    #[test]
    fn prop_sanitized_keys_are_safe(key in prop_oneof![chars(16), key_strategy()]) {
        let reserved = |k: &str| RESERVED_KEYS.contains(&k) || k == "project";
        let k = sanitize_key(&key, reserved);
        prop_assert!(!k.is_empty());
        prop_assert!(!k.starts_with('@') && !k.starts_with('_'), "{:?} → {:?}", key, k);
        prop_assert!(!k.contains(['[', ']']), "{:?} → {:?}", key, k);
        prop_assert!(!reserved(&k), "{:?} → {:?}", key, k);
        if !reserved(&key) && !key.is_empty() && !key.starts_with(['@', '_'])
            && !key.contains(['[', ']'])
        {
            prop_assert_eq!(k.as_ref(), key.as_str());
        }
    }

    #[test]
    fn prop_routing_key_is_prefix_dot_logger_within_255_bytes(logger in prop_oneof![
        chars(300),
        "[a-z:]{0,300}",
    ]) {
        let enc = encoder(reference_config());
        let k = enc.routing_key(&logger);
        let name = if logger.is_empty() { "root" } else { logger.as_str() };
        let full = format!("logstash.{}", name.replace("::", "."));
        prop_assert!(k.len() <= 255);
        prop_assert!(full.starts_with(&k));
        prop_assert!(k.len() == full.len() || k.len() + 4 > 255, "cut too early: {}", k.len());
    }
}

// ------------------------------------------------ 10. type stability

#[test]
fn type_changes_are_renamed_consistently() {
    let enc = encoder(reference_config());
    let rec = |f: &dyn Fn(&mut RecordWriter<'_>)| {
        let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
        f(&mut w);
        parse(&w.finish().body)
    };
    let a = rec(&|w| {
        w.i64("count", 3);
        w.bool("flag", true);
        w.f64("ratio", 0.5);
        w.null("maybe");
        w.raw("span_f", "\"s\"");
        w.raw("obj", r#"{"k":1}"#);
    });
    let b = rec(&|w| {
        w.str("count", "many");
        w.str("flag", "yes");
        w.i64("ratio", 1);
        w.str("maybe", "text");
        w.raw("span_f", "5");
        w.str("obj", "flat");
    });
    let c = rec(&|w| {
        w.u64("count", 4);
        w.f64("ratio", f64::NAN);
        w.display("flag", format_args!("{}", "again"));
        w.i128("span_f", i128::MAX);
    });
    assert_eq!(
        (a["count"].clone(), a["flag"].clone()),
        (json(3), json(true))
    );
    assert_eq!(a["obj"], serde_json::json!({"k": 1}));
    assert_eq!(b["count_str"], "many");
    assert_eq!(b["flag_str"], "yes");
    assert_eq!(b["ratio"], 1, "ints and floats are one type");
    assert_eq!(b["maybe"], "text", "null fixes no type");
    assert_eq!(b["span_f_num"], 5);
    assert_eq!(b["obj_str"], "flat");
    assert!(!b.contains_key("count") && !b.contains_key("flag"));
    assert_eq!(c["count"], 4);
    assert_eq!(c["ratio_str"], "NaN", "a non-finite float is a string");
    assert_eq!(c["flag_str"], "again");
    assert_eq!(c["span_f"], i128::MAX.to_string(), "first seen as a string");
}

fn json<T: Into<Value>>(v: T) -> Value {
    v.into()
}

#[test]
fn renamed_key_collisions() {
    let enc = encoder(reference_config().activity_identity([("project", "demo"), ("n_str", "id")]));
    let first = enc
        .encode_record(
            &Record::new(Level::Info, "t", "m")
                .field("n", 1i64)
                .field("count", 1i64),
        )
        .unwrap();
    parse(&first.body);
    // `n_str` is an identity key: the rename gets the `extra_` prefix.
    // `count_str` is already in the record: the renamed value is dropped
    // (duplicates keep the first value).
    let out = enc
        .encode_record(
            &Record::new(Level::Info, "t", "m")
                .field("n", "s")
                .field("count_str", "explicit")
                .field("count", "many"),
        )
        .unwrap();
    let ob = parse(&out.body);
    assert_eq!(ob["n_str"], "id");
    assert_eq!(ob["extra_n_str"], "s");
    assert_eq!(ob["count_str"], "explicit");
    assert!(!ob.contains_key("count"));
    // A renamed key with another type of its own goes one step further.
    let ob = parse(
        &enc.encode_record(&Record::new(Level::Info, "t", "m").field("count_str", 5i64))
            .unwrap()
            .body,
    );
    assert_eq!(ob["count_str_num"], 5);
}

#[test]
fn type_tracking_is_bounded_and_per_encoder() {
    let enc = encoder(reference_config());
    enc.types
        .len
        .store(TYPE_TRACKING_MAX_KEYS, Ordering::Relaxed);
    let r = |v: FieldValue| Record::new(Level::Info, "t", "m").field("fresh", v);
    enc.encode_record(&r(FieldValue::I64(1))).unwrap();
    let ob = parse(&enc.encode_record(&r("x".into())).unwrap().body);
    assert_eq!(ob["fresh"], "x", "untracked keys are written as they come");
    let a = encoder(reference_config());
    let b = encoder(reference_config());
    a.encode_record(&r(FieldValue::I64(1))).unwrap();
    let ob = parse(&b.encode_record(&r("x".into())).unwrap().body);
    assert_eq!(ob["fresh"], "x", "each encoder remembers its own types");
}

#[test]
fn threads_racing_on_a_new_key_agree_on_its_type() {
    let enc = encoder(reference_config());
    let outs: Vec<Map<String, Value>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let enc = &enc;
                s.spawn(move || {
                    (0..50)
                        .map(|i| {
                            let v = if (t + i) % 2 == 0 {
                                FieldValue::I64(i as i64)
                            } else {
                                FieldValue::Str(format!("s{i}"))
                            };
                            let r = Record::new(Level::Info, "t", "m").field("race", v);
                            parse(&enc.encode_record(&r).unwrap().body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    // One key per type, the same in every record.
    let mut key_of: std::collections::HashMap<&'static str, String> = Default::default();
    for ob in &outs {
        let (k, v) = ob
            .iter()
            .find(|(k, _)| k.starts_with("race"))
            .expect("the field is kept");
        let first = key_of.entry(kind(v)).or_insert_with(|| k.clone());
        assert_eq!(first, k, "{v} under {k}, earlier under {first}");
    }
    assert_eq!(key_of.len(), 2);
    assert!(key_of.values().any(|k| k == "race"));
    assert!(key_of.values().any(|k| k == "race_num" || k == "race_str"));
}

/// Keys' checks are cached per thread: two encoders with other settings, on
/// one thread, with the very same `&'static str` keys, each get their own
/// answer (redaction, reserved identity names, first types), call after call.
#[test]
fn a_key_cached_under_one_encoder_is_checked_afresh_under_another() {
    let a = encoder(
        Config::builder()
            .host("vm")
            .redact_fields(["pin_code"])
            .activity_identity([("order", "x")]),
    );
    let b = encoder(
        Config::builder()
            .host("vm")
            .redact_fields(Vec::<String>::new()),
    );
    const PIN: &str = "pin_code";
    const ORDER: &str = "order";
    const COUNT: &str = "count";
    for _ in 0..3 {
        let mut w = a.begin(Level::Info, "app", loc()).unwrap();
        w.str(PIN, "1234");
        w.u64(ORDER, 7);
        w.u64(COUNT, 1);
        let ob = parse(&w.finish().body);
        assert_eq!(ob["pin_code"], "[redacted]");
        assert_eq!(ob["extra_order"], 7);
        assert_eq!(ob["order"], "x");
        assert_eq!(ob["count"], 1);

        let mut w = b.begin(Level::Info, "app", loc()).unwrap();
        w.str(PIN, "1234");
        w.u64(ORDER, 7);
        w.str(COUNT, "one");
        let ob = parse(&w.finish().body);
        assert_eq!(ob["pin_code"], "1234");
        assert_eq!(ob["order"], 7);
        assert!(!ob.contains_key("extra_order"));
        assert_eq!(ob["count"], "one", "b's first type of count is a string");
    }
}

/// Routing keys are cached per thread and logger: another encoder's prefix
/// for the same logger, or another logger at a reused address, is never
/// answered from the cache.
#[test]
fn a_routing_key_cached_under_one_encoder_is_made_afresh_under_another() {
    let a = encoder(Config::builder().host("vm").routing_key("alpha"));
    let b = encoder(Config::builder().host("vm").routing_key("beta"));
    for _ in 0..3 {
        assert_eq!(a.routing_key("app::db"), "alpha.app.db");
        assert_eq!(b.routing_key("app::db"), "beta.app.db");
        let mut name = String::from("svc::x");
        assert_eq!(a.routing_key(&name), "alpha.svc.x");
        name.replace_range(5.., "y");
        assert_eq!(a.routing_key(&name), "alpha.svc.y");
    }
}
