//! # logcollect-tower
//!
//! Request logging for web services built on [tower](https://docs.rs/tower)
//! (axum, hyper, tonic): [`RequestLogLayer`] opens a `tracing` span per
//! request, so every record the request makes carries its id and route, and
//! writes one access record when the response is ready.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let _guard = logcollect::boot::default_config(logcollect::Config::from_env()?)?;
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async {
//!         tracing::info!("looking the user up"); // carries request_id, route, …
//!         "ann"
//!     }))
//!     .route("/healthz", get(|| async { "ok" }))
//!     .layer(
//!         logcollect_tower::RequestLogLayer::builder()
//!             .skip_paths(["/healthz"]) // no access record for the health checks
//!             .build(),
//!     );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! ## The request span
//!
//! A span named `request` (target `logcollect_tower::request`, level INFO)
//! with these fields, which every record made inside the request carries:
//!
//! | field | value |
//! |---|---|
//! | `request_id` | the incoming `X-Request-ID`, else `X-Correlation-ID`, when [valid](logcollect::correlation::is_valid) (1 to 128 characters of `A-Z a-z 0-9 . _ : -`); else a new id (UUIDv7, or as [`RequestLogLayerBuilder::id_generator`] says). A hostile or oversized header is replaced, never trusted |
//! | `correlation_id` | a valid incoming `X-Correlation-ID`, else the trace id of a valid `traceparent` (the flow the request belongs to), else the request id; [`logcollect::correlation::current`] returns it inside the request |
//! | `method` | `GET`, `POST`, … |
//! | `route` | the route template (`/users/{id}`) from axum's `MatchedPath`, with feature `axum`, when the layer is added with `Router::layer` or `Router::route_layer` |
//! | `path` | the request path (`/users/1`), without the query string |
//! | `status`, `grpc_status`, `latency_ms` | set when the response is ready |
//!
//! The header names are configurable
//! ([`request_id_header`](RequestLogLayerBuilder::request_id_header),
//! [`correlation_id_header`](RequestLogLayerBuilder::correlation_id_header)).
//!
//! ## The access record
//!
//! One record per request, target `logcollect_tower::access`, message
//! `GET /users/1 200 3.2ms`, with the span's fields and `status` and
//! `latency_ms` (milliseconds, microsecond precision). Its level follows the
//! outcome ([`default_level`]: 5xx and failures ERROR, 4xx WARNING, else
//! INFO; [`RequestLogLayerBuilder::level`] sets your own rule). The latency
//! runs from the call to the response head; a streamed body may take
//! longer. When the inner service fails (a tower error, not an HTTP status),
//! the message says `error` instead of a status and the record has no
//! `status` field. A request whose response future is dropped before it
//! completes (the client went away, an outer timeout fired) writes no access
//! record. Requests to the [skipped paths](RequestLogLayerBuilder::skip_paths)
//! (health checks) write none either; they still get their span and id.
//!
//! **gRPC** (tonic): a response whose content type is `application/grpc…`
//! carries its real status in the `grpc-status` trailer (the HTTP status is
//! 200 even for an error). The access record then waits for the end of the
//! response body and has `grpc_status` (the code, 0 for OK) besides
//! `status`; its message reads `POST /pkg.Svc/Method 200 grpc-status 5
//! 1.2ms` and the latency runs to the trailers. A "trailers-only" response
//! (tonic's errors) has `grpc-status` in its head and is recorded at once.
//! A gRPC body dropped before its trailers (a cancelled call) is recorded
//! without `grpc_status`, at WARNING by default.
//!
//! The request id is echoed in the response header `X-Request-ID`, written
//! into the request's own `X-Request-ID` header (so the inner service sees
//! the id in force) and put in the request extensions as [`RequestId`]
//! (axum: `Extension<RequestId>`).
//!
//! ## Feature flags
//!
//! | feature | default | what |
//! |---|---|---|
//! | `axum` | no | read axum's `MatchedPath` into `route` |
//!
//! The layer itself needs only `tower-layer`, `tower-service`, `http` and
//! `http-body`, so it works with any tower-based server; the core
//! `logcollect` crate never depends on tower or axum.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use logcollect::correlation::{IdGenerator, RequestIds};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Level;

/// `X-Request-ID`: read from the request, echoed in the response (the
/// default of [`RequestLogLayerBuilder::request_id_header`]).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// `X-Correlation-ID`: read from the request (the request id when there is
/// no request id header, and the correlation id when valid; the default of
/// [`RequestLogLayerBuilder::correlation_id_header`]).
pub const CORRELATION_ID_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// `traceparent` (W3C trace context): its trace id is the correlation id
/// when the request has no correlation id header.
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// The default request id header: [`REQUEST_ID_HEADER`].
pub const DEFAULT_REQUEST_ID_HEADER: HeaderName = REQUEST_ID_HEADER;

/// The default correlation id header: [`CORRELATION_ID_HEADER`].
pub const DEFAULT_CORRELATION_ID_HEADER: HeaderName = CORRELATION_ID_HEADER;

/// The default id generator: UUIDv7.
pub const DEFAULT_ID_GENERATOR: IdGenerator = IdGenerator::UuidV7;

/// The default paths without access records: none (a health check path is
/// yours to name; guessing one could hide a real endpoint).
pub const DEFAULT_SKIP_PATHS: &[&str] = &[];

/// The default level rule: [`default_level`].
pub const DEFAULT_LEVEL: fn(&Outcome) -> Level = default_level;

/// Target of the request span.
pub const SPAN_TARGET: &str = "logcollect_tower::request";

/// Target (and so `logger` field) of the access records.
pub const ACCESS_TARGET: &str = "logcollect_tower::access";

/// The id of the request being served, in the request extensions
/// (axum: `Extension<RequestId>`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RequestId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// How a request ended, for the access record's level
/// ([`RequestLogLayerBuilder::level`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    status: Option<StatusCode>,
    grpc: bool,
    grpc_status: Option<i32>,
}

