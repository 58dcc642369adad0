//! An apalis worker consuming `Order` jobs from a durable RabbitMQ queue
//! (`logcollect.jobs`), logged with `logcollect-jobs`: every record of a
//! job, from `tracing` or `log`, carries `task_name`, `task_id`,
//! `task_attempt`, `task_queue` and the `correlation_id` the sender put in
//! the message (see `send_task`).
//!
//! ```text
//! cargo run -p worker --bin worker                       # runs until Ctrl-C
//! LOGCOLLECT_WORKER_MAX_JOBS=1 cargo run -p worker --bin worker   # exits after one job
//! cargo run -p worker --bin send_task -- order-42        # in another terminal
//! ```
//!
//! Records made outside jobs are shipped only with
//! `LOGCOLLECT_COLLECT_ROOT_LOGS=true`. Other settings: see the library
//! docs of this example (`src/lib.rs`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use apalis_amqp::AmqpBackend;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use logcollect_jobs::apalis::TaskSpanLayer;
use worker::Order;

/// Jobs done so far, and how many to do before stopping.
static DONE: AtomicUsize = AtomicUsize::new(0);
static MAX_JOBS: OnceLock<usize> = OnceLock::new();

async fn process_order(job: Order, worker: WorkerContext) {
    tracing::info!(order = job.order, "processing order {}", job.order);
    log::info!(order = job.order; "order {} done", job.order);
    let done = DONE.fetch_add(1, Ordering::SeqCst) + 1;
    if MAX_JOBS.get().is_some_and(|&max| done >= max) {
        // The worker finishes (and acknowledges) this job, then stops.
        let _ = worker.stop();
    }
}

/// apalis-amqp 1.0.0 reports a fresh backend ready before its consumer
/// exists, then panics in `poll_next`; opening its channel through the
/// `Sink` side first makes the worker create the consumer before polling.
async fn open_channel(backend: &mut AmqpBackend<Order>) -> Result<(), apalis_amqp::Error> {
    futures_util::future::poll_fn(|cx| {
        futures_util::Sink::poll_ready(std::pin::Pin::new(&mut *backend), cx)
    })
    .await
}

async fn run(queue: &str) -> Result<(), String> {
    let mut backend = AmqpBackend::<Order>::new_from_addr(worker::amqp_url())
        .map_err(|e| e.to_string())?
        .with_config(apalis_amqp::Config::default().queue(queue));
    open_channel(&mut backend)
        .await
        .map_err(|e| format!("cannot open the job queue {queue}: {e}"))?;
    let worker = WorkerBuilder::new("orders")
        .backend(backend)
        .layer(TaskSpanLayer::new().name("process_order").queue(queue))
        .build(process_order);
    tokio::select! {
        result = worker.run() => result.map_err(|e| e.to_string()),
        // On Ctrl-C the job in progress is dropped unacknowledged: the
        // broker gives it to the next worker.
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

fn main() -> ExitCode {
    let collect = match std::env::var("LOGCOLLECT_COLLECT_ROOT_LOGS").as_deref() {
        Err(_) | Ok("") | Ok("false") | Ok("0") => logcollect_jobs::Collect::TasksOnly,
        Ok("true") | Ok("1") => logcollect_jobs::Collect::All,
        Ok(other) => {
            eprintln!("worker: LOGCOLLECT_COLLECT_ROOT_LOGS must be true or false, not {other:?}");
            return ExitCode::from(2);
        }
    };
    if let Ok(max) = std::env::var("LOGCOLLECT_WORKER_MAX_JOBS") {
        match max.parse::<usize>() {
            Ok(n) if n > 0 => {
                let _ = MAX_JOBS.set(n);
            }
            _ => {
                eprintln!(
                    "worker: LOGCOLLECT_WORKER_MAX_JOBS must be a positive number, not {max:?}"
                );
                return ExitCode::from(2);
            }
        }
    }
    let guard = match worker::config("worker").and_then(|c| logcollect_jobs::boot(c, collect)) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("worker: {e}");
            return ExitCode::from(2);
        }
    };
    let queue = worker::queue();
    // Outside any job: shipped only with LOGCOLLECT_COLLECT_ROOT_LOGS=true.
    tracing::info!(queue = queue.as_str(), "worker starting");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("worker: consuming {queue}");
    let result = rt.block_on(run(&queue));
    drop(rt);
    let done = DONE.load(Ordering::SeqCst);
    tracing::info!(jobs = done as u64, "worker stopped");
    drop(guard); // flushes within LOGCOLLECT_SHUTDOWN_TIMEOUT (default 5 s)
    match result {
        Ok(()) => {
            eprintln!("worker: {done} job(s) done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("worker: {e}");
            ExitCode::FAILURE
        }
    }
}
