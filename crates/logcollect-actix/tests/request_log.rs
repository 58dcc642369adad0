//! `RequestLog` on a real actix-web app (actix's test service) against the
//! real broker. No global install: each test has its own shipper, exchange
//! and thread-local subscriber.

use std::time::Duration;

use actix_web::{test, web, App, HttpResponse};
use logcollect::correlation::IdGenerator;
use logcollect::{LogcollectLayer, Shipper};
use logcollect_actix::{RequestId, RequestLog, ACCESS_TARGET};
use logcollect_tests::{config, unique, Capture, Msg};
use tracing_subscriber::layer::SubscriberExt as _;

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    cap: Capture,
    shipper: Shipper,
    dispatch: tracing::Dispatch,
}

impl Rig {
    fn new(prefix: &str) -> Rig {
        let ex = unique(prefix);
        // actix logs nothing of its own here, but keep to the two loggers.
        let cap = Capture::topic(&ex, "logstash.#");
        let shipper = Shipper::new(config(&ex).level("info").build().unwrap()).unwrap();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone())),
        );
        Rig {
            cap,
            shipper,
            dispatch,
        }
    }

    /// Runs `fut` on an actix system with this rig's subscriber.
    fn run<F: std::future::Future>(&self, fut: F) -> F::Output {
        tracing::dispatcher::with_default(&self.dispatch, || {
            actix_web::rt::System::new().block_on(fut)
        })
    }

    /// Flushes and takes exactly `n` records.
    fn records(&self, n: usize) -> Vec<Msg> {
        self.shipper.flush(WAIT).unwrap();
        let msgs = self.cap.take(n, WAIT);
        assert!(
            self.cap.drain(Duration::from_millis(200)).is_empty(),
            "more than {n} records"
        );
        msgs
    }
}

async fn user(rid: web::ReqData<RequestId>) -> HttpResponse {
    tracing::info!(target: "app::users", user = "ann", "looking the user up");
    let corr = logcollect::correlation::current().unwrap_or_default();
    HttpResponse::Ok().body(format!("{corr} {}", rid.into_inner()))
}

async fn status(path: web::Path<u16>) -> HttpResponse {
    tracing::info!(target: "app::status", "answering");
    HttpResponse::build(actix_web::http::StatusCode::from_u16(path.into_inner()).unwrap()).finish()
}

async fn failing() -> Result<HttpResponse, actix_web::Error> {
    tracing::info!(target: "app::fail", "about to fail");
    Err(actix_web::error::ErrorServiceUnavailable("backend down"))
}

/// Calls `app` with `req`; the response's status, `X-Request-ID` and body.
async fn call(mw: RequestLog, req: test::TestRequest) -> (u16, Option<String>, String) {
    let app = test::init_service(
        App::new()
            .wrap(mw)
            .route("/users/{id}", web::get().to(user))
            .route("/status/{code}", web::get().to(status))
            .route("/fail", web::get().to(failing))
            .route("/healthz", web::get().to(|| async { "ok" })),
    )
    .await;
    let resp = test::call_service(&app, req.to_request()).await;
    let code = resp.status().as_u16();
    let rid = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = test::read_body(resp).await;
    (code, rid, String::from_utf8(body.to_vec()).unwrap())
}

fn access_of(msgs: &[Msg]) -> &Msg {
    msgs.iter()
        .find(|m| m.str("logger") == ACCESS_TARGET)
        .expect("an access record")
}

