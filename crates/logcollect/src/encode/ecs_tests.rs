//! Tests of the ECS profile: a golden record (exact nested structure and
//! types), the field mapping, nesting and clashes, key guards, ids, errors,
//! the size cap, type stability across records, and property tests of
//! "one valid JSON object under the cap, no dotted keys, no path that is a
//! value in one place and an object in another".

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::super::{Encoder, Location, Profile, TYPE_TRACKING_MAX_KEYS};
use super::*;
use crate::config::{Config, ConfigBuilder};
use crate::record::Record;

const IDENTITY: [(&str, &str); 2] = [("project", "demo"), ("application", "backend")];

// ---------------------------------------------------------------- helpers

fn ecs_config() -> ConfigBuilder {
    Config::builder()
        .host("vm")
        .activity_identity(IDENTITY)
        .profile(Profile::Ecs)
}

fn encoder(b: ConfigBuilder) -> Encoder {
    Encoder::new(&b.build().expect("valid test config").encoder_settings())
}

fn ecs() -> Encoder {
    encoder(ecs_config())
}

/// An ECS encoder that tracks no key types (as when the table is full).
fn untracked() -> Encoder {
    let mut enc = ecs();
    enc.types = TypeTracker::new(0);
    enc
}

fn loc() -> Location<'static> {
    Location::default()
}

