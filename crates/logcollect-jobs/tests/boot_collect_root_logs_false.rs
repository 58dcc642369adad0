//! `logcollect_jobs::boot(config, Collect::TasksOnly)` installs a global subscriber and
//! `LogTracer`, so this file is its own process: records outside tasks, from
//! `tracing` and from `log`, are not shipped; those inside are, with the
//! task fields.

use std::time::Duration;

use logcollect_jobs::{task_span, TaskInfo};
use logcollect_tests::{config, unique, Capture};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn only_records_inside_tasks_are_shipped_log_records_included() {
    let ex = unique("jobs-boot-false");
    let cap = Capture::topic(&ex, "logstash.#");
    let guard = logcollect_jobs::boot(
        config(&ex).build().unwrap(),
        logcollect_jobs::Collect::TasksOnly,
    )
    .unwrap();

    tracing::info!(target: "app::main", "tracing outside: not shipped");
    log::info!(target: "app::main", "log outside: not shipped");
    let info = TaskInfo::new("nightly")
        .id("t-1")
        .queue("q")
        .correlation_id("corr-boot");
    task_span(&info).in_scope(|| {
        tracing::info!(target: "app::jobs", n = 1u64, "tracing inside");
        log::warn!(target: "app::jobs::legacy", n = 2; "log inside");
    });
    log::info!(target: "app::main", "log after: not shipped");

    let shipper = guard.shipper().clone();
    shipper.flush(WAIT).unwrap();
    assert_eq!(shipper.stats().accepted, 2, "{}", shipper.stats());
    let mut msgs = cap.take(2, WAIT);
    msgs.sort_by_key(|m| m.field("n").as_u64());
    assert_eq!(msgs[0].str("message"), "tracing inside");
    assert_eq!(msgs[1].str("message"), "log inside");
    assert_eq!(msgs[1].str("logger"), "app::jobs::legacy");
    assert_eq!(msgs[1].str("levelname"), "WARNING");
    for m in &msgs {
        assert_eq!(m.str("task_name"), "nightly", "{}", m.body);
        assert_eq!(m.str("task_id"), "t-1");
        assert_eq!(m.str("task_queue"), "q");
        assert_eq!(m.str("correlation_id"), "corr-boot");
    }

    // A second boot finds the global subscriber taken.
    let again = logcollect_jobs::boot(config(&ex).build().unwrap(), logcollect_jobs::Collect::All)
        .unwrap_err();
    assert_eq!(again.kind(), logcollect::ErrorKind::AlreadyInstalled);
    // …and changed nothing: records outside tasks are still not shipped.
    log::info!(target: "app::main", "still not shipped");
    tracing::info!(target: "app::main", "still not shipped");
    shipper.flush(WAIT).unwrap();
    assert_eq!(shipper.stats().accepted, 2, "{}", shipper.stats());
    drop(guard);
}