#[test]
fn request_id_on_every_record_echoed_and_route_on_the_access_record() {
    let rig = Rig::new("actix-rid");
    let (code, rid, body) = rig.run(call(
        RequestLog::new(),
        test::TestRequest::get()
            .uri("/users/1?x=1")
            .insert_header(("X-Request-ID", "abc-123")),
    ));
    assert_eq!(code, 200);
    assert_eq!(rid.as_deref(), Some("abc-123"));
    assert_eq!(
        body, "abc-123 abc-123",
        "current() and RequestId in the handler"
    );
    let msgs = rig.records(2);
    for m in &msgs {
        assert_eq!(m.str("request_id"), "abc-123", "{}", m.body);
        assert_eq!(m.str("correlation_id"), "abc-123");
        assert_eq!(m.str("method"), "GET");
        assert_eq!(m.str("path"), "/users/1");
    }
    let access = access_of(&msgs);
    assert_eq!(access.routing_key, "logstash.logcollect_actix.access");
    assert_eq!(access.str("levelname"), "INFO");
    assert_eq!(access.field("status").as_u64(), Some(200));
    assert_eq!(access.str("route"), "/users/{id}", "{}", access.body);
    assert!(access.field("latency_ms").is_f64());
    let msg = access.str("message");
    assert!(
        msg.starts_with("GET /users/1 200 ") && msg.ends_with("ms"),
        "{msg}"
    );
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn generated_ids_and_correlation_sources() {
    let rig = Rig::new("actix-ids");
    // No id: a new UUIDv7, echoed.
    let (_, rid, body) = rig.run(call(
        RequestLog::new(),
        test::TestRequest::get().uri("/users/1"),
    ));
    let id = rid.unwrap();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    assert_eq!(body, format!("{id} {id}"));
    rig.records(2);
    // UUIDv4 on request.
    let mw = RequestLog::builder()
        .id_generator(IdGenerator::UuidV4)
        .build();
    let (_, rid, _) = rig.run(call(mw, test::TestRequest::get().uri("/users/1")));
    assert_eq!(
        uuid::Uuid::parse_str(&rid.unwrap())
            .unwrap()
            .get_version_num(),
        4
    );
    rig.records(2);
    // X-Correlation-ID, then traceparent, name the flow.
    let (_, rid, body) = rig.run(call(
        RequestLog::new(),
        test::TestRequest::get()
            .uri("/users/1")
            .insert_header(("X-Request-ID", "req-7"))
            .insert_header(("X-Correlation-ID", "order-42")),
    ));
    assert_eq!(
        (rid.as_deref(), body.as_str()),
        (Some("req-7"), "order-42 req-7")
    );
    for m in rig.records(2) {
        assert_eq!(m.str("correlation_id"), "order-42");
    }
    let (_, _, body) = rig.run(call(
        RequestLog::new(),
        test::TestRequest::get()
            .uri("/users/1")
            .insert_header(("X-Request-ID", "req-8"))
            .insert_header((
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )),
    ));
    assert_eq!(body, "4bf92f3577b34da6a3ce929d0e0e4736 req-8");
    rig.records(2);
    // A hostile id is replaced.
    let (_, rid, _) = rig.run(call(
        RequestLog::new(),
        test::TestRequest::get()
            .uri("/users/1")
            .insert_header(("X-Request-ID", "x\"}{\"levelname\":\"ERROR")),
    ));
    assert!(uuid::Uuid::parse_str(&rid.unwrap()).is_ok());
    rig.records(2);
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn access_level_follows_the_status_and_skipped_paths_write_none() {
    let rig = Rig::new("actix-levels");
    for (code, level) in [
        (200, "INFO"),
        (404, "WARNING"),
        (500, "ERROR"),
        (503, "ERROR"),
    ] {
        let (got, _, _) = rig.run(call(
            RequestLog::new(),
            test::TestRequest::get().uri(&format!("/status/{code}")),
        ));
        assert_eq!(got, code);
        let msgs = rig.records(2);
        let access = access_of(&msgs);
        assert_eq!(access.str("levelname"), level, "{code}: {}", access.body);
        assert_eq!(access.field("status").as_u64(), Some(code as u64));
        assert_eq!(access.str("route"), "/status/{code}");
    }
    // A handler error: the status of the response actix makes of it.
    let (got, rid, _) = rig.run(call(
        RequestLog::new(),
        test::TestRequest::get()
            .uri("/fail")
            .insert_header(("X-Request-ID", "f-1")),
    ));
    assert_eq!(got, 503);
    assert_eq!(rid.as_deref(), Some("f-1"));
    let msgs = rig.records(2);
    let access = access_of(&msgs);
    assert_eq!(access.str("levelname"), "ERROR");
    assert!(
        access.str("message").starts_with("GET /fail 503 "),
        "{}",
        access.body
    );
    // An unknown path: actix's 404.
    let (got, _, _) = rig.run(call(
        RequestLog::new(),
        test::TestRequest::get().uri("/nope"),
    ));
    assert_eq!(got, 404);
    let access = &rig.records(1)[0];
    assert_eq!(access.str("levelname"), "WARNING");
    assert!(
        access.field("route").is_null(),
        "no route matched: {}",
        access.body
    );

    // Skipped: no access record, id still echoed.
    let mw = || RequestLog::builder().skip_paths(["/healthz"]).build();
    let (got, rid, _) = rig.run(call(
        mw(),
        test::TestRequest::get()
            .uri("/healthz?deep=1")
            .insert_header(("X-Request-ID", "probe-1")),
    ));
    assert_eq!((got, rid.as_deref()), (200, Some("probe-1")));
    rig.shipper.flush(WAIT).unwrap();
    assert!(rig.cap.drain(Duration::from_millis(300)).is_empty());
    // Custom rule: 404 is routine.
    let mw = RequestLog::builder()
        .level(|s| {
            if s == actix_web::http::StatusCode::NOT_FOUND {
                tracing::Level::INFO
            } else {
                logcollect_actix::default_level(s)
            }
        })
        .build();
    let (got, _, _) = rig.run(call(mw, test::TestRequest::get().uri("/status/404")));
    assert_eq!(got, 404);
    assert_eq!(access_of(&rig.records(2)).str("levelname"), "INFO");
    rig.shipper.shutdown(WAIT).unwrap();
}