/// Panics if any object of the JSON text holds a key twice (serde_json
/// silently keeps the last). `text` must be valid JSON.
fn assert_no_duplicate_keys(text: &str) {
    let b = text.as_bytes();
    // One entry per open container: `Some(keys)` for an object.
    let mut stack: Vec<Option<HashSet<String>>> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => {
                stack.push(Some(HashSet::new()));
                expect_key = true;
            }
            b'[' => {
                stack.push(None);
                expect_key = false;
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
            }
            b',' => expect_key = matches!(stack.last(), Some(Some(_))),
            b'"' => {
                let start = i;
                i += 1;
                while b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if expect_key {
                    let key: String = serde_json::from_str(&text[start..=i]).unwrap();
                    let set = stack.last_mut().unwrap().as_mut().unwrap();
                    assert!(set.insert(key.clone()), "key {key:?} twice in {text}");
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// Parses a body: UTF-8, exactly one JSON object, no key twice at any level.
fn parse(body: &[u8]) -> Map<String, Value> {
    let text = std::str::from_utf8(body).expect("body is UTF-8");
    let v: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("body is not one JSON value ({e}): {text}"));
    assert_no_duplicate_keys(text);
    match v {
        Value::Object(m) => m,
        _ => panic!("body is not a JSON object: {text}"),
    }
}

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

/// Every `(dotted path, type)` of a document, objects included.
fn paths(prefix: &str, m: &Map<String, Value>, out: &mut Vec<(String, &'static str)>) {
    for (k, v) in m {
        let p = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        out.push((p.clone(), kind(v)));
        if let Value::Object(inner) = v {
            paths(&p, inner, out);
        }
    }
}

/// Every key of a document at any depth.
fn all_keys(m: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(m: &Map<String, Value>, out: &mut Vec<String>) {
        for (k, v) in m {
            out.push(k.clone());
            if let Value::Object(inner) = v {
                walk(inner, out);
            }
        }
    }
    walk(m, &mut out);
    out
}

use crate::encode::tests::chain;

fn one(enc: &Encoder, fields: impl FnOnce(&mut RecordWriter<'_>)) -> Map<String, Value> {
    let mut w = enc.begin(Level::Info, "t", loc()).expect("not re-entrant");
    w.message_str("m");
    fields(&mut w);
    parse(&w.finish().body)
}

// ------------------------------------------------------------ 1. golden

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A representative record, compared whole: every field, its nesting, its
/// value and its JSON type (serde_json tells `1` from `1.0`). Only the
/// timestamp, the record id, the pid, the thread name and `seq` vary; they
/// are checked for shape and then put into the expected document.
#[test]
fn golden_ecs_representative_record() {
    let enc = encoder(ecs_config().tags(["blue"]));
    let l = Location {
        file: Some("src/db.rs"),
        line: Some(42),
        module: Some("app::db"),
    };
    let mut w = enc.begin(Level::Warning, "app::db", l).unwrap();
    w.message_fmt(format_args!("query took {} s", 1.5));
    w.str("user.id", "u1");
    w.u64("db.rows", 3);
    w.f64("db.ratio", 0.5);
    w.bool("db.cached", false);
    w.null("db.note");
    w.str("host", "other-host");
    w.str("message", "user message");
    w.str("@meta", "x");
    w.str("_id", "i");
    w.error("error", &chain(&["query failed", "connection reset"]));
    w.raw("request_id", "\"req-1\"");
    w.raw("traceparent", &format!("\"{TRACEPARENT}\""));
    w.raw("correlation_id", "\"order-42\"");
    let out = w.finish();
    let text = std::str::from_utf8(&out.body).unwrap().to_owned();
    println!("ECS golden record: {text}");
    let ob = parse(&out.body);

    let ts = ob["@timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 27, "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    let seq = ob["event"]["sequence"].as_u64().unwrap();
    assert!((1..=1000).contains(&seq));
    let thread = ob["process"]["thread"]["name"].as_str().unwrap();
    assert!(
        thread.contains("golden_ecs_representative_record"),
        "{thread}"
    );
    let expected = json!({
        "@timestamp": ts,
        "log": {
            "level": "warn",
            "logger": "app::db",
            "origin": {"file": {"name": "src/db.rs", "line": 42}}
        },
        "ecs": {"version": "8.11.0"},
        "host": {"hostname": "vm", "name": "vm"},
        "service": {"name": "backend"},
        "labels": {"project": "demo"},
        "data_stream": {"dataset": "backend.log"},
        "tags": ["blue"],
        "event": {
            "dataset": "backend.log",
            "sequence": seq,
            "id": out.id.hyphenated().to_string()
        },
        "process": {"pid": std::process::id(), "thread": {"name": thread}},
        "message": "query took 1.5 s",
        "error": {
            "type": "error",
            "message": "query failed",
            "stack_trace": "query failed\nCaused by: connection reset"
        },
        "trace": {"id": "4bf92f3577b34da6a3ce929d0e0e4736"},
        "span": {"id": "00f067aa0ba902b7"},
        "http": {"request": {"id": "req-1"}},
        "db": {"rows": 3, "ratio": 0.5, "cached": false, "note": null},
        "extra": {"user": {"id": "u1"}, "host": "other-host", "message": "user message"},
        "at_meta": "x",
        "extra__id": "i",
        "correlation_id": "order-42"
    });
    assert_eq!(Value::Object(ob.clone()), expected, "{text}");
    // The types Elasticsearch maps, spelled out.
    let mut p = Vec::new();
    paths("", &ob, &mut p);
    let types: HashMap<_, _> = p.into_iter().collect();
    for (path, t) in [
        ("@timestamp", "string"),
        ("log", "object"),
        ("log.level", "string"),
        ("log.origin.file.line", "int"),
        ("host", "object"),
        ("process.pid", "int"),
        ("event.sequence", "int"),
        ("event.id", "string"),
        ("error", "object"),
        ("tags", "array"),
        ("db.rows", "int"),
        ("db.ratio", "float"),
        ("db.cached", "bool"),
        ("db.note", "null"),
    ] {
        assert_eq!(types[path], t, "{path}");
    }
    assert!(!out.truncated);
    assert_eq!(out.routing_key, "logstash.app.db");
}

#[test]
fn levels_are_lowercase_ecs_names() {
    let enc = ecs();
    for (level, name) in [
        (Level::Trace, "trace"),
        (Level::Debug, "debug"),
        (Level::Info, "info"),
        (Level::Warning, "warn"),
        (Level::Error, "error"),
        (Level::Critical, "critical"),
    ] {
        let out = enc.encode_record(&Record::new(level, "t", "m")).unwrap();
        assert_eq!(parse(&out.body)["log"]["level"], name);
    }
}

#[test]
fn root_logger_no_location_and_routing_key_as_the_default_profile() {
    let enc = ecs();
    let out = enc
        .encode_record(&Record::new(Level::Info, "", "m"))
        .unwrap();
    let ob = parse(&out.body);
    assert_eq!(ob["log"], json!({"level": "info", "logger": "root"}));
    assert_eq!(out.routing_key, "logstash.root");
    let plain = encoder(Config::builder());
    assert_eq!(
        enc.routing_key("app::db::pool"),
        plain.routing_key("app::db::pool")
    );
    let mut w = enc
        .begin(
            Level::Info,
            "t",
            Location {
                line: Some(7),
                ..Location::default()
            },
        )
        .unwrap();
    w.message_str("m");
    let ob = parse(&w.finish().body);
    assert_eq!(ob["log"]["origin"], json!({"file": {"line": 7}}));
}

#[test]
fn record_id_is_event_id_and_message_id() {
    let enc = ecs();
    let out = enc
        .encode_record(&Record::new(Level::Info, "t", "m"))
        .unwrap();
    assert_eq!(out.id.get_version_num(), 7);
    assert_eq!(
        parse(&out.body)["event"]["id"],
        out.id.hyphenated().to_string()
    );
}

// ------------------------------------------------------- 2. identity

#[test]
fn identity_gives_service_name_dataset_and_labels() {
    let enc = encoder(
        ecs_config()
            .activity_identity([
                ("project", "demo"),
                ("app", "billing"),
                ("team.name", "core"),
                ("team_name", "dup"),
                ("_x", "y"),
            ])
            .ecs_service_key("app"),
    );
    let ob = one(&enc, |_| {});
    assert_eq!(ob["service"], json!({"name": "billing"}));
    assert_eq!(ob["event"]["dataset"], "billing.log");
    assert_eq!(
        ob["labels"],
        json!({"project": "demo", "team_name": "core", "extra__x": "y"})
    );
}

#[test]
fn no_service_key_in_identity_means_no_service_and_no_dataset() {
    let enc = encoder(ecs_config().activity_identity([("project", "demo")]));
    let ob = one(&enc, |_| {});
    assert!(!ob.contains_key("service"));
    assert!(!ob["event"].as_object().unwrap().contains_key("dataset"));
    assert!(!ob.contains_key("data_stream"));
    let enc = encoder(ecs_config().activity_identity(Vec::<(String, String)>::new()));
    let ob = one(&enc, |_| {});
    assert!(!ob.contains_key("labels"));
    assert!(!ob.contains_key("service"));
}

#[test]
fn logcollect_only_settings_are_not_sent() {
    let enc = encoder(ecs_config().type_name("custom"));
    let mut w = enc
        .begin(
            Level::Info,
            "t",
            Location {
                module: Some("app::m"),
                ..Location::default()
            },
        )
        .unwrap();
    w.message_str("m");
    let body = w.finish().body;
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        !text.contains("custom") && !text.contains("app::m"),
        "{text}"
    );
    for k in [
        "@version",
        "type",
        "levelname",
        "record_id",
        "seq",
        "stack_info",
    ] {
        assert!(!parse(&body).contains_key(k), "{k}");
    }
}

// -------------------------------------------- 3. nesting and key guards

#[test]
fn dotted_keys_become_nested_objects() {
    let ob = one(&ecs(), |w| {
        w.str("req.path", "/a");
        w.i64("req.port", 80);
        w.str("a..b", "double dot");
        w.str(".lead", "lead");
        w.str("trail.", "trail");
        w.str("...", "dots");
        w.str("x.y.z", "deep");
    });
    assert_eq!(ob["req"], json!({"path": "/a", "port": 80}));
    assert_eq!(ob["a"], json!({"b": "double dot"}));
    assert_eq!(ob["lead"], "lead");
    assert_eq!(ob["trail"], "trail");
    assert_eq!(ob["empty_key"], "dots");
    assert_eq!(ob["x"], json!({"y": {"z": "deep"}}));
}

#[test]
fn paths_deeper_than_ten_parts_are_joined() {
    let ob = one(&ecs(), |w| w.str("a.b.c.d.e.f.g.h.i.j.k.l", "v"));
    assert_eq!(
        ob["a"],
        json!({"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j_k_l": "v"}}}}}}}}})
    );
}

