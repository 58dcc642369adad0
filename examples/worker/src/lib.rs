//! What the `worker` and `send_task` binaries share: the job, the queue and
//! broker settings, and the logcollect configuration from the environment.
//!
//! | variable | default | what |
//! |---|---|---|
//! | `LOGCOLLECT_WORKER_AMQP_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` | the broker the jobs go through (lapin URL syntax) |
//! | `LOGCOLLECT_WORKER_QUEUE` | `logcollect.jobs` | the job queue (durable) |
//! | `LOGCOLLECT_WORKER_MAX_JOBS` | none | `worker` exits after this many jobs |
//! | `LOGCOLLECT_COLLECT_ROOT_LOGS` | `false` | `worker` ships records made outside jobs too |
//! | `LOGCOLLECT_*` | see the README | where the records go |
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

/// Default job queue.
pub const DEFAULT_QUEUE: &str = "logcollect.jobs";

/// Default broker for the jobs.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The job: an order to process. Sent as JSON, `{"order":42}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Order {
    /// The order number.
    pub order: u64,
}

/// The job queue (`LOGCOLLECT_WORKER_QUEUE`).
pub fn queue() -> String {
    std::env::var("LOGCOLLECT_WORKER_QUEUE").unwrap_or_else(|_| DEFAULT_QUEUE.to_owned())
}

/// The jobs' broker (`LOGCOLLECT_WORKER_AMQP_URL`).
pub fn amqp_url() -> String {
    std::env::var("LOGCOLLECT_WORKER_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// The logcollect configuration: `LOGCOLLECT_*`, with the local broker and
/// an activity identity naming `subsystem` when the environment sets none.
pub fn config(subsystem: &str) -> Result<logcollect::Config, logcollect::Error> {
    logcollect::Config::builder()
        .broker_uri("amqp://guest:guest@127.0.0.1:5672//")
        .activity_identity([("project", "logcollect"), ("subsystem", subsystem)])
        .env_overrides()?
        .build()
}
