//! The HTTP API: routes, state, middleware.

pub mod auth;
mod batch_body;
mod batches;
mod body;
mod commands;
mod dead_letters;
pub mod error;
mod guard;
mod health;
pub mod limits;
pub mod openapi;
mod operators;
mod reads;
pub mod server;
mod webhook_gate;
mod webhooks;

pub use health::Startup;
pub use webhook_gate::WebhookGate;

use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::schemas::SchemaRegistry;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use body::{BodyLimit, ShapeLimit};
use sqlx::PgPool;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

/// What every request handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    /// The connection the API publishes on (the workers' own in a worker-only process).
    pub broker: Broker,
    /// The workers' connection when they run in this process too: readiness covers it.
    pub worker_broker: Option<Broker>,
    pub schemas: Arc<SchemaRegistry>,
    pub auth: Arc<Authenticator>,
    pub reporter: Arc<crate::heartbeat::Reporter>,
    pub batch_settings: Arc<crate::config::BatchSettings>,
    pub limits: Arc<crate::config::LimitSettings>,
    pub limiter: Arc<limits::RateLimiter>,
    pub backpressure: Arc<limits::Backpressure>,
    /// Until it is finished, only health, metrics and the API document are served.
    pub startup: Arc<Startup>,
    /// The sources directory and rate limits of unauthenticated webhook deliveries.
    pub webhook_gate: Arc<webhook_gate::WebhookGate>,
    /// Seals secrets before they are stored.
    pub sealer: Arc<crate::secrets::Sealer>,
    /// How long records are kept (to tell a pruned command from a pending one).
    pub retention: Arc<crate::config::RetentionSettings>,
}

impl ApiState {
    /// Operator actions over this state's pool, broker and schemas, across every tenant.
    pub fn ops(&self) -> crate::ops::Operators {
        self.ops_within(crate::ops::Reach::Every)
    }

    /// Operator actions limited to `reach` (an API key's: [`auth::Principal::reach`]).
    pub fn ops_within(&self, reach: crate::ops::Reach) -> crate::ops::Operators {
        crate::ops::Operators {
            pool: self.pool.clone(),
            broker: self.broker.clone(),
            schemas: self.schemas.clone(),
            reach,
            sealer: self.sealer.clone(),
        }
    }
}

/// One command body through ingest's checks without HTTP: JSON parse, depth and string
/// limits, envelope shape and the type's schema. The fuzz targets drive it; an `Err` is what
/// the API would answer (always a 4xx).
pub fn check_command_body(
    schemas: &SchemaRegistry,
    limits: &crate::config::LimitSettings,
    bytes: &[u8],
) -> Result<(String, serde_json::Value), error::ApiError> {
    let value = body::parse_json(bytes, ShapeLimit::from(limits))?;
    commands::validate(schemas, value)
}

/// The full API (`/v1`, health, metrics), with `pages` (the dashboard, which the process
/// wiring hands in) served beside it behind the same start-up gate and limits.
pub fn router(state: ApiState, http: &crate::config::HttpSettings, pages: Router) -> Router {
    let body_limit = http.body_limit_bytes;
    let v1 = Router::new()
        .route("/v1/commands", post(commands::submit))
        .route("/v1/commands/{id}", get(commands::status))
        .route("/v1/accounts/{id}", get(reads::account))
        .route("/v1/events", get(reads::events))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/groups", get(dead_letters::groups))
        .route("/v1/dead-letters/replay", post(dead_letters::replay_many))
        .route("/v1/dead-letters/discard", post(dead_letters::discard_many))
        .route("/v1/dead-letters/{id}", get(dead_letters::show))
        .route("/v1/dead-letters/{id}/replay", post(dead_letters::replay))
        .route("/v1/dead-letters/{id}/discard", post(dead_letters::discard))
        .route("/v1/audit", get(operators::audit_log))
        .route("/v1/queues", get(operators::queues))
        .route("/v1/queues/{name}/pause", post(operators::pause))
        .route("/v1/queues/{name}/resume", post(operators::resume))
        .route("/v1/webhook-sources", get(webhooks::list_sources))
        .route("/v1/webhook-sources/{name}", axum::routing::put(webhooks::put_source).delete(webhooks::delete_source))
        .route("/v1/webhooks/{source}/deliveries", get(webhooks::deliveries))
        .route("/v1/webhooks/{source}", post(webhooks::receive))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(BodyLimit(body_limit)))
        .layer(axum::Extension(ShapeLimit::from(state.limits.as_ref())));
    // Batches get a limit of their own, so a 10,000-command batch fits and a single command
    // keeps the small one.
    let batch_limit = state.batch_settings.body_limit_bytes;
    let batches = Router::new()
        .route("/v1/batches", post(batches::submit))
        .route("/v1/batches/{id}", get(batches::status))
        .layer(DefaultBodyLimit::max(batch_limit))
        .layer(axum::Extension(BodyLimit(batch_limit)));
    let startup = state.startup.clone();
    let v1 = v1.merge(batches).with_state(state.clone()).merge(pages);
    let v1 = v1.layer(axum::middleware::from_fn_with_state(startup, guard::until_started));
    finish(v1.merge(ops_router().with_state(state)), http)
}

/// Health and metrics only: what a worker-only process serves.
pub fn ops_router() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::serve))
}

/// The ops routes with their state, for processes without the API role.
pub fn ops_only(state: ApiState, http: &crate::config::HttpSettings) -> Router {
    finish(ops_router().with_state(state), http)
}

fn finish(router: Router, http: &crate::config::HttpSettings) -> Router {
    let limit = std::time::Duration::from_millis(http.request_timeout_ms);
    let router = router
        .layer(axum::middleware::from_fn_with_state(limit, guard::time_limit))
        .layer(CatchPanicLayer::custom(panic_response));
    guard::security_headers(router, http.hsts).layer(TraceLayer::new_for_http())
}

fn panic_response(_: Box<dyn std::any::Any + Send>) -> axum::response::Response {
    use axum::response::IntoResponse;
    error::ApiError::Internal("request handler panicked".into()).into_response()
}