#[test]
fn key_guards_apply_to_every_part() {
    let ob = one(&ecs(), |w| {
        w.str("@foo", "1");
        w.str("_id", "2");
        w.str("a[b]", "3");
        w.str("x.@y", "4");
        w.str("x._z", "5");
        w.str("[m][n]", "6");
        w.str("", "7");
    });
    assert_eq!(ob["at_foo"], "1");
    assert_eq!(ob["extra__id"], "2");
    assert_eq!(ob["a_b_"], "3");
    assert_eq!(ob["x"], json!({"at_y": "4", "extra__z": "5"}));
    assert_eq!(ob["extra__m__n_"], "6");
    assert_eq!(ob["empty_key"], "7");
    for k in all_keys(&ob) {
        assert!(!k.contains(['[', ']', '.']), "{k}");
    }
}

/// Every root of ECS 8.11: the first part (before the first `.`) of every
/// key of `generated/ecs/ecs_flat.yml` in elastic/ecs at tag v8.11.0,
/// without duplicates. To check it against another ECS version:
/// `git show v8.11.0:generated/ecs/ecs_flat.yml | grep -E '^[^ ]' | tr -d "':" | cut -d. -f1 | sort -u`
/// in a clone of elastic/ecs.
const ECS_8_11_ROOTS: [&str; 44] = [
    "@timestamp",
    "agent",
    "client",
    "cloud",
    "container",
    "data_stream",
    "destination",
    "device",
    "dll",
    "dns",
    "ecs",
    "email",
    "error",
    "event",
    "faas",
    "file",
    "group",
    "host",
    "http",
    "labels",
    "log",
    "message",
    "network",
    "observer",
    "orchestrator",
    "organization",
    "package",
    "process",
    "registry",
    "related",
    "rule",
    "server",
    "service",
    "source",
    "span",
    "tags",
    "threat",
    "tls",
    "trace",
    "transaction",
    "url",
    "user",
    "user_agent",
    "vulnerability",
];

