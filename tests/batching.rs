//! Opt-in batching: several records per AMQP message, as one JSON array
//! (Logstash's `json` codec makes an event per element) or as JSON lines.

use std::collections::HashSet;
use std::time::Duration;

use logcollect::{BatchFormat, Level, Record, Shipper};
use logcollect_tests::{config, unique, Capture};

const WAIT: Duration = Duration::from_secs(30);

fn run(format: BatchFormat, tag: &str) {
    let ex = unique(tag);
    let cap = Capture::topic(&ex, "logstash.#");
    let shipper = Shipper::new(
        config(&ex)
            .records_per_message(100)
            .batch_format(format)
            .build()
            .unwrap(),
    )
    .unwrap();
    const N: u64 = 3000;
    for i in 0..N {
        // Two loggers: a message carries one routing key, so they are grouped.
        let logger = if i % 2 == 0 { "app::even" } else { "app::odd" };
        shipper.submit(&Record::new(Level::Info, logger, "batched").field("i", i));
    }
    shipper.flush(WAIT).unwrap();
    let stats = shipper.stats();
    assert_eq!(stats.confirmed, N, "{stats:?}");
    let mut seen = HashSet::new();
    let mut messages = 0u64;
    let mut message_ids = HashSet::new();
    let mut multi = 0;
    while (seen.len() as u64) < N {
        let m = &cap.take(1, WAIT)[0];
        messages += 1;
        let id = m.properties.message_id().as_ref().unwrap().to_string();
        assert!(message_ids.insert(id.clone()), "message ids are unique");
        let records: Vec<serde_json::Value> = match &m.body {
            serde_json::Value::Array(a) => a.clone(),
            one => vec![one.clone()],
        };
        if records.len() > 1 {
            multi += 1;
            assert!(
                records.iter().all(|r| r["record_id"] != id.as_str()),
                "a batch has its own message id"
            );
        }
        if format == BatchFormat::JsonLines {
            assert!(
                m.raw.ends_with(b"\n"),
                "json_lines bodies end with a newline"
            );
        }
        for r in records {
            let i = r["i"].as_u64().unwrap();
            let expected = if i % 2 == 0 {
                "logstash.app.even"
            } else {
                "logstash.app.odd"
            };
            assert_eq!(m.routing_key, expected, "grouped by routing key");
            assert!(seen.insert(i), "record {i} twice");
        }
    }
    assert!(
        multi > 0 && messages < N / 5,
        "records shared messages: {messages} messages"
    );
    assert_eq!(stats.published, messages, "{stats:?}");
    shipper.shutdown(WAIT).unwrap();
}

#[test]
fn json_array_batches_carry_every_record_once() {
    run(BatchFormat::JsonArray, "batch-array");
}

#[test]
fn json_lines_batches_carry_every_record_once() {
    run(BatchFormat::JsonLines, "batch-lines");
}

#[test]
fn json_lines_without_batching_still_ends_each_body_with_a_newline() {
    let ex = unique("batch-lines-one");
    let cap = Capture::topic(&ex, "logstash.#");
    let shipper = Shipper::new(
        config(&ex)
            .batch_format(BatchFormat::JsonLines)
            .build()
            .unwrap(),
    )
    .unwrap();
    shipper.submit(&Record::new(Level::Info, "one", "alone").field("i", 0u64));
    shipper.flush(WAIT).unwrap();
    let m = &cap.take(1, WAIT)[0];
    assert!(
        m.raw.ends_with(b"}\n"),
        "{:?}",
        String::from_utf8_lossy(&m.raw)
    );
    // One line parses as one JSON object (the newline is whitespace).
    assert_eq!(m.body["message"], "alone");
    shipper.shutdown(WAIT).unwrap();
}
