//! A small actix-web app logged with `logcollect-actix`: every record of a
//! request carries its `request_id`, `correlation_id`, `method` and `path`,
//! and each request ends with one access record (`GET / 200 0.4ms`, logger
//! `logcollect_actix::access`, with `route`).
//!
//! ```text
//! cargo run -p web_actix                       # http://127.0.0.1:3000
//! curl -i -H 'X-Request-ID: abc-123' http://127.0.0.1:3000/
//! LOGCOLLECT_EXAMPLE_ADDR=127.0.0.1:8080 cargo run -p web_actix -- --once   # serve one request, then exit
//! ```
//!
//! Configured from the environment like `web_axum` (`LOGCOLLECT_*`; broker
//! `amqp://guest:guest@127.0.0.1:5672//` unless `LOGCOLLECT_BROKER_URI` says
//! otherwise). Listens on `LOGCOLLECT_EXAMPLE_ADDR` (default
//! `127.0.0.1:3000`) and says where on stderr. Stops on Ctrl-C, or after the
//! first request with `--once`, then flushes its records.

use std::process::ExitCode;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use logcollect_actix::{RequestId, RequestLog};
use tokio::sync::Notify;

/// Default listening address.
const DEFAULT_ADDR: &str = "127.0.0.1:3000";

/// Notified after a request is handled, when running with `--once`.
#[derive(Clone)]
struct Done(Option<Arc<Notify>>);

async fn hello(done: web::Data<Done>, id: web::ReqData<RequestId>) -> String {
    tracing::info!(target: "web_actix", greeting = "hello", "saying hello");
    if let Some(n) = &done.0 {
        // A graceful stop still lets this response go out.
        n.notify_one();
    }
    format!("hello, your request id is {}\n", id.into_inner())
}

async fn serve(addr: &str, once: bool) -> std::io::Result<()> {
    let done = Done(once.then(|| Arc::new(Notify::new())));
    let data = web::Data::new(done.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(RequestLog::new())
            .route("/", web::get().to(hello))
    })
    .workers(1)
    .bind(addr)?;
    for a in server.addrs() {
        eprintln!("web_actix: listening on http://{a}");
    }
    let server = server.run();
    if let Some(n) = done.0 {
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            n.notified().await;
            handle.stop(true).await;
        });
    }
    server.await
}

fn main() -> ExitCode {
    let once = std::env::args().skip(1).any(|a| a == "--once");
    let addr = std::env::var("LOGCOLLECT_EXAMPLE_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let mut builder = logcollect::Config::builder();
    if std::env::var_os("LOGCOLLECT_BROKER_URI").is_none() {
        builder = builder.broker_uri("amqp://guest:guest@127.0.0.1:5672//");
    }
    if std::env::var_os("LOGCOLLECT_ACTIVITY_IDENTITY").is_none() {
        builder =
            builder.activity_identity([("project", "logcollect"), ("subsystem", "web_actix")]);
    }
    let config = match builder.env().and_then(|b| b.build()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("web_actix: {e}");
            return ExitCode::from(2);
        }
    };
    let guard = match logcollect::boot::default_config(config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("web_actix: {e}");
            return ExitCode::from(2);
        }
    };
    let served = actix_web::rt::System::new().block_on(serve(&addr, once));
    drop(guard); // flushes within LOGCOLLECT_SHUTDOWN_TIMEOUT (default 5 s)
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web_actix: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
