//! The parts of `deploy/` that can be checked without Docker or the Elastic
//! stack: the index template's mappings and settings, and the RabbitMQ
//! configuration the compose file mounts. (The Logstash pipelines are
//! checked against the CLI in crates/logcollect-cli/tests/setup.rs.)

use serde_json::Value;

fn deploy(path: &str) -> String {
    let full = format!("{}/../deploy/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn template() -> Value {
    serde_json::from_str(&deploy("elasticsearch/logcollect-template.json"))
        .expect("the template is JSON")
}

#[test]
fn template_maps_every_fixed_field_and_no_string_as_a_date() {
    let t = template();
    let mappings = &t["template"]["mappings"];
    // A string whose first value looks like a date must not become `date`:
    // every later non-date value would be rejected.
    assert_eq!(mappings["date_detection"], false, "{mappings}");
    let properties = mappings["properties"].as_object().unwrap();
    for field in logcollect::RECORD_FIELDS {
        assert!(properties.contains_key(*field), "{field} not mapped");
    }
    assert_eq!(properties["@timestamp"]["type"], "date");
}

/// Priority 500 beats Logstash's own `logstash` template (200), and an
/// index takes one template's settings: ours must carry Logstash's ILM
/// rollover, or `logstash-*` never rolls over.
#[test]
fn template_carries_logstash_ilm_rollover() {
    let t = template();
    assert_eq!(t["index_patterns"], serde_json::json!(["logstash-*"]));
    assert!(t["priority"].as_u64().unwrap() > 200);
    let settings = &t["template"]["settings"];
    assert_eq!(settings["index.lifecycle.name"], "logstash-policy");
    assert_eq!(settings["index.lifecycle.rollover_alias"], "logstash");
}

/// The rabbitmq image's 10-defaults.conf sets `loopback_users.guest =
/// false`; ours (mounted as 20-logcollect.conf, read after it) restores it,
/// and the compose file publishes nothing beyond localhost.
#[test]
fn guest_stays_on_localhost() {
    let conf = deploy("rabbitmq/rabbitmq.conf");
    let settings: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(
        settings.contains(&"loopback_users.guest = true"),
        "{settings:?}"
    );
    let compose = deploy("compose.yaml");
    assert!(compose.contains("/etc/rabbitmq/conf.d/20-logcollect.conf"));
    let published: Vec<&str> = compose
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("- \"") && l.contains(':'))
        .filter(|l| l[3..].chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    assert!(!published.is_empty());
    for port in published {
        assert!(
            port.starts_with("- \"127.0.0.1:"),
            "published beyond localhost: {port}"
        );
    }
}