#[test]
fn reserved_roots_are_every_ecs_8_11_root_and_ours() {
    let reserved: HashSet<&str> = ECS_RESERVED_ROOTS.iter().copied().collect();
    let ecs: HashSet<&str> = ECS_8_11_ROOTS.iter().copied().collect();
    assert_eq!(ecs.len(), 44);
    let missing: Vec<_> = ecs.difference(&reserved).collect();
    assert!(
        missing.is_empty(),
        "ECS roots a user field may still take: {missing:?}"
    );
    let ours: Vec<_> = reserved.difference(&ecs).collect();
    assert_eq!(
        ours,
        [&"logcollect"],
        "roots that are neither ECS's nor ours"
    );
    assert_eq!(ECS_RESERVED_ROOTS.len(), reserved.len(), "listed twice");
}

/// The README's own example shipped `"user":"ann"`, a keyword where ECS
/// maps the object `user`: every such field lands under `extra`.
#[test]
fn user_fields_never_take_an_ecs_root() {
    let ob = one(&ecs(), |w| {
        w.str("user", "ann");
        w.i64("url", 3);
        w.str("source", "cron");
        w.str("file", "/tmp/x");
        w.str("user_agent.name", "curl");
        w.bool("threat", true);
        w.str("order", "kept at the top");
    });
    for root in ECS_8_11_ROOTS {
        if let Some(v) = ob.get(root) {
            assert!(
                !v.is_string() || ["@timestamp", "message"].contains(&root),
                "{root} is {v}"
            );
        }
    }
    assert_eq!(
        ob["extra"],
        json!({"user": "ann", "url": 3, "source": "cron", "file": "/tmp/x",
               "user_agent": {"name": "curl"}, "threat": true})
    );
    assert_eq!(ob["order"], "kept at the top");
}

#[test]
fn datasets_are_valid_data_stream_names() {
    assert_eq!(dataset("backend").as_deref(), Some("backend.log"));
    assert_eq!(dataset("My-App").as_deref(), Some("my_app.log"));
    assert_eq!(
        dataset("a b/c\\d*e?f\"g<h>i|j,k#l:m\tn").as_deref(),
        Some("a_b_c_d_e_f_g_h_i_j_k_l_m_n.log")
    );
    assert_eq!(dataset(""), None);
    let long = dataset(&"é".repeat(80)).unwrap();
    assert!(long.len() <= 100 && long.ends_with(".log"), "{long}");
    assert_eq!(long.len(), 96 + 4, "cut on a character boundary");
    // The record says it twice, as ECS asks (`event.dataset` equal to
    // `data_stream.dataset`), so Logstash routes it to logs-<dataset>-default.
    let enc = encoder(ecs_config().activity_identity([("application", "Billing-API")]));
    let ob = one(&enc, |_| {});
    assert_eq!(ob["data_stream"], json!({"dataset": "billing_api.log"}));
    assert_eq!(ob["event"]["dataset"], "billing_api.log");
    assert_eq!(ob["service"]["name"], "Billing-API");
}

#[test]
fn fields_under_our_roots_go_under_the_extra_prefix() {
    for (b, prefix) in [
        (ecs_config(), vec!["extra"]),
        (ecs_config().ecs_extra_prefix("app.x"), vec!["app", "x"]),
    ] {
        let enc = encoder(b);
        let ob = one(&enc, |w| {
            for root in ECS_RESERVED_ROOTS.iter().filter(|r| !r.starts_with('@')) {
                w.str(root, &format!("user-{root}"));
            }
            w.str("log.level", "nested");
            w.str("@timestamp", "ts");
        });
        let mut extra = &ob[prefix[0]];
        for p in &prefix[1..] {
            extra = &extra[*p];
        }
        for root in ECS_RESERVED_ROOTS {
            // `log` is checked below; `@timestamp` becomes `at_timestamp`.
            if *root == "log" || root.starts_with('@') {
                continue;
            }
            assert_eq!(extra[*root], format!("user-{root}"), "{root}");
        }
        // `log` = "user-log" first, then `log.level`: one value, one object.
        assert_eq!(extra["log_obj"], json!({"level": "nested"}));
        assert_eq!(extra["log"], "user-log");
        assert_eq!(ob["at_timestamp"], "ts");
        assert_eq!(ob["log"]["level"], "info");
        assert_eq!(ob["message"], "m");
        assert_eq!(ob["tags"], json!([]));
        assert_eq!(ob["host"]["hostname"], "vm");
    }
}

#[test]
fn duplicate_paths_keep_the_first_value_before_type_renames() {
    let ob = one(&ecs(), |w| {
        w.str("k", "first");
        w.i64("k", 2);
        w.str("a.b", "x");
        w.i64("a..b", 3);
        w.null("n");
        w.bool("n", true);
    });
    assert_eq!(ob["k"], "first");
    assert!(!ob.contains_key("k_num"));
    assert_eq!(ob["a"], json!({"b": "x"}));
    assert_eq!(ob["n"], Value::Null);
}

