//! A small axum app logged with `logcollect-tower`: every record of a
//! request carries its `request_id`, `correlation_id`, `method`, `route` and
//! `path`, and each request ends with one access record
//! (`GET / 200 0.4ms`, logger `logcollect_tower::access`).
//!
//! ```text
//! cargo run -p web_axum                       # http://127.0.0.1:3000
//! curl -i -H 'X-Request-ID: abc-123' http://127.0.0.1:3000/
//! LOGCOLLECT_EXAMPLE_ADDR=127.0.0.1:8080 cargo run -p web_axum -- --once   # serve one request, then exit
//! ```
//!
//! Configured from the environment like `native_logging` (`LOGCOLLECT_*`;
//! broker `amqp://guest:guest@127.0.0.1:5672//` unless
//! `LOGCOLLECT_BROKER_URI` says otherwise). Listens on
//! `LOGCOLLECT_EXAMPLE_ADDR` (default `127.0.0.1:3000`) and says where on
//! stderr. Stops on Ctrl-C, or after the first request with `--once`, then
//! flushes its records.

use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Router};
use logcollect_tower::{RequestId, RequestLogLayer};
use tokio::sync::Notify;

/// Default listening address.
const DEFAULT_ADDR: &str = "127.0.0.1:3000";

#[derive(Clone)]
struct AppState {
    /// Notified after a request is handled, when running with `--once`.
    done: Option<Arc<Notify>>,
}

async fn hello(State(state): State<AppState>, Extension(id): Extension<RequestId>) -> String {
    tracing::info!(target: "web_axum", greeting = "hello", "saying hello");
    if let Some(done) = &state.done {
        // Graceful shutdown still lets this response go out.
        done.notify_one();
    }
    format!("hello, your request id is {id}\n")
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(hello))
        .layer(RequestLogLayer::new())
        .with_state(state)
}

async fn serve(addr: &str, once: bool) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("web_axum: listening on http://{}", listener.local_addr()?);
    let done = once.then(|| Arc::new(Notify::new()));
    let stop = done.clone();
    axum::serve(listener, app(AppState { done }))
        .with_graceful_shutdown(async move {
            match stop {
                Some(n) => n.notified().await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        })
        .await
}

fn main() -> ExitCode {
    let once = std::env::args().skip(1).any(|a| a == "--once");
    let addr = std::env::var("LOGCOLLECT_EXAMPLE_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    // Code gives defaults; every LOGCOLLECT_* variable that is set overrides them.
    let config = match logcollect::Config::builder()
        .broker_uri("amqp://guest:guest@127.0.0.1:5672//")
        .activity_identity([("project", "logcollect"), ("subsystem", "web_axum")])
        .env_overrides()
        .and_then(|b| b.build())
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("web_axum: {e}");
            return ExitCode::from(2);
        }
    };
    let guard = match logcollect::boot::default_config(config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("web_axum: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("web_axum: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = rt.block_on(serve(&addr, once));
    drop(rt);
    drop(guard); // flushes within LOGCOLLECT_SHUTDOWN_TIMEOUT (default 5 s)
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web_axum: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
