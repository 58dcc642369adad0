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
//!     .layer(logcollect_tower::RequestLogLayer::new());
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
//! | `request_id` | the incoming `X-Request-ID`, else `X-Correlation-ID`, when [valid](logcollect::correlation::is_valid) (1 to 128 characters of `A-Z a-z 0-9 . _ : -`); else a new UUIDv7. A hostile or oversized header is replaced, never trusted |
//! | `correlation_id` | a valid incoming `X-Correlation-ID`, else the request id; [`logcollect::correlation::current`] returns it inside the request |
//! | `method` | `GET`, `POST`, … |
//! | `route` | the route template (`/users/{id}`) from axum's `MatchedPath`, with feature `axum`, when the layer is added with `Router::layer` or `Router::route_layer` |
//! | `path` | the request path (`/users/1`), without the query string |
//! | `status`, `latency_ms` | set when the response is ready |
//!
//! ## The access record
//!
//! One INFO record per request, target `logcollect_tower::access`, message
//! `GET /users/1 200 3.2ms`, with the span's fields and `status` and
//! `latency_ms` (milliseconds, microsecond precision). The latency runs from
//! the call to the response head; a streamed body may take longer. When the
//! inner service fails (a tower error, not an HTTP status), the message says
//! `error` instead of a status and the record has no `status` field. A
//! request whose response future is dropped before it completes (the client
//! went away, an outer timeout fired) writes no access record.
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
//! The layer itself needs only `tower-layer`, `tower-service` and `http`, so
//! it works with any tower-based server; the core `logcollect` crate never
//! depends on tower or axum.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

/// `X-Request-ID`: read from the request, echoed in the response.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// `X-Correlation-ID`: read from the request (the request id when there is
/// no `X-Request-ID`, and the correlation id when valid).
pub const CORRELATION_ID_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

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

/// A tower [`Layer`] that wraps a service in [`RequestLog`]: a span per
/// request with its id, one access record per request, the id echoed in
/// `X-Request-ID`. See the [crate docs](crate).
#[derive(Debug, Clone, Default)]
pub struct RequestLogLayer {
    _private: (),
}

impl RequestLogLayer {
    /// The layer.
    pub fn new() -> Self {
        RequestLogLayer::default()
    }
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog { inner }
    }
}

/// The service [`RequestLogLayer`] makes. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    inner: S,
}

impl<S> RequestLog<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        RequestLog { inner }
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

/// The first value of `name`, when it is a valid id.
fn valid_header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    logcollect::correlation::is_valid(v).then_some(v)
}

/// The request id and correlation id for a request's headers.
fn ids(headers: &HeaderMap) -> (String, String) {
    let request = valid_header(headers, &REQUEST_ID_HEADER);
    let correlation = valid_header(headers, &CORRELATION_ID_HEADER);
    let request_id = request
        .or(correlation)
        .map_or_else(logcollect::correlation::generate, str::to_owned);
    let correlation_id = correlation.map_or_else(|| request_id.clone(), str::to_owned);
    (request_id, correlation_id)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let (request_id, correlation_id) = ids(req.headers());
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "request",
            request_id = request_id.as_str(),
            correlation_id = tracing::field::Empty,
            method = req.method().as_str(),
            route = tracing::field::Empty,
            path = req.uri().path(),
            status = tracing::field::Empty,
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
            req.headers_mut().insert(REQUEST_ID_HEADER, h.clone());
        }
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
            span,
            start,
            method,
            path,
            header,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestLog`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        start: Instant,
        method: Method,
        path: String,
        header: Option<HeaderValue>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("span", &self.span)
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        // Microsecond precision is plenty for an access log and keeps the
        // JSON number short.
        let latency_ms = this.start.elapsed().as_micros() as f64 / 1000.0;
        this.span.record("latency_ms", latency_ms);
        match result {
            Ok(mut response) => {
                let status = response.status().as_u16();
                this.span.record("status", status);
                tracing::info!(
                    target: ACCESS_TARGET,
                    status,
                    latency_ms,
                    "{} {} {} {:.1}ms",
                    this.method,
                    this.path,
                    status,
                    latency_ms
                );
                if let Some(h) = this.header.take() {
                    response.headers_mut().insert(REQUEST_ID_HEADER, h);
                }
                Poll::Ready(Ok(response))
            }
            Err(e) => {
                tracing::info!(
                    target: ACCESS_TARGET,
                    latency_ms,
                    "{} {} error {:.1}ms",
                    this.method,
                    this.path,
                    latency_ms
                );
                Poll::Ready(Err(e))
            }
        }
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

    #[test]
    fn request_id_then_correlation_id_then_generated() {
        let (r, c) = ids(&headers(&[(&REQUEST_ID_HEADER, "abc-123")]));
        assert_eq!((r.as_str(), c.as_str()), ("abc-123", "abc-123"));
        let (r, c) = ids(&headers(&[(&CORRELATION_ID_HEADER, "corr-1")]));
        assert_eq!((r.as_str(), c.as_str()), ("corr-1", "corr-1"));
        let (r, c) = ids(&headers(&[
            (&REQUEST_ID_HEADER, "req-1"),
            (&CORRELATION_ID_HEADER, "corr-1"),
        ]));
        assert_eq!((r.as_str(), c.as_str()), ("req-1", "corr-1"));
        let (r, c) = ids(&HeaderMap::new());
        assert!(logcollect::correlation::is_valid(&r));
        assert_eq!(r, c);
    }

    #[test]
    fn invalid_headers_are_replaced() {
        for bad in ["a b", "x\"{", &"y".repeat(129), ""] {
            let (r, _) = ids(&headers(&[(&REQUEST_ID_HEADER, bad)]));
            assert_ne!(r, bad);
            assert!(logcollect::correlation::is_valid(&r));
        }
        // An invalid X-Request-ID falls back to a valid X-Correlation-ID.
        let (r, c) = ids(&headers(&[
            (&REQUEST_ID_HEADER, "bad id"),
            (&CORRELATION_ID_HEADER, "corr-2"),
        ]));
        assert_eq!((r.as_str(), c.as_str()), ("corr-2", "corr-2"));
    }
}