// ------------------------------------------- 4. leaf/object clashes

#[test]
fn value_and_object_at_one_path_are_split_by_the_type_rule() {
    let enc = ecs();
    let ob = one(&enc, |w| {
        w.i64("a", 1);
        w.i64("a.b", 2);
    });
    assert_eq!(ob["a"], 1);
    assert_eq!(ob["a_obj"], json!({"b": 2}));
    // Consistently in later records, whatever the order.
    let ob = one(&enc, |w| {
        w.i64("a.b", 5);
        w.i64("a", 4);
    });
    assert_eq!(ob["a"], 4);
    assert_eq!(ob["a_obj"], json!({"b": 5}));
    // Object first in another encoder: the value is renamed.
    let enc = ecs();
    let ob = one(&enc, |w| {
        w.i64("a.b", 2);
        w.i64("a", 1);
    });
    assert_eq!(ob["a"], json!({"b": 2}));
    assert_eq!(ob["a_num"], 1);
}

#[test]
fn untracked_clash_keeps_the_object_and_moves_the_value_to_value() {
    let enc = untracked();
    for order in [true, false] {
        let ob = one(&enc, |w| {
            if order {
                w.i64("a", 1);
                w.i64("a.b", 2);
            } else {
                w.i64("a.b", 2);
                w.i64("a", 1);
            }
        });
        assert_eq!(ob["a"], json!({"b": 2, "value": 1}), "order {order}");
    }
    // `a.value` already taken by the user: the first value stays.
    let ob = one(&enc, |w| {
        w.str("a.value", "mine");
        w.i64("a", 1);
    });
    assert_eq!(ob["a"], json!({"value": "mine"}));
    // `a.value` an object: the value goes one level down.
    let ob = one(&enc, |w| {
        w.i64("a.value.x", 1);
        w.i64("a", 2);
    });
    assert_eq!(ob["a"], json!({"value": {"x": 1, "value": 2}}));
    // A raw object value meeting a dotted field.
    let ob = one(&enc, |w| {
        w.raw("o", r#"{"k":"v"}"#);
        w.i64("o.n", 1);
    });
    assert_eq!(ob["o"], json!({"value": {"k": "v"}, "n": 1}));
}

// ----------------------------------------------------- 5. ids and errors

#[test]
fn trace_span_and_request_ids() {
    let enc = ecs();
    // Explicit fields win over the traceparent, whatever the order.
    let ob = one(&enc, |w| {
        w.str("traceparent", TRACEPARENT);
        w.str("trace_id", "t1");
        w.str("request_id", "r1");
        w.str("request_id", "r2");
    });
    assert_eq!(ob["trace"], json!({"id": "t1"}));
    assert_eq!(ob["span"], json!({"id": "00f067aa0ba902b7"}));
    assert_eq!(ob["http"], json!({"request": {"id": "r1"}}));
    for k in ["traceparent", "trace_id", "request_id", "extra"] {
        assert!(!ob.contains_key(k), "{k}");
    }
    // Numbers are quoted (ECS ids are keywords).
    let ob = one(&enc, |w| {
        w.u64("span_id", 17);
        w.i64("request_id", -3);
    });
    assert_eq!(ob["span"]["id"], "17");
    assert_eq!(ob["http"]["request"]["id"], "-3");
    // Invalid traceparent, non-string ids, empty and huge ids stay fields.
    let long = "x".repeat(300);
    let ob = one(&enc, |w| {
        w.str("traceparent", "00-zz-00f067aa0ba902b7-01");
        w.bool("trace_id", true);
        w.str("span_id", "");
        w.str("request_id", &long);
    });
    assert!(!ob.contains_key("trace") && !ob.contains_key("span"));
    assert!(!ob.contains_key("http"));
    assert_eq!(ob["traceparent"], "00-zz-00f067aa0ba902b7-01");
    assert_eq!(ob["trace_id"], true);
    assert_eq!(ob["span_id"], "");
    assert_eq!(ob["request_id"], long);
}

#[test]
fn first_error_fills_error_later_ones_are_fields() {
    let enc = ecs();
    let ob = one(&enc, |w| {
        w.error("db_error", &chain(&["top", "mid", "root"]));
        w.error("error", &chain(&["second"]));
        w.error("other", &chain(&["third"]));
    });
    assert_eq!(
        ob["error"],
        json!({"type": "db_error", "message": "top",
               "stack_trace": "top\nCaused by: mid\nCaused by: root"})
    );
    assert!(!ob.contains_key("db_error"));
    assert_eq!(ob["extra"]["error"], "second");
    assert_eq!(ob["other"], "third");
    // No source: the stack trace is the message. The next record is clean.
    let ob = one(&enc, |w| w.error("e", &chain(&["alone"])));
    assert_eq!(
        ob["error"],
        json!({"type": "e", "message": "alone", "stack_trace": "alone"})
    );
    assert!(!one(&enc, |_| {}).contains_key("error"));
}

// ------------------------------------------------------ 6. values

#[test]
fn non_finite_floats_wide_integers_and_invalid_utf8() {
    let ob = one(&ecs(), |w| {
        w.f64("f.nan", f64::NAN);
        w.f64("f.inf", f64::INFINITY);
        w.f64("f.ninf", f64::NEG_INFINITY);
        w.f64("f.ok", 3.0);
        w.i128("wide", i128::MAX);
        w.u64("big", u64::MAX);
        w.str("bytes", &String::from_utf8_lossy(b"a\xffb"));
    });
    assert_eq!(
        ob["f"],
        json!({"nan": "NaN", "inf": "Infinity", "ninf": "-Infinity", "ok": 3.0})
    );
    assert_eq!(kind(&ob["f"]["ok"]), "float");
    assert_eq!(ob["wide"], i128::MAX.to_string());
    assert_eq!(ob["big"], u64::MAX);
    assert_eq!(ob["bytes"], "a\u{fffd}b");
}

#[test]
fn message_and_values_round_trip_control_and_unicode() {
    let nasty = "Привет \u{0} \n \" \\ \u{7f} \u{1F600} \u{2028}";
    let enc = ecs();
    let mut w = enc.begin(Level::Info, nasty, loc()).unwrap();
    w.message_str(nasty);
    w.str(nasty, nasty);
    let ob = parse(&w.finish().body);
    assert_eq!(ob["message"], nasty);
    assert_eq!(ob["log"]["logger"], nasty);
    // The key is split at its dots (none here) and kept.
    assert_eq!(ob[nasty], nasty);
}

// ------------------------------------------------------- 7. size cap

#[test]
fn ten_megabyte_message_is_truncated_under_the_cap_with_the_marker() {
    let cap = 4096;
    let enc = encoder(ecs_config().max_record_bytes(cap));
    let big = "é".repeat(5 << 20);
    let mut w = enc.begin(Level::Error, "t", loc()).unwrap();
    w.message_str(&big);
    w.str("small", "kept");
    w.str("request_id", "r1");
    w.error("error", &chain(&["boom", "root"]));
    let out = w.finish();
    assert!(out.truncated);
    assert!(out.body.len() <= cap, "{}", out.body.len());
    let ob = parse(&out.body);
    assert_eq!(ob["logcollect"]["truncated"], true);
    assert!(ob["logcollect"]["original_bytes"].as_u64().unwrap() > 10 << 20);
    assert_eq!(ob["logcollect"]["dropped_fields"], 0);
    assert!(ob["message"].as_str().unwrap().ends_with("…[truncated]"));
    assert_eq!(ob["small"], "kept");
    assert_eq!(ob["http"]["request"]["id"], "r1");
    assert_eq!(ob["error"]["message"], "boom");
    assert_eq!(ob["log"]["level"], "error");
    assert_eq!(ob["labels"]["project"], "demo");
    assert_eq!(ob["event"]["id"], out.id.hyphenated().to_string());
}

#[test]
fn many_big_fields_are_dropped_and_counted() {
    let cap = 8192;
    let enc = encoder(ecs_config().max_record_bytes(cap));
    let v = "v".repeat(1000);
    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    w.message_str("short");
    for i in 0..30 {
        w.str(&format!("batch.f{i:02}"), &v);
    }
    let out = w.finish();
    assert!(out.truncated && out.body.len() <= cap);
    let ob = parse(&out.body);
    let kept = ob["batch"].as_object().map_or(0, Map::len);
    let dropped = ob["logcollect"]["dropped_fields"].as_u64().unwrap();
    assert!(kept > 0 && dropped > 0, "{kept} kept, {dropped} dropped");
    assert_eq!(kept as u64 + dropped, 30);
    assert_eq!(ob["message"], "short");
    // The kept ones are the first ones, in order.
    let keys: Vec<_> = ob["batch"].as_object().unwrap().keys().cloned().collect();
    let want: Vec<_> = (0..kept).map(|i| format!("f{i:02}")).collect();
    assert_eq!(keys, want);
}

#[test]
fn huge_error_is_cut_under_the_cap() {
    let cap = 4096;
    let enc = encoder(ecs_config().max_record_bytes(cap));
    let huge = "e\"\n".repeat(100_000);
    let mut w = enc.begin(Level::Error, "t", loc()).unwrap();
    w.message_str("m");
    w.error("error", &chain(&[&huge, &huge]));
    let out = w.finish();
    assert!(out.truncated && out.body.len() <= cap, "{}", out.body.len());
    let ob = parse(&out.body);
    let msg = ob["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("e\"\ne\"\n") && msg.ends_with("…[truncated]"));
    assert_eq!(ob["message"], "m");
}

