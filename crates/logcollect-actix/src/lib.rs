//! # logcollect-actix
//!
//! Request logging for [actix-web](https://docs.rs/actix-web), with the same
//! fields and behaviour as `logcollect-tower` for tower-based servers:
//! [`RequestLog`] opens a `tracing` span per request, so every record the
//! request makes carries its id, and writes one access record when the
//! response is ready.
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let _guard = logcollect::boot::default_config(logcollect::Config::from_env()?)?;
//! HttpServer::new(|| {
//!     App::new()
//!         .wrap(
//!             logcollect_actix::RequestLog::builder()
//!                 .skip_paths(["/healthz"])
//!                 .build(),
//!         )
//!         .route("/users/{id}", web::get().to(|| async {
//!             tracing::info!("looking the user up"); // carries request_id, correlation_id, …
//!             "ann"
//!         }))
//! })
//! .bind("127.0.0.1:3000")?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```
//!
//! ## The request span and the access record
//!
//! A span named `request` (target `logcollect_actix::request`, level INFO)
//! with the fields of `logcollect-tower`'s, which every record made inside
//! the request carries:
//!
//! | field | value |
//! |---|---|
//! | `request_id` | the incoming `X-Request-ID`, else `X-Correlation-ID`, when [valid](logcollect::correlation::is_valid); else a new id (UUIDv7, or as [`RequestLogBuilder::id_generator`] says) |
//! | `correlation_id` | a valid `X-Correlation-ID`, else the trace id of a valid `traceparent`, else the request id; [`logcollect::correlation::current`] returns it inside the request |
//! | `method`, `path` | `GET`, `/users/1` (no query string) |
//! | `route` | the matched pattern (`/users/{id}`): on the access record always; on every record when the middleware wraps a `Scope` or `Resource` (actix matches the route inside `App::wrap`) |
//! | `status`, `latency_ms` | set when the response is ready |
//!
//! One access record per request, target `logcollect_actix::access`,
//! message `GET /users/1 200 3.2ms`, at the level [`default_level`] gives
//! (5xx ERROR, 4xx WARNING, else INFO; [`RequestLogBuilder::level`] sets
//! your own rule). A handler error is recorded with the status of the
//! response actix makes from it. Requests to the
//! [skipped paths](RequestLogBuilder::skip_paths) write none. The request id
//! is echoed in the response's `X-Request-ID`, set in the request's own
//! `X-Request-ID` header and put in the request extensions as [`RequestId`]
//! (`web::ReqData<RequestId>`).
//!
//! actix-web brings its own `http` types (`actix_web::http`); this crate
//! keeps them out of the core, which never depends on actix-web.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{Error, HttpMessage as _};
use logcollect::correlation::{IdGenerator, RequestIds};
use tracing::{Instrument as _, Level};

/// `X-Request-ID`: read from the request, echoed in the response (the
/// default of [`RequestLogBuilder::request_id_header`]).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// `X-Correlation-ID` (the default of
/// [`RequestLogBuilder::correlation_id_header`]).
pub const CORRELATION_ID_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// `traceparent` (W3C trace context).
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// The default id generator: UUIDv7.
pub const DEFAULT_ID_GENERATOR: IdGenerator = IdGenerator::UuidV7;

/// The default paths without access records: none.
pub const DEFAULT_SKIP_PATHS: &[&str] = &[];

/// The default level rule: [`default_level`].
pub const DEFAULT_LEVEL: fn(StatusCode) -> Level = default_level;

/// Target of the request span.
pub const SPAN_TARGET: &str = "logcollect_actix::request";

/// Target (and so `logger` field) of the access records.
pub const ACCESS_TARGET: &str = "logcollect_actix::access";

/// The id of the request being served, in the request extensions
/// (`web::ReqData<RequestId>`).
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

/// The default level of an access record: ERROR for 5xx, WARN (`levelname`
/// `WARNING`) for 4xx, INFO otherwise.
pub fn default_level(status: StatusCode) -> Level {
    if status.is_server_error() {
        Level::ERROR
    } else if status.is_client_error() {
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
    level: fn(StatusCode) -> Level,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            request_id_header: REQUEST_ID_HEADER,
            correlation_id_header: CORRELATION_ID_HEADER,
            id_generator: DEFAULT_ID_GENERATOR,
            skip_paths: DEFAULT_SKIP_PATHS.iter().map(|p| (*p).to_owned()).collect(),
            level: DEFAULT_LEVEL,
        }
    }
}

/// The actix-web middleware: `App::new().wrap(RequestLog::new())`. See the
/// [crate docs](crate).
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    settings: Arc<Settings>,
}

impl RequestLog {
    /// The middleware with the defaults (see [`RequestLogBuilder`]).
    pub fn new() -> Self {
        RequestLog::default()
    }

    /// A builder to change the defaults.
    pub fn builder() -> RequestLogBuilder {
        RequestLogBuilder::default()
    }
}

