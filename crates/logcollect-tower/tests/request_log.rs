//! `RequestLogLayer` against the real broker. No global install: each test
//! has its own shipper, exchange and thread-local subscriber, so the tests
//! share one process and run in parallel.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt as _;
use logcollect::correlation::IdGenerator;
use logcollect::{LogcollectLayer, Shipper};
use logcollect_tests::{config, unique, Capture, Msg};
use logcollect_tower::{Outcome, RequestId, RequestLog, RequestLogLayer, ACCESS_TARGET};
use tower::{Layer as _, ServiceExt as _};
use tracing_subscriber::layer::SubscriberExt as _;

const WAIT: Duration = Duration::from_secs(30);

/// A capture queue, a shipper for a fresh exchange, and a subscriber feeding it.
struct Rig {
    cap: Capture,
    shipper: Shipper,
    dispatch: tracing::Dispatch,
    rt: tokio::runtime::Runtime,
}

impl Rig {
    fn new(prefix: &str) -> Rig {
        let ex = unique(prefix);
        let cap = Capture::topic(&ex, "logstash.#");
        let shipper = Shipper::new(config(&ex).build().unwrap()).unwrap();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone())),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Rig {
            cap,
            shipper,
            dispatch,
            rt,
        }
    }

    /// Runs `fut` with this rig's subscriber as the default.
    fn run<F: std::future::Future>(&self, fut: F) -> F::Output {
        tracing::dispatcher::with_default(&self.dispatch, || self.rt.block_on(fut))
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

/// The app under test: the handler logs and answers with the correlation id
/// it sees through `logcollect::correlation::current()` and the `RequestId`
/// extension.
fn app() -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(
                |axum::Extension(rid): axum::Extension<RequestId>| async move {
                    tracing::info!(target: "app::users", user = "ann", "looking the user up");
                    let corr = logcollect::correlation::current().unwrap_or_default();
                    format!("{corr} {rid}")
                },
            ),
        )
        .layer(RequestLogLayer::new())
}