impl Outcome {
    /// An HTTP response with `status`.
    pub fn http(status: StatusCode) -> Self {
        Outcome {
            status: Some(status),
            grpc: false,
            grpc_status: None,
        }
    }

    /// A gRPC response with HTTP `status` and the `grpc-status` code, `None`
    /// when the response ended (or was dropped) without one.
    pub fn grpc(status: StatusCode, grpc_status: Option<i32>) -> Self {
        Outcome {
            status: Some(status),
            grpc: true,
            grpc_status,
        }
    }

    /// The inner service failed: no response.
    pub fn failed() -> Self {
        Outcome {
            status: None,
            grpc: false,
            grpc_status: None,
        }
    }

    /// The HTTP status; `None` when the service failed.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// Whether the response is a gRPC one.
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// The `grpc-status` code of a gRPC response, when it had one.
    pub fn grpc_status(&self) -> Option<i32> {
        self.grpc_status
    }
}

/// The default level of an access record:
///
/// | outcome | level |
/// |---|---|
/// | the service failed (no response) | ERROR |
/// | HTTP 5xx | ERROR |
/// | HTTP 4xx | WARN (`levelname` `WARNING`) |
/// | gRPC `UNKNOWN` (2), `DEADLINE_EXCEEDED` (4), `UNIMPLEMENTED` (12), `INTERNAL` (13), `UNAVAILABLE` (14), `DATA_LOSS` (15): the codes OpenTelemetry's conventions count as server errors | ERROR |
/// | any other gRPC code but `OK` (0), or no code (a cancelled call) | WARN |
/// | anything else | INFO |
pub fn default_level(outcome: &Outcome) -> Level {
    let Some(status) = outcome.status else {
        return Level::ERROR;
    };
    if status.is_server_error() {
        return Level::ERROR;
    }
    if outcome.grpc {
        return match outcome.grpc_status {
            Some(0) => Level::INFO,
            Some(2 | 4 | 12 | 13 | 14 | 15) => Level::ERROR,
            _ => Level::WARN,
        };
    }
    if status.is_client_error() {
        Level::WARN
    } else {
        Level::INFO
    }
}