#[test]
fn record_under_the_cap_is_whole_and_over_it_is_truncated() {
    let cap = 4096;
    let enc = encoder(ecs_config().max_record_bytes(cap));
    let probe = enc
        .encode_record(&Record::new(Level::Info, "t", ""))
        .unwrap()
        .body
        .len();
    // `event.sequence` may take one more digit in the next record.
    let fill = cap - probe - 4;
    let out = enc
        .encode_record(&Record::new(Level::Info, "t", "x".repeat(fill)))
        .unwrap();
    assert!(!out.truncated && out.body.len() <= cap);
    let out = enc
        .encode_record(&Record::new(Level::Info, "t", "x".repeat(cap)))
        .unwrap();
    assert!(out.truncated && out.body.len() <= cap);
}

// ------------------------------------------------------ 8. re-entrancy

#[test]
fn begin_returns_none_while_a_writer_is_alive_on_this_thread() {
    let enc = ecs();
    let plain = encoder(Config::builder());
    let w = enc.begin(Level::Info, "t", loc()).unwrap();
    assert!(enc.begin(Level::Info, "t", loc()).is_none());
    assert!(plain.begin(Level::Info, "t", loc()).is_none());
    drop(w);
    let mut w = enc.begin(Level::Info, "t", loc()).unwrap();
    w.message_str("after");
    assert_eq!(parse(&w.finish().body)["message"], "after");
}

