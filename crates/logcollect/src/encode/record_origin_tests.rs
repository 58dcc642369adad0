//! Tests of what a hand-built [`Record`] can bring of its own — its time,
//! thread name, stack, an already formatted exception and nested values —
//! in both profiles (records made outside Rust: the Python handler).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::json::MAX_NESTING;
use super::time::civil;
use super::*;
use crate::config::Config;

fn encoder(profile: Profile) -> Encoder {
    let config = Config::builder()
        .host("vm")
        .activity_identity([("project", "demo"), ("application", "backend")])
        .profile(profile)
        .build()
        .expect("valid test config");
    Encoder::new(&config.encoder_settings())
}

fn body(enc: &Encoder, r: &Record) -> Map<String, Value> {
    let out = enc.encode_record(r).expect("not re-entrant");
    let text = std::str::from_utf8(&out.body).expect("UTF-8");
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        other => panic!("not one JSON object ({other:?}): {text}"),
    }
}

fn record() -> Record {
    Record::new(Level::Info, "app.web", "hello")
}

#[test]
fn a_records_own_time_is_its_timestamp_and_drives_seq() {
    let enc = encoder(Profile::Logcollect);
    // 2024-01-02T03:04:05.678901Z
    let t = UNIX_EPOCH + Duration::from_micros(1_704_164_645_678_901);
    let r = Record {
        timestamp: Some(t),
        ..record()
    };
    let a = body(&enc, &r);
    assert_eq!(a["@timestamp"], "2024-01-02T03:04:05.678901Z");
    assert_eq!(a["seq"], 1);
    // Same creation time again: Python's seq counts up.
    assert_eq!(body(&enc, &r)["seq"], 2);
    let later = Record {
        timestamp: Some(t + Duration::from_micros(1)),
        ..record()
    };
    assert_eq!(body(&enc, &later)["seq"], 1);
}

#[test]
fn without_a_time_the_record_is_stamped_now() {
    let enc = encoder(Profile::Logcollect);
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    let before = civil(secs());
    let b = body(&enc, &record());
    let after = civil(secs());
    let ts = b["@timestamp"].as_str().expect("string").as_bytes();
    assert!(before[..] <= ts[..19] && ts[..19] <= after[..], "{b:?}");
}

#[test]
fn thread_name_and_stack_info_come_from_the_record() {
    let enc = encoder(Profile::Logcollect);
    let plain = body(&enc, &record());
    assert_eq!(plain["stack_info"], Value::Null);
    let r = Record {
        thread_name: Some("MainThread".into()),
        stack_info: Some("Stack (most recent call last):\n  File \"x.py\"".into()),
        ..record()
    };
    let b = body(&enc, &r);
    assert_eq!(b["threadName"], "MainThread");
    assert_eq!(
        b["stack_info"],
        "Stack (most recent call last):\n  File \"x.py\""
    );
    let ecs = body(&encoder(Profile::Ecs), &r);
    assert_eq!(ecs["process"]["thread"]["name"], "MainThread");
}

#[test]
fn a_long_stack_keeps_its_most_recent_calls_within_the_head_bound() {
    let enc = encoder(Profile::Logcollect);
    let mut stack = String::from("Stack (most recent call last):\n");
    for i in 0..200 {
        stack.push_str(&format!("  File \"m{i}.py\", line {i}, in f{i}\n"));
    }
    let r = Record {
        stack_info: Some(stack.clone()),
        ..record()
    };
    let b = body(&enc, &r);
    let sent = b["stack_info"].as_str().expect("a string");
    assert!(sent.len() <= MAX_HEAD_STR, "{}", sent.len());
    assert!(
        sent.starts_with('…') && sent.ends_with("in f199\n"),
        "{sent}"
    );
    assert!(stack.ends_with(&sent['…'.len_utf8()..]));
}

fn exception() -> ExceptionInfo {
    ExceptionInfo {
        type_name: "ZeroDivisionError".into(),
        message: "division by zero".into(),
        text: "Traceback (most recent call last):\n  File \"a.py\", line 3, in <module>\n    1 / 0\nZeroDivisionError: division by zero\n".into(),
        chain: vec!["KeyError: 'x'".into()],
    }
}