#[derive(Debug)]
struct Settings {
    request_id_header: HeaderName,
    correlation_id_header: HeaderName,
    id_generator: IdGenerator,
    skip_paths: Vec<String>,
    level: fn(&Outcome) -> Level,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            request_id_header: DEFAULT_REQUEST_ID_HEADER,
            correlation_id_header: DEFAULT_CORRELATION_ID_HEADER,
            id_generator: DEFAULT_ID_GENERATOR,
            skip_paths: DEFAULT_SKIP_PATHS.iter().map(|p| (*p).to_owned()).collect(),
            level: DEFAULT_LEVEL,
        }
    }
}

/// A tower [`Layer`] that wraps a service in [`RequestLog`]: a span per
/// request with its id, one access record per request, the id echoed in
/// `X-Request-ID`. See the [crate docs](crate).
#[derive(Debug, Clone, Default)]
pub struct RequestLogLayer {
    settings: Arc<Settings>,
}

impl RequestLogLayer {
    /// The layer with the defaults (see [`RequestLogLayerBuilder`]).
    pub fn new() -> Self {
        RequestLogLayer::default()
    }

    /// A builder to change the defaults.
    pub fn builder() -> RequestLogLayerBuilder {
        RequestLogLayerBuilder::default()
    }
}

/// Builds a [`RequestLogLayer`].
///
/// | setting | default |
/// |---|---|
/// | [`request_id_header`](Self::request_id_header) | `x-request-id` ([`DEFAULT_REQUEST_ID_HEADER`]) |
/// | [`correlation_id_header`](Self::correlation_id_header) | `x-correlation-id` ([`DEFAULT_CORRELATION_ID_HEADER`]) |
/// | [`id_generator`](Self::id_generator) | UUIDv7 ([`DEFAULT_ID_GENERATOR`]) |
/// | [`skip_paths`](Self::skip_paths) | none ([`DEFAULT_SKIP_PATHS`]) |
/// | [`level`](Self::level) | [`default_level`]: 5xx ERROR, 4xx WARNING, else INFO ([`DEFAULT_LEVEL`]) |
#[derive(Debug, Default)]
pub struct RequestLogLayerBuilder {
    settings: Settings,
}

impl RequestLogLayerBuilder {
    /// The header the request id is read from and echoed in.
    #[must_use]
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        self.settings.request_id_header = name;
        self
    }

    /// The header the correlation id is read from.
    #[must_use]
    pub fn correlation_id_header(mut self, name: HeaderName) -> Self {
        self.settings.correlation_id_header = name;
        self
    }

    /// How ids are made for requests that bring none: UUIDv7 by default;
    /// `IdGenerator::UuidV4` for neighbours that accept only v4 ids (the
    /// default validator of Python's asgi-correlation-id).
    #[must_use]
    pub fn id_generator(mut self, generator: IdGenerator) -> Self {
        self.settings.id_generator = generator;
        self
    }

    /// Request paths (exact, without the query string) that write no access
    /// record: health checks and metrics scrapes. Replaces the list.
    #[must_use]
    pub fn skip_paths<I>(mut self, paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.settings.skip_paths = paths.into_iter().map(Into::into).collect();
        self
    }

    /// The level of an access record for its [`Outcome`]; see
    /// [`default_level`].
    ///
    /// ```
    /// use logcollect_tower::{Outcome, RequestLogLayer};
    /// use tracing::Level;
    /// // 404s are routine here: INFO; everything else as by default.
    /// let layer = RequestLogLayer::builder()
    ///     .level(|o: &Outcome| match o.status() {
    ///         Some(s) if s == http::StatusCode::NOT_FOUND => Level::INFO,
    ///         _ => logcollect_tower::default_level(o),
    ///     })
    ///     .build();
    /// ```
    #[must_use]
    pub fn level(mut self, level: fn(&Outcome) -> Level) -> Self {
        self.settings.level = level;
        self
    }

    /// The layer.
    pub fn build(self) -> RequestLogLayer {
        RequestLogLayer {
            settings: Arc::new(self.settings),
        }
    }
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// The service [`RequestLogLayer`] makes. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> RequestLog<S> {
    /// Wraps `inner`, with the default settings.
    pub fn new(inner: S) -> Self {
        RequestLog {
            inner,
            settings: Arc::default(),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name)?.to_str().ok()
}

