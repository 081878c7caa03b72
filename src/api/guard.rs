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
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

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

/// `router` inside what every response passes, outermost first: the HTTP trace span, the
/// security headers, a panic answered 500, and the time limit.
///
/// They wrap the router as one service rather than through `Router::layer`, which wraps every
/// route on its own: a request then cloned and boxed each layer of its route's stack, 18,000
/// instructions a request (callgrind), a tenth of sluice's own work per single command.
pub fn around(router: Router, limit: Duration, hsts: bool) -> Router {
    let stack = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(if_not_set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(if_not_set(header::REFERRER_POLICY, "no-referrer"))
        .layer(if_not_set(header::X_FRAME_OPTIONS, "DENY"))
        .option_layer(
            hsts.then(|| if_not_set(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000; includeSubDomains")),
        )
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(limit, time_limit))
        .service(router);
    Router::new().fallback_service(stack)
}

/// A header on every response where a route did not set its own: no MIME sniffing, no
/// referrer leaking ids from URLs, no framing, and HSTS where sluice is served over HTTPS.
fn if_not_set(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

fn panic_response(_: Box<dyn std::any::Any + Send>) -> Response {
    ApiError::Internal("request handler panicked".into()).into_response()
}
