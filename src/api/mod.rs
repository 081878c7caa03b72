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
mod schedules;
pub mod server;
mod webhook_gate;
mod webhooks;

pub use health::Startup;
pub use webhook_gate::WebhookGate;

use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::schemas::SchemaRegistry;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use body::{BodyLimit, ShapeLimit};
use sqlx::PgPool;
use std::sync::Arc;
use tower::ServiceBuilder;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every request handler shares: one allocation, so the clone axum makes for each
/// extractor and layer of a request is a single reference count, not one per field.
#[derive(Clone)]
pub struct ApiState(Arc<Shared>);

impl ApiState {
    /// The state of a router over `shared`.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for ApiState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`ApiState`].
pub struct Shared {
    pub pool: PgPool,
    /// The connection the API publishes on (the workers' own in a worker-only process).
    pub broker: Broker,
    /// The workers' connection when they run in this process too: readiness covers it.
    pub worker_broker: Option<Broker>,
    pub schemas: Arc<SchemaRegistry>,
    pub auth: Arc<Authenticator>,
    pub reporter: Arc<crate::heartbeat::Reporter>,
    pub limiter: Arc<limits::RateLimiter>,
    /// The use cases the submit and webhook routes adapt; its limits and batch settings are
    /// the API's too.
    pub ingest: crate::ingest::Ingest,
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

    /// Actions on the caller's own tenant only, whatever its key's scopes: commands, batches
    /// and schedules belong to a tenant, even for an operator key.
    pub fn ops_of_own(&self, principal: &auth::Principal) -> crate::ops::Operators {
        self.ops_within(crate::ops::Reach::Tenant(principal.tenant.clone()))
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
) -> Result<crate::ingest::ParsedCommand, error::ApiError> {
    let value = body::parse_json(bytes, ShapeLimit::from(limits))?;
    Ok(crate::ingest::parse_command(schemas, value)?)
}

/// The `/v1` operations but batches, as documented routes.
fn v1_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(commands::submit))
        .routes(routes!(commands::status))
        .routes(routes!(commands::cancel))
        .routes(routes!(reads::account))
        .routes(routes!(reads::events))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::groups))
        .routes(routes!(dead_letters::replay_many))
        .routes(routes!(dead_letters::discard_many))
        .routes(routes!(dead_letters::show))
        .routes(routes!(dead_letters::replay))
        .routes(routes!(dead_letters::discard))
        .routes(routes!(schedules::list))
        .routes(routes!(schedules::put, schedules::get, schedules::delete))
        .routes(routes!(operators::audit_log))
        .routes(routes!(operators::queues))
        .routes(routes!(operators::pause))
        .routes(routes!(operators::resume))
        .routes(routes!(webhooks::list_sources))
        .routes(routes!(webhooks::put_source, webhooks::delete_source))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::receive))
}

/// Batches, which get a body limit of their own.
fn batch_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(batches::submit))
        .routes(routes!(batches::status))
        .routes(routes!(batches::cancel))
}

/// Health, metrics and the document: what every process serves.
fn ops_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::serve))
}

/// The API document: every documented route, with the payload schemas of `schemas` and the
/// queue names of `topology`.
pub fn api_document(schemas: &SchemaRegistry, topology: &crate::broker::Topology) -> serde_json::Value {
    let mut api = openapi::Base::openapi();
    for routes in [v1_routes(), batch_routes(), ops_routes()] {
        api.merge(routes.into_openapi());
    }
    openapi::document(&api, schemas, topology)
}

/// The full API (`/v1`, health, metrics), with `pages` (the dashboard, which the process
/// wiring hands in) served beside it behind the same start-up gate.
pub fn router(state: ApiState, http: &crate::config::HttpSettings, pages: Router) -> Router {
    // The layers every API request passes go around the router once, as one service, not
    // through `Router::layer`, which wraps every route on its own (see `guard::around`); what
    // some routes need otherwise, they set themselves, inside.
    let body_limit = http.body_limit_bytes;
    let (v1, _) = v1_routes().split_for_parts();
    // Batches get a limit of their own, so a 10,000-command batch fits and a single command
    // keeps the small one.
    let batch_limit = state.ingest.batches.body_limit_bytes;
    let (batches, _) = batch_routes().split_for_parts();
    let batches = batches.layer(DefaultBodyLimit::max(batch_limit)).layer(axum::Extension(BodyLimit(batch_limit)));
    // The dashboard's forms keep axum's own limit: an edited dead letter may be larger than
    // a single command's body limit.
    let pages = pages.layer(DefaultBodyLimit::max(PAGES_BODY_LIMIT));
    let api = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(state.startup.clone(), guard::until_started))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(BodyLimit(body_limit)))
        .layer(axum::Extension(ShapeLimit::from(state.ingest.limits.as_ref())))
        .service(v1.merge(batches).with_state(state.clone()).merge(pages));
    finish(ops_router().with_state(state).fallback_service(api), http)
}

/// The body limit of the dashboard's forms: axum's default.
const PAGES_BODY_LIMIT: usize = 2 << 20;

/// Health, metrics and the API document: what a worker-only process serves.
pub fn ops_router() -> Router<ApiState> {
    ops_routes().split_for_parts().0
}

/// The ops routes with their state, for processes without the API role.
pub fn ops_only(state: ApiState, http: &crate::config::HttpSettings) -> Router {
    finish(ops_router().with_state(state), http)
}

fn finish(router: Router, http: &crate::config::HttpSettings) -> Router {
    guard::around(router, std::time::Duration::from_millis(http.request_timeout_ms), http.hsts)
}