async fn call(req: Request<Body>) -> (Response<Body>, String) {
    let resp = app().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    (
        Response::from_parts(parts, Body::empty()),
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

fn echoed(resp: &Response<Body>) -> String {
    resp.headers()
        .get("x-request-id")
        .expect("X-Request-ID echoed")
        .to_str()
        .unwrap()
        .to_owned()
}

/// The handler's record and the access record, in either order.
fn split(msgs: Vec<Msg>) -> (Msg, Msg) {
    let (mut handler, mut access) = (None, None);
    for m in msgs {
        match m.str("logger") {
            "app::users" => handler = Some(m),
            ACCESS_TARGET => access = Some(m),
            other => panic!("unexpected record from {other}: {}", m.body),
        }
    }
    (
        handler.expect("handler record"),
        access.expect("access record"),
    )
}

fn assert_request_fields(m: &Msg, id: &str) {
    assert_eq!(m.str("request_id"), id, "{}", m.body);
    assert_eq!(m.str("correlation_id"), id, "{}", m.body);
    assert_eq!(m.str("method"), "GET");
    assert_eq!(m.str("path"), "/users/1");
    #[cfg(feature = "axum")]
    assert_eq!(m.str("route"), "/users/{id}", "{}", m.body);
}

#[test]
fn incoming_request_id_is_on_every_record_and_echoed() {
    let rig = Rig::new("tower-rid");
    let (resp, body) = rig.run(call(
        Request::get("/users/1?x=1")
            .header("X-Request-ID", "abc-123")
            .body(Body::empty())
            .unwrap(),
    ));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(echoed(&resp), "abc-123");
    assert_eq!(
        body, "abc-123 abc-123",
        "current() and RequestId inside the handler"
    );

    let (handler, access) = split(rig.records(2));
    assert_request_fields(&handler, "abc-123");
    assert_eq!(handler.str("user"), "ann");
    assert_eq!(handler.str("message"), "looking the user up");

    assert_request_fields(&access, "abc-123");
    assert_eq!(access.routing_key, "logstash.logcollect_tower.access");
    assert_eq!(access.str("levelname"), "INFO");
    assert_eq!(access.field("status").as_u64(), Some(200));
    let latency = access
        .field("latency_ms")
        .as_f64()
        .expect("latency_ms number");
    assert!((0.0..WAIT.as_millis() as f64).contains(&latency));
    let msg = access.str("message");
    assert!(
        msg.starts_with("GET /users/1 200 ") && msg.ends_with("ms"),
        "{msg}"
    );
    assert!(
        msg.trim_start_matches("GET /users/1 200 ")
            .trim_end_matches("ms")
            .parse::<f64>()
            .is_ok(),
        "{msg}"
    );
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn request_without_id_gets_a_generated_one_echoed() {
    let rig = Rig::new("tower-gen");
    let (resp, body) = rig.run(call(Request::get("/users/1").body(Body::empty()).unwrap()));
    let id = echoed(&resp);
    let uuid = uuid::Uuid::parse_str(&id).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 7);
    assert_eq!(body, format!("{id} {id}"));
    let (handler, access) = split(rig.records(2));
    assert_request_fields(&handler, &id);
    assert_request_fields(&access, &id);
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn hostile_request_ids_are_replaced() {
    let rig = Rig::new("tower-hostile");
    let oversized = "a".repeat(10 * 1024);
    let hostile: [&[u8]; 4] = [
        oversized.as_bytes(),
        b"x\"}{\"levelname\":\"ERROR",
        b"id with spaces",
        b"caf\xc3\xa9", // non-ASCII (obs-text)
    ];
    for value in hostile {
        let (resp, _) = rig.run(call(
            Request::get("/users/1")
                .header(
                    "X-Request-ID",
                    http::HeaderValue::from_bytes(value).unwrap(),
                )
                .body(Body::empty())
                .unwrap(),
        ));
        let id = echoed(&resp);
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "replaced by a new id, got {id}"
        );
        let (handler, access) = split(rig.records(2));
        assert_request_fields(&handler, &id);
        assert_request_fields(&access, &id);
        assert_eq!(access.str("levelname"), "INFO");
    }
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn correlation_id_header_sets_the_correlation_id() {
    let rig = Rig::new("tower-corr");
    let (resp, body) = rig.run(call(
        Request::get("/users/1")
            .header("X-Request-ID", "req-7")
            .header("X-Correlation-ID", "order-42")
            .body(Body::empty())
            .unwrap(),
    ));
    assert_eq!(echoed(&resp), "req-7");
    assert_eq!(body, "order-42 req-7");
    for m in rig.records(2) {
        assert_eq!(m.str("request_id"), "req-7");
        assert_eq!(m.str("correlation_id"), "order-42");
    }
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn plain_tower_service_and_errors() {
    let rig = Rig::new("tower-plain");
    // Any tower service of `http` types works: no axum, no route.
    let ok = tower::service_fn(|req: Request<String>| async move {
        tracing::info!(target: "app::plain", "plain handler");
        assert_eq!(
            req.headers()["x-request-id"],
            "plain-1",
            "request header set"
        );
        Ok::<_, Infallible>(
            Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(String::new())
                .unwrap(),
        )
    });
    let svc = tower::ServiceBuilder::new()
        .layer(RequestLogLayer::new())
        .service(ok);
    let resp = rig
        .run(
            svc.oneshot(
                Request::post("/things")
                    .header("X-Correlation-ID", "plain-1")
                    .body(String::new())
                    .unwrap(),
            ),
        )
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["x-request-id"], "plain-1");
    let msgs = rig.records(2);
    let access = msgs
        .iter()
        .find(|m| m.str("logger") == ACCESS_TARGET)
        .unwrap();
    assert!(access.str("message").starts_with("POST /things 404 "));
    assert_eq!(access.field("status").as_u64(), Some(404));
    assert_eq!(access.str("levelname"), "WARNING", "4xx: WARNING");
    assert!(access.field("route").is_null(), "no route without axum");
    for m in &msgs {
        assert_eq!(m.str("request_id"), "plain-1");
        assert_eq!(m.str("method"), "POST");
    }

    // A service error (not an HTTP status) still gives one access record.
    let failing = tower::service_fn(|_req: Request<String>| async move {
        Err::<Response<String>, _>(std::io::Error::other("backend down"))
    });
    let svc = logcollect_tower::RequestLog::new(failing);
    let err = rig
        .run(svc.oneshot(Request::get("/boom").body(String::new()).unwrap()))
        .unwrap_err();
    assert_eq!(err.to_string(), "backend down");
    let access = &rig.records(1)[0];
    assert!(
        access.str("message").starts_with("GET /boom error "),
        "{}",
        access.body
    );
    assert!(access.field("status").is_null());
    assert!(access.field("latency_ms").is_f64());
    assert_eq!(access.str("levelname"), "ERROR", "a failed service: ERROR");
    rig.shipper.shutdown(WAIT).unwrap();
}

/// A plain service answering `status`, with a record from the handler.
fn answering(
    status: u16,
) -> impl tower::Service<
    Request<String>,
    Response = Response<String>,
    Error = Infallible,
    Future: Send,
> + Clone {
    tower::service_fn(move |req: Request<String>| async move {
        tracing::info!(target: "app::handler", path = req.uri().path(), "handled");
        Ok::<_, Infallible>(
            Response::builder()
                .status(status)
                .body(String::new())
                .unwrap(),
        )
    })
}

fn req_get(path: &str) -> Request<String> {
    Request::get(path).body(String::new()).unwrap()
}

/// The access record among `msgs` (panics when there is none).
fn access_of(msgs: &[Msg]) -> &Msg {
    msgs.iter()
        .find(|m| m.str("logger") == ACCESS_TARGET)
        .expect("an access record")
}

#[test]
fn access_level_follows_the_status() {
    let rig = Rig::new("tower-levels");
    for (status, level) in [
        (200, "INFO"),
        (302, "INFO"),
        (400, "WARNING"),
        (404, "WARNING"),
        (500, "ERROR"),
        (503, "ERROR"),
    ] {
        let resp = rig
            .run(RequestLog::new(answering(status)).oneshot(req_get("/x")))
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
        let msgs = rig.records(2);
        let access = access_of(&msgs);
        assert_eq!(access.str("levelname"), level, "{status}: {}", access.body);
        assert_eq!(access.field("status").as_u64(), Some(status as u64));
    }

    // A rule of one's own: 404s are routine here.
    let layer = RequestLogLayer::builder()
        .level(|o: &Outcome| match o.status() {
            Some(s) if s == StatusCode::NOT_FOUND => tracing::Level::INFO,
            _ => logcollect_tower::default_level(o),
        })
        .build();
    let _ = rig.run(layer.layer(answering(404)).oneshot(req_get("/x")));
    assert_eq!(access_of(&rig.records(2)).str("levelname"), "INFO");
    let _ = rig.run(layer.layer(answering(500)).oneshot(req_get("/x")));
    assert_eq!(access_of(&rig.records(2)).str("levelname"), "ERROR");
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn skipped_paths_write_no_access_record_but_keep_their_ids() {
    let rig = Rig::new("tower-skip");
    let layer = RequestLogLayer::builder()
        .skip_paths(["/healthz", "/metrics"])
        .build();
    for path in ["/healthz", "/healthz?verbose=1", "/metrics"] {
        let resp = rig
            .run(
                layer.layer(answering(200)).oneshot(
                    Request::get(path)
                        .header("X-Request-ID", "probe-1")
                        .body(String::new())
                        .unwrap(),
                ),
            )
            .unwrap();
        assert_eq!(resp.headers()["x-request-id"], "probe-1", "id still echoed");
        // Only the handler's record, with the request's fields.
        let msgs = rig.records(1);
        assert_eq!(msgs[0].str("logger"), "app::handler", "{path}");
        assert_eq!(msgs[0].str("request_id"), "probe-1");
    }
    // Exact paths: a longer one is logged.
    let _ = rig.run(
        layer
            .layer(answering(200))
            .oneshot(req_get("/healthz/deep")),
    );
    let msgs = rig.records(2);
    assert_eq!(access_of(&msgs).str("path"), "/healthz/deep");
    rig.shipper.shutdown(WAIT).unwrap();
}

#[test]
fn traceparent_gives_the_correlation_id_and_ids_can_be_uuid_v4() {
    let rig = Rig::new("tower-tp");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (resp, body) = rig.run(call(
        Request::get("/users/1")
            .header("X-Request-ID", "req-tp")
            .header("traceparent", tp)
            .body(Body::empty())
            .unwrap(),
    ));
    assert_eq!(echoed(&resp), "req-tp");
    assert_eq!(body, "4bf92f3577b34da6a3ce929d0e0e4736 req-tp");
    for m in rig.records(2) {
        assert_eq!(m.str("request_id"), "req-tp");
        assert_eq!(m.str("correlation_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    let layer = RequestLogLayer::builder()
        .id_generator(IdGenerator::UuidV4)
        .build();
    let resp = rig
        .run(layer.layer(answering(200)).oneshot(req_get("/x")))
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    for m in rig.records(2) {
        assert_eq!(m.str("request_id"), id);
    }
    rig.shipper.shutdown(WAIT).unwrap();
}

/// The body of [`grpc_answer`]'s responses.
type GrpcBody = http_body_util::StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
>;

/// A gRPC-style answer: one message, then trailers with `grpc-status` = `code`.
fn grpc_answer(
    code: &'static str,
) -> impl tower::Service<Request<String>, Response = Response<GrpcBody>, Error = Infallible> + Clone
{
    tower::service_fn(move |_req: Request<String>| async move {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static(code));
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/grpc")
                .body(body)
                .unwrap(),
        )
    })
}

#[test]
fn grpc_status_is_read_from_the_trailers_when_the_body_ends() {
    let rig = Rig::new("tower-grpc-trailers");
    let resp = rig
        .run(RequestLog::new(grpc_answer("13")).oneshot(req_get("/pkg.Svc/Call")))
        .unwrap();
    // The head alone says 200: no access record yet.
    rig.shipper.flush(WAIT).unwrap();
    assert!(
        rig.cap.drain(Duration::from_millis(300)).is_empty(),
        "the access record waits for the trailers"
    );
    let collected = rig.run(resp.into_body().collect()).unwrap();
    assert_eq!(
        collected.trailers().unwrap()["grpc-status"],
        "13",
        "trailers pass unchanged"
    );
    let m = &rig.records(1)[0];
    assert_eq!(m.str("logger"), ACCESS_TARGET);
    assert_eq!(m.field("status").as_u64(), Some(200));
    assert_eq!(m.field("grpc_status").as_i64(), Some(13), "{}", m.body);
    assert_eq!(m.str("levelname"), "ERROR");
    assert!(
        m.str("message")
            .starts_with("GET /pkg.Svc/Call 200 grpc-status 13 "),
        "{}",
        m.body
    );

    // A body dropped before its trailers (a cancelled call): recorded
    // without a code, WARNING.
    let resp = rig
        .run(RequestLog::new(grpc_answer("0")).oneshot(req_get("/pkg.Svc/Call")))
        .unwrap();
    rig.run(async move { drop(resp) });
    let m = &rig.records(1)[0];
    assert!(m.field("grpc_status").is_null(), "{}", m.body);
    assert_eq!(m.str("levelname"), "WARNING");
    assert!(
        m.str("message").contains(" 200 grpc-status none "),
        "{}",
        m.body
    );
    rig.shipper.shutdown(WAIT).unwrap();
}