/// The request id and correlation id for a request's headers.
fn ids(headers: &HeaderMap, settings: &Settings) -> RequestIds {
    RequestIds::from_headers(
        header_str(headers, &settings.request_id_header),
        header_str(headers, &settings.correlation_id_header),
        header_str(headers, &TRACEPARENT_HEADER),
        settings.id_generator,
    )
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let RequestIds {
            request_id,
            correlation_id,
        } = ids(req.headers(), &self.settings);
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "request",
            request_id = request_id.as_str(),
            correlation_id = tracing::field::Empty,
            method = req.method().as_str(),
            route = tracing::field::Empty,
            path = req.uri().path(),
            status = tracing::field::Empty,
            grpc_status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        logcollect::correlation::attach(&span, &correlation_id);
        #[cfg(feature = "axum")]
        if let Some(route) = req.extensions().get::<axum::extract::MatchedPath>() {
            span.record("route", route.as_str());
        }
        // Valid ids are visible ASCII, so this cannot fail.
        let header = HeaderValue::from_str(&request_id).ok();
        if let Some(h) = &header {
            req.headers_mut()
                .insert(self.settings.request_id_header.clone(), h.clone());
        }
        let skip = self
            .settings
            .skip_paths
            .iter()
            .any(|p| p == req.uri().path());
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        req.extensions_mut()
            .insert(RequestId(Arc::from(request_id.as_str())));
        let inner = {
            // The inner service's synchronous part runs inside the span too.
            let _entered = span.enter();
            self.inner.call(req)
        };
        ResponseFuture {
            inner,
            access: Some(Access {
                span,
                start,
                method,
                path,
                skip,
                settings: self.settings.clone(),
            }),
            header,
        }
    }
}

/// What the access record needs, carried from the call to the response
/// head and, for gRPC, on to the trailers.
struct Access {
    span: tracing::Span,
    start: Instant,
    method: Method,
    path: String,
    skip: bool,
    settings: Arc<Settings>,
}

/// Emits a `tracing` event at a level chosen at run time (the macros want
/// a constant).
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::error!($($rest)+),
            Level::WARN => tracing::warn!($($rest)+),
            Level::INFO => tracing::info!($($rest)+),
            Level::DEBUG => tracing::debug!($($rest)+),
            _ => tracing::trace!($($rest)+),
        }
    };
}