#[test]
fn an_exception_fills_exc_info_and_error_chain() {
    let enc = encoder(Profile::Logcollect);
    let r = Record {
        exception: Some(exception()),
        ..record()
    };
    let b = body(&enc, &r);
    assert_eq!(b["exc_info"], exception().text.as_str());
    assert_eq!(b["error_chain"], json!(["KeyError: 'x'"]));
    assert_eq!(b["message"], "hello");
    let none = body(&enc, &record());
    assert!(!none.contains_key("exc_info") && !none.contains_key("error_chain"));
}

#[test]
fn an_exception_fills_error_in_ecs() {
    let r = Record {
        exception: Some(exception()),
        ..record()
    };
    let b = body(&encoder(Profile::Ecs), &r);
    assert_eq!(b["error"]["type"], "ZeroDivisionError");
    assert_eq!(b["error"]["message"], "division by zero");
    assert_eq!(b["error"]["stack_trace"], exception().text.as_str());
}

#[test]
fn nested_values_are_json_with_clean_keys() {
    let enc = encoder(Profile::Logcollect);
    let r = record()
        .field(
            "items",
            FieldValue::Array(vec![
                FieldValue::I64(-1),
                FieldValue::F64(f64::NAN),
                FieldValue::Str("datetime.datetime(2024, 1, 2, 3, 4, 5)".into()),
                FieldValue::Null,
            ]),
        )
        .field(
            "user",
            FieldValue::Object(vec![
                ("@id".into(), FieldValue::U64(7)),
                ("a[b]".into(), FieldValue::Bool(true)),
                ("_meta".into(), FieldValue::Str("m".into())),
                (
                    "host".into(),
                    FieldValue::Str("kept: only top-level keys are ours".into()),
                ),
                ("name".into(), FieldValue::Str("first".into())),
                ("name".into(), FieldValue::Str("second".into())),
            ]),
        );
    let b = body(&enc, &r);
    assert_eq!(
        b["items"],
        json!([-1, "NaN", "datetime.datetime(2024, 1, 2, 3, 4, 5)", null])
    );
    assert_eq!(
        b["user"],
        json!({"at_id": 7, "a_b_": true, "extra__meta": "m",
               "host": "kept: only top-level keys are ours", "name": "first"})
    );
}

#[test]
fn values_nested_too_deep_become_a_string_of_their_json() {
    let enc = encoder(Profile::Logcollect);
    let mut v = FieldValue::Str("bottom".into());
    for _ in 0..200 {
        v = FieldValue::Array(vec![v]);
    }
    let b = body(&enc, &record().field("deep", v));
    // 20 levels of arrays (the field itself is level 1), then a string.
    let mut cur = &b["deep"];
    for _ in 0..MAX_NESTING - 1 {
        cur = &cur.as_array().expect("an array down to the cap")[0];
    }
    let text = cur.as_str().expect("a string below the cap");
    let inner: Value = serde_json::from_str(text).expect("the string holds JSON");
    assert!(inner.is_array());
    assert!(text.contains('…'), "bounded: {} bytes", text.len());
}

#[test]
fn a_nested_fields_type_is_tracked_like_any_other() {
    let enc = encoder(Profile::Logcollect);
    let first = body(
        &enc,
        &record().field("tags_list", FieldValue::Array(vec![])),
    );
    assert_eq!(first["tags_list"], json!([]));
    let second = body(&enc, &record().field("tags_list", "one, two"));
    assert_eq!(second["tags_list_str"], "one, two");
    assert!(!second.contains_key("tags_list"));
}

#[test]
fn nested_values_in_ecs_stay_under_their_key() {
    let enc = encoder(Profile::Ecs);
    let r = record().field(
        "order",
        FieldValue::Object(vec![(
            "lines".into(),
            FieldValue::Array(vec![FieldValue::I64(2)]),
        )]),
    );
    let b = body(&enc, &r);
    assert_eq!(b["order"], json!({"lines": [2]}));
}
