//! Task spans, `collect_root_logs` and the apalis layer against the real
//! broker. No global install: each test has its own shipper, exchange and
//! thread-local subscriber, so the tests share one process.

use std::time::Duration;

use logcollect::Shipper;
use logcollect_jobs::{in_task, task_layer, task_span, Collect, TaskInfo};
use logcollect_tests::{config, unique, Capture, Msg};
use tracing_subscriber::layer::SubscriberExt as _;

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    cap: Capture,
    shipper: Shipper,
    dispatch: tracing::Dispatch,
}

impl Rig {
    fn new(prefix: &str, collect: Collect) -> Rig {
        let ex = unique(prefix);
        let cap = Capture::topic(&ex, "logstash.#");
        let shipper = Shipper::new(config(&ex).build().unwrap()).unwrap();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry().with(task_layer(&shipper, collect)),
        );
        Rig {
            cap,
            shipper,
            dispatch,
        }
    }

    /// Flushes, then takes exactly the `n` records accepted so far.
    fn records(&self, n: usize) -> Vec<Msg> {
        self.shipper.flush(WAIT).unwrap();
        assert_eq!(self.shipper.stats().accepted, n as u64, "records accepted");
        self.cap.take(n, WAIT)
    }
}

fn info(correlation: &str) -> TaskInfo {
    TaskInfo::new("send_invoice")
        .id("task-1")
        .attempt(2)
        .queue("orders")
        .correlation_id(correlation)
}

fn assert_task_fields(m: &Msg, correlation: &str) {
    assert_eq!(m.str("task_name"), "send_invoice", "{}", m.body);
    assert_eq!(m.str("task_id"), "task-1");
    assert_eq!(m.field("task_attempt").as_u64(), Some(2));
    assert_eq!(m.str("task_queue"), "orders");
    assert_eq!(m.str("correlation_id"), correlation);
}