/// Builds a [`RequestLog`].
///
/// | setting | default |
/// |---|---|
/// | [`request_id_header`](Self::request_id_header) | `x-request-id` ([`REQUEST_ID_HEADER`]) |
/// | [`correlation_id_header`](Self::correlation_id_header) | `x-correlation-id` ([`CORRELATION_ID_HEADER`]) |
/// | [`id_generator`](Self::id_generator) | UUIDv7 ([`DEFAULT_ID_GENERATOR`]) |
/// | [`skip_paths`](Self::skip_paths) | none ([`DEFAULT_SKIP_PATHS`]) |
/// | [`level`](Self::level) | [`default_level`] ([`DEFAULT_LEVEL`]) |
#[derive(Debug, Default)]
pub struct RequestLogBuilder {
    settings: Settings,
}

impl RequestLogBuilder {
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

    /// How ids are made for requests that bring none (UUIDv7 by default;
    /// `IdGenerator::UuidV4` for neighbours that accept only v4).
    #[must_use]
    pub fn id_generator(mut self, generator: IdGenerator) -> Self {
        self.settings.id_generator = generator;
        self
    }

    /// Request paths (exact, without the query string) that write no access
    /// record. Replaces the list.
    #[must_use]
    pub fn skip_paths<I>(mut self, paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.settings.skip_paths = paths.into_iter().map(Into::into).collect();
        self
    }

    /// The level of an access record for its status; see [`default_level`].
    #[must_use]
    pub fn level(mut self, level: fn(StatusCode) -> Level) -> Self {
        self.settings.level = level;
        self
    }

    /// The middleware.
    pub fn build(self) -> RequestLog {
        RequestLog {
            settings: Arc::new(self.settings),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequestLog
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    S::Future: 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = RequestLogMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestLogMiddleware {
            service,
            settings: self.settings.clone(),
        }))
    }
}

/// The service [`RequestLog`] wraps around an app, scope or resource.
#[derive(Debug)]
pub struct RequestLogMiddleware<S> {
    service: S,
    settings: Arc<Settings>,
}

fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name)?.to_str().ok()
}

/// The middleware's response future.
type LocalResponse<B> = Pin<Box<dyn Future<Output = Result<ServiceResponse<B>, Error>>>>;

/// Emits a `tracing` event at a level chosen at run time.
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

impl<S, B> Service<ServiceRequest> for RequestLogMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    S::Future: 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalResponse<B>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let start = Instant::now();
        let settings = self.settings.clone();
        let RequestIds {
            request_id,
            correlation_id,
        } = RequestIds::from_headers(
            header_str(req.headers(), &settings.request_id_header),
            header_str(req.headers(), &settings.correlation_id_header),
            header_str(req.headers(), &TRACEPARENT_HEADER),
            settings.id_generator,
        );
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "request",
            request_id = request_id.as_str(),
            correlation_id = tracing::field::Empty,
            method = req.method().as_str(),
            route = tracing::field::Empty,
            path = req.path(),
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        logcollect::correlation::attach(&span, &correlation_id);
        if let Some(route) = req.match_pattern() {
            span.record("route", route.as_str());
        }
        // Valid ids are visible ASCII, so this cannot fail.
        let header = HeaderValue::from_str(&request_id).ok();
        if let Some(h) = &header {
            req.headers_mut()
                .insert(settings.request_id_header.clone(), h.clone());
        }
        let skip = settings.skip_paths.iter().any(|p| p == req.path());
        let method = req.method().clone();
        let path = req.path().to_owned();
        req.extensions_mut()
            .insert(RequestId(Arc::from(request_id.as_str())));
        let inner = {
            let _entered = span.enter();
            self.service.call(req)
        };
        let record_span = span.clone();
        Box::pin(
            async move {
                let result = inner.await;
                let span = record_span;
                let latency_ms = start.elapsed().as_micros() as f64 / 1000.0;
                span.record("latency_ms", latency_ms);
                let (status, route) = match &result {
                    Ok(res) => (res.status(), res.request().match_pattern()),
                    Err(e) => (e.as_response_error().status_code(), None),
                };
                span.record("status", status.as_u16());
                if let Some(route) = &route {
                    span.record("route", route.as_str());
                }
                if !skip {
                    event_at!(
                        (settings.level)(status),
                        target: ACCESS_TARGET,
                        status = status.as_u16(),
                        route = route.as_deref(),
                        latency_ms,
                        "{} {} {} {:.1}ms",
                        method,
                        path,
                        status.as_u16(),
                        latency_ms
                    );
                }
                result.map(|mut res| {
                    if let Some(h) = header {
                        res.headers_mut()
                            .insert(settings.request_id_header.clone(), h);
                    }
                    res
                })
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults() {
        let s = Settings::default();
        assert_eq!(s.request_id_header, "x-request-id");
        assert_eq!(s.correlation_id_header, "x-correlation-id");
        assert!(matches!(s.id_generator, IdGenerator::UuidV7));
        assert!(s.skip_paths.is_empty());
        assert!(std::ptr::fn_addr_eq(
            s.level,
            default_level as fn(StatusCode) -> Level
        ));
    }

    #[test]
    fn default_levels() {
        let l = |c: u16| default_level(StatusCode::from_u16(c).unwrap());
        assert_eq!(l(200), Level::INFO);
        assert_eq!(l(304), Level::INFO);
        assert_eq!(l(404), Level::WARN);
        assert_eq!(l(500), Level::ERROR);
    }
}
