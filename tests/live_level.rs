//! A level handle changes what both front-ends ship while the program runs.
//! `boot::default_config` installs them globally, so this file is its own
//! process.

use std::time::Duration;

use logcollect_tests::{config, unique, Capture};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_level_raised_then_lowered_takes_effect_on_the_next_call() {
    let ex = unique("levels");
    let cap = Capture::topic(&ex, "logstash.#");
    let guard =
        logcollect::boot::default_config(config(&ex).level("info").build().unwrap()).unwrap();
    let levels = guard.level_handle();

    // The same call sites before and after each change: their cached
    // interest must follow the new levels.
    let emit = |step: u64| {
        tracing::debug!(target: "app::web", step, "tracing debug");
        log::debug!(target: "app::web", step = step + 1; "log debug");
        tracing::info!(target: "app::web", step = step + 2, "tracing info");
        log::info!(target: "app::web", step = step + 3; "log info");
        tracing::trace!(target: "app::db", step = step + 4, "tracing trace");
    };
    emit(100); // info: the two info records
    levels.set("debug").unwrap();
    emit(200); // debug: all but the trace record
    levels.set("warning").unwrap();
    emit(300); // warning: nothing
    levels.set("info,app::db=trace").unwrap();
    emit(400); // info, and trace for app::db
    assert!(
        levels.set("verbose").is_err(),
        "a misspelt level is an error"
    );
    assert_eq!(
        levels.get().to_string(),
        "info,app::db=trace",
        "and changes nothing"
    );
    emit(500);

    // Spans: a debug span at level info is rejected by its call site's
    // interest (not created, so the warning inside it carries none of its
    // fields); raising the level re-enables the same call site.
    let in_span = |step: u64| {
        let span = tracing::debug_span!(target: "app::web", "handler", span_step = step);
        let _entered = span.enter();
        tracing::warn!(target: "app::web", step, "inside a debug span");
        span.is_disabled()
    };
    levels.set("info").unwrap();
    assert!(in_span(600), "a debug span at level info is disabled");
    levels.set("debug").unwrap();
    assert!(!in_span(700), "and enabled once the level is raised");
    levels.set("info").unwrap();
    assert!(in_span(800));

    guard.shipper().flush(WAIT).unwrap();
    let messages = cap.drain(Duration::from_secs(2));
    let mut spans: Vec<(u64, Option<u64>)> = messages
        .iter()
        .filter(|m| m.field("step").as_u64() >= Some(600))
        .map(|m| {
            (
                m.field("step").as_u64().unwrap(),
                m.field("span_step").as_u64(),
            )
        })
        .collect();
    spans.sort_unstable();
    assert_eq!(spans, [(600, None), (700, Some(700)), (800, None)]);
    let mut steps: Vec<u64> = messages
        .iter()
        .map(|m| m.field("step").as_u64().expect("a step field"))
        .filter(|&s| s < 600)
        .collect();
    steps.sort_unstable();
    assert_eq!(
        steps,
        [102, 103, 200, 201, 202, 203, 402, 403, 404, 502, 503, 504]
    );
}
