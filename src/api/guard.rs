//! Middleware every response passes: the request time limit, the start-up gate and the
//! security headers.

use super::error::ApiError;
use super::Startup;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tower_http::set_header::SetResponseHeaderLayer;

/// Answers 503 once a request has taken `limit` (`http.request_timeout_ms`), whatever it was
/// waiting for: a body sent a byte at a time, or a dependency that does not answer.
pub async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout { limit_ms: limit.as_millis() as u64 }.into_response(),
    }
}

/// The API proper waits for start-up (database created and migrated): until then its routes
/// answer 503 and only health, metrics and the API document are served.
pub async fn until_started(State(startup): State<Arc<Startup>>, req: Request, next: Next) -> Response {
    if startup.is_finished() {
        return next.run(req).await;
    }
    ApiError::Unavailable {
        message: "sluice is starting (see /readyz for what it waits for); retry shortly".into(),
        retry_after_secs: 2,
    }
    .into_response()
}

/// Headers on every response, where a route did not set its own: no MIME sniffing, no
/// referrer leaking ids from URLs, no framing, and HSTS where sluice is served over HTTPS.
pub fn security_headers(router: Router, hsts: bool) -> Router {
    let fixed = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    let mut router = router;
    for (name, value) in fixed {
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value)));
    }
    if hsts {
        let name: HeaderName = header::STRICT_TRANSPORT_SECURITY;
        let value = HeaderValue::from_static("max-age=31536000; includeSubDomains");
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, value));
    }
    router
}