// ------------------------------------------------ 9. type stability

#[test]
fn type_changes_across_records_are_renamed_consistently() {
    let enc = ecs();
    let a = one(&enc, |w| {
        w.i64("count", 3);
        w.str("db.table", "users");
        w.null("maybe");
    });
    let b = one(&enc, |w| {
        w.str("count", "many");
        w.i64("db.table", 7);
        w.str("maybe", "now a string");
    });
    let c = one(&enc, |w| {
        w.f64("count", 2.5);
        w.str("count_str", "explicit");
        w.i64("db", 1);
        w.i64("maybe", 1);
    });
    assert_eq!(a["count"], 3);
    assert_eq!(a["db"], json!({"table": "users"}));
    assert_eq!(b["count_str"], "many");
    assert_eq!(b["db"], json!({"table_num": 7}));
    assert_eq!(b["maybe"], "now a string", "null fixes no type");
    assert_eq!(c["count"], 2.5, "ints and floats are one type");
    assert_eq!(c["count_str"], "explicit");
    assert_eq!(c["db_num"], 1);
    assert_eq!(c["maybe_num"], 1);
    // Another encoder (another shipper) has its own memory.
    let other = ecs();
    assert_eq!(one(&other, |w| w.str("count", "x"))["count"], "x");
}

#[test]
fn tracking_is_bounded() {
    let enc = ecs();
    enc.types
        .len
        .store(TYPE_TRACKING_MAX_KEYS, std::sync::atomic::Ordering::Relaxed);
    one(&enc, |w| w.i64("fresh", 1));
    let ob = one(&enc, |w| w.str("fresh", "x"));
    assert_eq!(ob["fresh"], "x", "untracked keys are written as they come");
}

#[test]
fn special_fields_are_not_type_tracked_when_taken() {
    let enc = ecs();
    one(&enc, |w| w.str("request_id", "r1"));
    let ob = one(&enc, |w| w.bool("request_id", true));
    assert_eq!(ob["request_id"], true);
}

// ------------------------------------------------ 10. property tests

#[derive(Debug, Clone)]
enum V {
    S(String),
    I(i64),
    U(u64),
    F(f64),
    B(bool),
    N,
}

fn chars(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

const SPECIAL: &[&str] = &[
    "host",
    "log",
    "log.level",
    "message",
    "error",
    "error.message",
    "event",
    "labels",
    "tags",
    "extra",
    "extra.host",
    "logcollect",
    "data_stream",
    "@timestamp",
    "@version",
    "_id",
    "a[b]",
    "",
    ".",
    "..",
    "a.",
    ".a",
    "value",
    "a.value",
    "trace_id",
    "span_id",
    "request_id",
    "traceparent",
    "http.request.id",
    "a_num",
    "a_obj",
    "a_str",
];

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => chars(12),
        3 => prop::sample::select(SPECIAL).prop_map(str::to_owned),
        4 => "[ab]{1,2}(\\.[ab]{1,2}){0,3}",
        1 => "[@_\\[\\]a-b.\\x00-\\x1f]{0,6}",
    ]
}