#[test]
fn without_root_logs_only_records_inside_tasks_are_shipped() {
    let rig = Rig::new("jobs-noroot", Collect::TasksOnly);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::dispatcher::with_default(&rig.dispatch, || {
        tracing::info!(target: "app::main", "outside: not shipped");
        let unrelated = tracing::info_span!("unrelated", k = 1);
        unrelated
            .in_scope(|| tracing::warn!(target: "app::main", "in a non-task span: not shipped"));

        rt.block_on(in_task(&info("order-42"), async {
            tracing::info!(target: "app::jobs", step = 1, "inside the task");
            tokio::task::yield_now().await;
            let child = tracing::info_span!("db", table = "invoices");
            child.in_scope(|| tracing::debug!(target: "app::jobs", step = 2, "in a child span"));
            assert_eq!(
                logcollect::correlation::current().as_deref(),
                Some("order-42")
            );
        }));
        let span = task_span(&info("order-43"));
        span.in_scope(|| tracing::error!(target: "app::jobs", step = 3, "synchronous task"));
        // An explicit parent outside any task: not shipped, even from inside one.
        span.in_scope(
            || tracing::info!(target: "app::jobs", parent: &unrelated, "explicit non-task parent"),
        );
        tracing::info!(target: "app::main", "after: not shipped");
    });

    let mut msgs = rig.records(3);
    msgs.sort_by_key(|m| m.field("step").as_u64());
    assert_eq!(msgs[0].str("message"), "inside the task");
    assert_task_fields(&msgs[0], "order-42");
    assert_eq!(msgs[1].str("table"), "invoices");
    assert_task_fields(&msgs[1], "order-42");
    assert_eq!(msgs[2].str("levelname"), "ERROR");
    assert_task_fields(&msgs[2], "order-43");
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn with_root_logs_everything_is_shipped() {
    let rig = Rig::new("jobs-root", Collect::All);
    tracing::dispatcher::with_default(&rig.dispatch, || {
        tracing::info!(target: "app::main", step = 1, "outside");
        task_span(&info("order-44"))
            .in_scope(|| tracing::info!(target: "app::jobs", step = 2, "inside"));
        // A correlation scope outside tasks; the innermost scope wins.
        logcollect::correlation::scope("upload-3").in_scope(|| {
            tracing::info!(target: "app::main", step = 3, "in a scope");
            logcollect::correlation::scope("upload-3-part-1")
                .in_scope(|| tracing::info!(target: "app::main", step = 4, "nested"));
        });
    });
    let mut msgs = rig.records(4);
    msgs.sort_by_key(|m| m.field("step").as_u64());
    assert!(msgs[0].field("task_name").is_null());
    assert!(msgs[0].field("correlation_id").is_null());
    assert_task_fields(&msgs[1], "order-44");
    assert_eq!(msgs[2].str("correlation_id"), "upload-3");
    assert_eq!(msgs[3].str("correlation_id"), "upload-3-part-1");
    assert!(msgs[3].field("task_name").is_null());
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn task_spans_follow_futures_on_a_multi_thread_runtime() {
    let rig = Rig::new("jobs-mt", Collect::TasksOnly);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const TASKS: u64 = 8;
    let handles: Vec<_> = (0..TASKS)
        .map(|i| {
            let fut = tracing::dispatcher::with_default(&rig.dispatch, || {
                let info = TaskInfo::new("fan_out")
                    .id(format!("t{i}"))
                    .correlation_id(format!("corr-{i}"));
                in_task(&info, async move {
                    for step in 0..3u64 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        tracing::info!(target: "app::jobs", i, step, "step");
                    }
                })
            });
            rt.spawn(tracing::instrument::WithSubscriber::with_subscriber(
                fut,
                rig.dispatch.clone(),
            ))
        })
        .collect();
    for h in handles {
        rt.block_on(h).unwrap();
    }
    let msgs = rig.records(TASKS as usize * 3);
    for m in &msgs {
        let i = m.field("i").as_u64().unwrap();
        assert_eq!(m.str("task_id"), format!("t{i}"));
        assert_eq!(m.str("correlation_id"), format!("corr-{i}"));
        assert_eq!(m.str("task_name"), "fan_out");
    }
    rig.shipper.shutdown(WAIT).unwrap();
}

#[cfg(feature = "apalis")]
mod apalis_worker {
    use super::*;

    use apalis_amqp::AmqpBackend;
    use apalis_core::worker::builder::WorkerBuilder;
    use apalis_core::worker::context::WorkerContext;
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    use logcollect_jobs::apalis::TaskSpanLayer;
    use logcollect_tests::AMQP_URL;

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Order {
        order: u64,
    }

    async fn handle(job: Order, worker: WorkerContext) {
        let seen = logcollect::correlation::current().unwrap_or_default();
        tracing::info!(target: "app::jobs", order = job.order, seen, "processing order");
        worker.stop().unwrap();
    }

    /// Publishes one job the way `send_task` does: JSON body, durable queue
    /// (apalis-amqp's default declaration), correlation id in the
    /// properties and headers.
    async fn publish(queue: &str, correlation: &str) {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let props = logcollect::correlation::inject_properties(
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id("job-77".into()),
            correlation,
        );
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            br#"{"order":77}"#,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
    }

    /// apalis-amqp 1.0.0 reports a fresh backend ready before its consumer
    /// exists, then panics in `poll_next` (`consumer.unwrap()`). Opening its
    /// channel through the `Sink` side first makes the worker's first
    /// `poll_ready` create the consumer.
    async fn open_channel(backend: &mut AmqpBackend<Order>) {
        futures_util::future::poll_fn(|cx| {
            futures_util::Sink::poll_ready(std::pin::Pin::new(&mut *backend), cx)
        })
        .await
        .unwrap();
    }

    async fn delete_queue(queue: &str) {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let _ = ch
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = conn.close(200, "bye".into()).await;
    }

    #[test]
    fn a_job_runs_under_the_senders_correlation_id_with_task_fields() {
        let rig = Rig::new("jobs-apalis", Collect::TasksOnly);
        let queue = unique("jobs-q");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tracing::dispatcher::with_default(&rig.dispatch, || {
            rt.block_on(async {
                publish(&queue, "web-req-9").await;
                let mut backend = AmqpBackend::<Order>::new_from_addr(AMQP_URL)
                    .unwrap()
                    .with_config(apalis_amqp::Config::default().queue(queue.as_str()));
                open_channel(&mut backend).await;
                tokio::time::timeout(
                    WAIT,
                    WorkerBuilder::new("invoices")
                        .backend(backend)
                        .layer(TaskSpanLayer::new().queue(&queue))
                        .build(handle)
                        .run(),
                )
                .await
                .expect("the worker stops after its job")
                .unwrap();
                delete_queue(&queue).await;
            })
        });
        rig.shipper.flush(WAIT).unwrap();
        // apalis' own records made inside the job (if any) come too; ours is
        // the one from `app::jobs`.
        let n = rig.shipper.stats().accepted as usize;
        let msgs = rig.cap.take(n, WAIT);
        let m = msgs
            .iter()
            .find(|m| m.str("logger") == "app::jobs")
            .expect("the job's record");
        assert_eq!(m.str("correlation_id"), "web-req-9", "{}", m.body);
        assert_eq!(m.str("seen"), "web-req-9", "current() inside the job");
        assert_eq!(m.field("order").as_u64(), Some(77));
        assert_eq!(m.str("task_name"), "invoices");
        assert_eq!(m.str("task_id"), "job-77");
        assert_eq!(m.field("task_attempt").as_u64(), Some(1));
        assert_eq!(m.str("task_queue"), queue);
        for m in &msgs {
            assert_eq!(
                m.str("task_name"),
                "invoices",
                "only task records: {}",
                m.body
            );
        }
        rig.shipper.shutdown(WAIT).unwrap();
    }
}