impl Access {
    /// Records the outcome on the span and writes the access record.
    fn finish(self, outcome: Outcome) {
        let _entered = self.span.enter();
        // Microsecond precision is plenty for an access log and keeps the
        // JSON number short.
        let latency_ms = self.start.elapsed().as_micros() as f64 / 1000.0;
        self.span.record("latency_ms", latency_ms);
        let status = outcome.status.map(|s| s.as_u16());
        if let Some(s) = status {
            self.span.record("status", s);
        }
        if let Some(g) = outcome.grpc_status {
            self.span.record("grpc_status", g);
        }
        if self.skip {
            return;
        }
        let detail = match (status, outcome.grpc, outcome.grpc_status) {
            (None, _, _) => "error".to_owned(),
            (Some(s), false, _) => s.to_string(),
            (Some(s), true, Some(g)) => format!("{s} grpc-status {g}"),
            (Some(s), true, None) => format!("{s} grpc-status none"),
        };
        event_at!(
            (self.settings.level)(&outcome),
            target: ACCESS_TARGET,
            status,
            grpc_status = outcome.grpc_status,
            latency_ms,
            "{} {} {} {:.1}ms",
            self.method,
            self.path,
            detail,
            latency_ms
        );
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("span", &self.span)
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Whether a response is gRPC (`content-type: application/grpc…`).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` code in `headers`, when there is a well-formed one.
fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestLog`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        access: Option<Access>,
        header: Option<HeaderValue>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.access.as_ref().map(|a| a.span.enter());
            ready!(this.inner.poll(cx))
        };
        let Some(access) = this.access.take() else {
            // Polled again after completion: a contract violation of the
            // caller; answer as the inner future does, with nothing logged.
            return Poll::Ready(result.map(|r| r.map(ResponseBody::plain)));
        };
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                if let Some(h) = this.header.take() {
                    parts
                        .headers
                        .insert(access.settings.request_id_header.clone(), h);
                }
                let body = if !is_grpc(&parts.headers) {
                    access.finish(Outcome::http(parts.status));
                    ResponseBody::plain(body)
                } else if let Some(code) = grpc_status(&parts.headers) {
                    // Trailers-only: the status is in the head.
                    access.finish(Outcome::grpc(parts.status, Some(code)));
                    ResponseBody::plain(body)
                } else {
                    ResponseBody {
                        inner: body,
                        pending: Some(Pending {
                            access,
                            status: parts.status,
                        }),
                    }
                };
                Poll::Ready(Ok(Response::from_parts(parts, body)))
            }
            Err(e) => {
                access.finish(Outcome::failed());
                Poll::Ready(Err(e))
            }
        }
    }
}

/// A gRPC access record waiting for the trailers.
#[derive(Debug)]
struct Pending {
    access: Access,
    status: StatusCode,
}

impl Pending {
    fn finish(self, grpc_status: Option<i32>) {
        self.access.finish(Outcome::grpc(self.status, grpc_status));
    }
}

pin_project_lite::pin_project! {
    /// The response body of [`RequestLog`]: the inner service's body,
    /// unchanged. For a gRPC response it writes the access record when the
    /// trailers pass (or the body ends or is dropped without them).
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(p) = this.project().pending.take() {
                p.finish(None);
            }
        }
    }
}

