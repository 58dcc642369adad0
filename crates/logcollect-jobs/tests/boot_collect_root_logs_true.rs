//! `logcollect_jobs::boot(config, Collect::All)` installs a global subscriber and
//! `LogTracer`, so this file is its own process: every record is shipped,
//! and `log` records inside a task carry the task fields.

use std::time::Duration;

use logcollect_jobs::{in_task, TaskInfo};
use logcollect_tests::{config, unique, Capture};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn every_record_is_shipped_and_task_records_carry_task_fields() {
    let ex = unique("jobs-boot-true");
    let cap = Capture::topic(&ex, "logstash.#");
    let guard =
        logcollect_jobs::boot(config(&ex).build().unwrap(), logcollect_jobs::Collect::All).unwrap();

    tracing::info!(target: "app::main", n = 1u64, "tracing outside");
    log::info!(target: "app::main", n = 2; "log outside");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let info = TaskInfo::new("hourly").id("t-2").attempt(1);
    let task = rt.spawn(in_task(&info, async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        tracing::info!(target: "app::jobs", n = 3u64, "tracing inside");
        log::info!(target: "app::jobs", n = 4; "log inside");
        logcollect::correlation::current()
    }));
    let generated = rt
        .block_on(task)
        .unwrap()
        .expect("a generated correlation id");

    let shipper = guard.shipper().clone();
    shipper.flush(WAIT).unwrap();
    assert_eq!(shipper.stats().accepted, 4, "{}", shipper.stats());
    let mut msgs = cap.take(4, WAIT);
    msgs.sort_by_key(|m| m.field("n").as_u64());
    for m in &msgs[..2] {
        assert!(m.field("task_name").is_null(), "{}", m.body);
        assert!(m.field("correlation_id").is_null(), "{}", m.body);
    }
    assert_eq!(msgs[1].str("message"), "log outside");
    for m in &msgs[2..] {
        assert_eq!(m.str("task_name"), "hourly", "{}", m.body);
        assert_eq!(m.str("task_id"), "t-2");
        assert_eq!(m.field("task_attempt").as_u64(), Some(1));
        assert_eq!(m.str("correlation_id"), generated);
    }
    assert_eq!(msgs[3].str("message"), "log inside");
    drop(guard);
}
