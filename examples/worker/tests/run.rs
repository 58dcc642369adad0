//! `send_task` then `worker`, as a user runs them, against the real broker:
//! the worker's records carry the sender's correlation id and the task
//! fields; records outside jobs stay home unless asked for.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use logcollect_tests::{unique, Capture, Msg};

const WAIT: Duration = Duration::from_secs(60);

/// Runs `cmd` to completion, killing it (by its pid) if it takes longer than `WAIT`.
fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{cmd:?} did not finish within {WAIT:?}");
        }
    }
}

fn command(bin: &str, exchange: &str, queue: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("LOGCOLLECT_EXCHANGE", exchange)
        .env("LOGCOLLECT_WORKER_QUEUE", queue)
        .env_remove("LOGCOLLECT_BROKER_URI")
        .env_remove("LOGCOLLECT_ACTIVITY_IDENTITY")
        .env_remove("LOGCOLLECT_WORKER_AMQP_URL")
        .env_remove("LOGCOLLECT_COLLECT_ROOT_LOGS");
    cmd
}

fn send(exchange: &str, queue: &str, correlation_id: &str, order: u64) {
    let mut cmd = command(env!("CARGO_BIN_EXE_send_task"), exchange, queue);
    cmd.args([correlation_id, &order.to_string()]);
    let out = run(cmd);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), correlation_id);
}

fn assert_job_record(m: &Msg, queue: &str, correlation_id: &str, order: u64) {
    assert_eq!(m.str("correlation_id"), correlation_id, "{}", m.body);
    assert_eq!(m.str("task_name"), "process_order");
    assert_eq!(m.str("task_queue"), queue);
    assert_eq!(m.field("task_attempt").as_u64(), Some(1));
    assert!(
        uuid_like(m.str("task_id")),
        "task_id is the message id: {}",
        m.body
    );
    assert_eq!(m.field("order").as_u64(), Some(order));
    assert_eq!(m.str("subsystem"), "worker");
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.bytes().filter(|&b| b == b'-').count() == 4
}

/// Removes the durable job queue the test used.
struct DeleteQueue(String);
impl Drop for DeleteQueue {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let props = lapin::ConnectionProperties::default();
            if let Ok(conn) = lapin::Connection::connect(logcollect_tests::AMQP_URL, props).await {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .queue_delete(self.0.as_str().into(), Default::default())
                        .await;
                }
                let _ = conn.close(200, "bye".into()).await;
            }
        });
    }
}

#[test]
fn a_sent_job_is_logged_by_the_worker_under_the_senders_correlation_id() {
    let ex = unique("example-worker");
    let queue = unique("example-jobs");
    let _cleanup = DeleteQueue(queue.clone());
    let cap = Capture::topic(&ex, "logstash.#");

    send(&ex, &queue, "order-42", 42);
    let sent = &cap.take(1, WAIT)[0];
    assert_eq!(sent.str("logger"), "send_task");
    assert_eq!(sent.str("correlation_id"), "order-42");
    assert_eq!(sent.str("message"), "enqueued order 42");

    let mut worker = command(env!("CARGO_BIN_EXE_worker"), &ex, &queue);
    worker.env("LOGCOLLECT_WORKER_MAX_JOBS", "1");
    let out = run(worker);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 job(s) done"));

    // The worker flushed before exiting: everything it shipped is there.
    // With collect_root_logs off (the default) every one is from inside the
    // job: the `tracing` and the `log` record of the handler, and apalis'
    // own "worker stopped" line, which the handler triggers.
    let msgs = cap.drain(Duration::from_millis(500));
    let ours: Vec<&Msg> = msgs
        .iter()
        .filter(|m| m.str("logger") == "worker")
        .collect();
    assert_eq!(ours.len(), 2, "{msgs:#?}");
    for m in &ours {
        assert_job_record(m, &queue, "order-42", 42);
    }
    assert!(ours
        .iter()
        .any(|m| m.str("message") == "processing order 42"));
    assert!(ours.iter().any(|m| m.str("message") == "order 42 done"));
    for m in &msgs {
        assert_eq!(
            m.str("correlation_id"),
            "order-42",
            "only job records: {}",
            m.body
        );
        assert_eq!(m.str("task_name"), "process_order");
    }
}

#[test]
fn with_collect_root_logs_the_workers_own_records_are_shipped_too() {
    let ex = unique("example-worker-root");
    let queue = unique("example-jobs-root");
    let _cleanup = DeleteQueue(queue.clone());
    let cap = Capture::topic(&ex, "logstash.#");
    send(&ex, &queue, "upload-7", 7);
    let _sent = cap.take(1, WAIT);

    let mut worker = command(env!("CARGO_BIN_EXE_worker"), &ex, &queue);
    worker
        .env("LOGCOLLECT_WORKER_MAX_JOBS", "1")
        .env("LOGCOLLECT_COLLECT_ROOT_LOGS", "true");
    let out = run(worker);
    assert!(out.status.success(), "{out:?}");
    let msgs = cap.drain(Duration::from_millis(500));
    let starting = msgs
        .iter()
        .find(|m| m.str("message") == "worker starting")
        .unwrap_or_else(|| panic!("{msgs:#?}"));
    assert!(starting.field("task_name").is_null());
    assert!(starting.field("correlation_id").is_null());
    let stopped = msgs
        .iter()
        .find(|m| m.str("message") == "worker stopped")
        .unwrap();
    assert_eq!(stopped.field("jobs").as_u64(), Some(1));
    let job = msgs
        .iter()
        .find(|m| m.str("message") == "processing order 7")
        .unwrap();
    assert_job_record(job, &queue, "upload-7", 7);
}