impl<B> ResponseBody<B> {
    fn plain(inner: B) -> Self {
        ResponseBody {
            inner,
            pending: None,
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if this.pending.is_some() {
            let done = match &frame {
                Some(Ok(f)) => f.trailers_ref().map(grpc_status),
                Some(Err(_)) | None => Some(None),
            };
            if let Some(code) = done {
                if let Some(p) = this.pending.take() {
                    p.finish(code);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append((*k).clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ids_of(h: &HeaderMap) -> (String, String) {
        let ids = ids(h, &Settings::default());
        (ids.request_id, ids.correlation_id)
    }

    #[test]
    fn request_id_then_correlation_id_then_generated() {
        let (r, c) = ids_of(&headers(&[(&REQUEST_ID_HEADER, "abc-123")]));
        assert_eq!((r.as_str(), c.as_str()), ("abc-123", "abc-123"));
        let (r, c) = ids_of(&headers(&[(&CORRELATION_ID_HEADER, "corr-1")]));
        assert_eq!((r.as_str(), c.as_str()), ("corr-1", "corr-1"));
        let (r, c) = ids_of(&headers(&[
            (&REQUEST_ID_HEADER, "req-1"),
            (&CORRELATION_ID_HEADER, "corr-1"),
        ]));
        assert_eq!((r.as_str(), c.as_str()), ("req-1", "corr-1"));
        let (r, c) = ids_of(&HeaderMap::new());
        assert!(logcollect::correlation::is_valid(&r));
        assert_eq!(r, c);
    }

    #[test]
    fn invalid_headers_are_replaced() {
        for bad in ["a b", "x\"{", &"y".repeat(129), ""] {
            let (r, _) = ids_of(&headers(&[(&REQUEST_ID_HEADER, bad)]));
            assert_ne!(r, bad);
            assert!(logcollect::correlation::is_valid(&r));
        }
        // An invalid X-Request-ID falls back to a valid X-Correlation-ID.
        let (r, c) = ids_of(&headers(&[
            (&REQUEST_ID_HEADER, "bad id"),
            (&CORRELATION_ID_HEADER, "corr-2"),
        ]));
        assert_eq!((r.as_str(), c.as_str()), ("corr-2", "corr-2"));
    }

    #[test]
    fn traceparent_names_the_flow_and_header_names_are_configurable() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (r, c) = ids_of(&headers(&[
            (&REQUEST_ID_HEADER, "req-1"),
            (&TRACEPARENT_HEADER, tp),
        ]));
        assert_eq!(
            (r.as_str(), c.as_str()),
            ("req-1", "4bf92f3577b34da6a3ce929d0e0e4736")
        );

        let custom = RequestLogLayer::builder()
            .request_id_header(HeaderName::from_static("x-amzn-trace-id"))
            .correlation_id_header(HeaderName::from_static("x-flow"))
            .id_generator(IdGenerator::UuidV4)
            .build();
        let h = headers(&[
            (&REQUEST_ID_HEADER, "ignored-now"),
            (&HeaderName::from_static("x-amzn-trace-id"), "amzn-1"),
            (&HeaderName::from_static("x-flow"), "flow-1"),
        ]);
        let ids = ids(&h, &custom.settings);
        assert_eq!(
            (ids.request_id.as_str(), ids.correlation_id.as_str()),
            ("amzn-1", "flow-1")
        );
        let ids = super::ids(&HeaderMap::new(), &custom.settings);
        let u = uuid::Uuid::parse_str(&ids.request_id).unwrap();
        assert_eq!(u.get_version_num(), 4);
    }

    #[test]
    fn documented_defaults() {
        let s = RequestLogLayer::new().settings;
        assert_eq!(s.request_id_header, "x-request-id");
        assert_eq!(s.correlation_id_header, "x-correlation-id");
        assert!(matches!(s.id_generator, IdGenerator::UuidV7));
        assert!(s.skip_paths.is_empty());
        assert!(std::ptr::fn_addr_eq(
            s.level,
            default_level as fn(&Outcome) -> Level
        ));
        let b = RequestLogLayer::builder().build().settings;
        assert_eq!(b.request_id_header, s.request_id_header);
        assert!(b.skip_paths.is_empty());
    }

    #[test]
    fn default_levels() {
        let http = |c: u16| default_level(&Outcome::http(StatusCode::from_u16(c).unwrap()));
        assert_eq!(http(200), Level::INFO);
        assert_eq!(http(302), Level::INFO);
        assert_eq!(http(404), Level::WARN);
        assert_eq!(http(499), Level::WARN);
        assert_eq!(http(500), Level::ERROR);
        assert_eq!(http(503), Level::ERROR);
        assert_eq!(default_level(&Outcome::failed()), Level::ERROR);
        let grpc = |c| default_level(&Outcome::grpc(StatusCode::OK, c));
        assert_eq!(grpc(Some(0)), Level::INFO);
        for warn in [1, 3, 5, 6, 7, 8, 9, 10, 11, 16] {
            assert_eq!(grpc(Some(warn)), Level::WARN, "{warn}");
        }
        for err in [2, 4, 12, 13, 14, 15] {
            assert_eq!(grpc(Some(err)), Level::ERROR, "{err}");
        }
        assert_eq!(grpc(None), Level::WARN);
    }

    #[test]
    fn grpc_detection() {
        let h = headers(&[(&http::header::CONTENT_TYPE, "application/grpc+proto")]);
        assert!(is_grpc(&h));
        assert!(!is_grpc(&headers(&[(
            &http::header::CONTENT_TYPE,
            "application/json"
        )])));
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("5"));
        assert_eq!(grpc_status(&h), Some(5));
        h.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(grpc_status(&h), None);
    }
}