fn value_strategy() -> impl Strategy<Value = V> {
    prop_oneof![
        3 => chars(30).prop_map(V::S),
        1 => ".{0,1500}".prop_map(V::S),
        2 => any::<i64>().prop_map(V::I),
        1 => any::<u64>().prop_map(V::U),
        2 => prop::num::f64::ANY.prop_map(V::F),
        1 => any::<bool>().prop_map(V::B),
        1 => Just(V::N),
        1 => Just(V::S(TRACEPARENT.to_owned())),
    ]
}

type Fields = Vec<(String, V)>;

fn record_strategy() -> impl Strategy<Value = (String, String, Fields, bool)> {
    (
        chars(30),
        prop_oneof![4 => chars(60), 1 => ".{0,6000}"],
        prop::collection::vec((key_strategy(), value_strategy()), 0..30),
        any::<bool>(),
    )
}

/// Encodes `records` with one encoder and checks every body and, across
/// them, that every path keeps one type.
fn check_records(enc: &Encoder, cap: usize, records: &[(String, String, Fields, bool)]) {
    let mut types: HashMap<String, &'static str> = HashMap::new();
    for (logger, message, fields, error) in records {
        let mut w = enc
            .begin(Level::Info, logger, loc())
            .expect("not re-entrant");
        w.message_str(message);
        for (k, v) in fields {
            match v {
                V::S(s) => w.str(k, s),
                V::I(i) => w.i64(k, *i),
                V::U(u) => w.u64(k, *u),
                V::F(f) => w.f64(k, *f),
                V::B(b) => w.bool(k, *b),
                V::N => w.null(k),
            }
        }
        if *error {
            w.error("error", &chain(&["top", "root"]));
        }
        let out = w.finish();
        assert!(out.body.len() <= cap, "{} > {cap}", out.body.len());
        let ob = parse(&out.body);
        // Our fields, with their types.
        assert_eq!(ob["ecs"]["version"], ECS_VERSION);
        assert_eq!(ob["log"]["level"], "info");
        let name = if logger.is_empty() { "root" } else { logger };
        assert_eq!(ob["log"]["logger"], name);
        assert_eq!(ob["host"]["hostname"], "vm");
        assert_eq!(kind(&ob["process"]["pid"]), "int");
        assert_eq!(kind(&ob["event"]["sequence"]), "int");
        assert_eq!(ob["event"]["id"], out.id.hyphenated().to_string());
        assert_eq!(ob["service"]["name"], "backend");
        assert_eq!(ob["labels"], json!({"project": "demo"}));
        assert_eq!(kind(&ob["message"]), "string");
        assert_eq!(out.truncated, ob.contains_key("logcollect"));
        if out.truncated {
            assert_eq!(ob["logcollect"]["truncated"], true);
            assert!(ob["logcollect"]["original_bytes"].as_u64().unwrap() > cap as u64);
        } else {
            assert_eq!(ob["message"], message.as_str());
            if *error {
                assert_eq!(ob["error"]["stack_trace"], "top\nCaused by: root");
            }
        }
        // Keys: no dots, no Logstash field references, no `_` or `@` roots.
        for k in all_keys(&ob) {
            assert!(!k.contains(['.', '[', ']']), "key {k:?}");
        }
        for k in ob.keys() {
            assert!(!k.starts_with('_'), "key {k:?}");
            assert!(!k.starts_with('@') || k == "@timestamp", "key {k:?}");
        }
        // One type per path across every record of the encoder.
        let mut p = Vec::new();
        paths("", &ob, &mut p);
        for (path, t) in p {
            if t == "null" {
                continue;
            }
            let t = if t == "float" { "int" } else { t }; // one `num` type
            let first = *types.entry(path.clone()).or_insert(t);
            assert_eq!(first, t, "{path} was {first}, now {t}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_ecs_records_are_one_capped_object_without_dots_or_type_clashes(
        records in prop::collection::vec(record_strategy(), 1..5),
    ) {
        let enc = encoder(ecs_config().max_record_bytes(4096));
        check_records(&enc, 4096, &records);
    }

    #[test]
    fn prop_ecs_default_cap_keeps_plain_values(
        records in prop::collection::vec(record_strategy(), 1..4),
    ) {
        let enc = ecs();
        check_records(&enc, crate::config::DEFAULT_MAX_RECORD_BYTES, &records);
    }

    #[test]
    fn prop_untracked_ecs_records_have_no_leaf_object_clash(
        records in prop::collection::vec(record_strategy(), 1..2),
    ) {
        // Without type memory, one record on its own must still be clean
        // (the `.value` rule); `check_records` on a single record.
        for r in &records {
            let enc = untracked();
            check_records(&enc, crate::config::DEFAULT_MAX_RECORD_BYTES, std::slice::from_ref(r));
        }
    }
}
