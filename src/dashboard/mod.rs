//! The operator dashboard at `/dashboard`: server-rendered HTML (maud), live parts refreshed
//! by htmx (vendored, served from the binary: no Node build step), behind an admin login.

mod audit;
mod charts;
mod commands;
mod dead_letters;
mod layout;
mod ordering;
mod overview;
mod schedules;
mod session;
mod types;

use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::config::{DashboardSettings, LimitSettings, RetentionSettings};
use crate::ops::Operators;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_FRAME_OPTIONS};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use sqlx::PgPool;
use std::sync::Arc;
use tower_http::set_header::SetResponseHeaderLayer;

pub use session::COOKIE_NAME;

const HTMX: &str = include_str!("assets/htmx.min.js");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/style.css");

/// What the dashboard's pages share.
#[derive(Clone)]
pub struct DashboardState {
    pub pool: PgPool,
    pub broker: Broker,
    /// Operator actions across every tenant: the dashboard is for operators only.
    pub ops: Operators,
    /// Checks the keys operators sign in with.
    pub auth: Arc<Authenticator>,
    pub dashboard: Arc<DashboardSettings>,
    pub limits: Arc<LimitSettings>,
    /// How long records are kept (to tell a pruned command from a missing one).
    pub retention: Arc<RetentionSettings>,
    /// The payload schemas, for the list of command types.
    pub schemas: Arc<crate::schemas::SchemaRegistry>,
    /// Every command type with what handles it.
    pub types: Arc<Vec<crate::handlers::TypeInfo>>,
}

/// Every dashboard route with its state, and headers that keep its pages out of frames,
/// caches and other origins' scripts.
pub fn router(state: DashboardState) -> Router {
    let pages = Router::new()
        .route("/dashboard", get(overview::index))
        .route("/dashboard/", get(|| async { Redirect::permanent("/dashboard") }))
        .route("/dashboard/live/overview", get(overview::live))
        .route("/dashboard/login", get(session::login_form).post(session::login))
        .route("/dashboard/logout", post(session::logout))
        .route("/dashboard/queues/{name}/pause", post(overview::pause))
        .route("/dashboard/queues/{name}/resume", post(overview::resume))
        .route("/dashboard/dead-letters", get(dead_letters::index))
        .route("/dashboard/live/dead-letters", get(dead_letters::live))
        .route("/dashboard/dead-letters/groups/replay", post(dead_letters::replay_group))
        .route("/dashboard/dead-letters/groups/discard", post(dead_letters::discard_group))
        .route("/dashboard/dead-letters/{id}", get(dead_letters::detail))
        .route("/dashboard/dead-letters/{id}/replay", post(dead_letters::replay))
        .route("/dashboard/dead-letters/{id}/discard", post(dead_letters::discard))
        .route("/dashboard/commands", get(commands::index))
        .route("/dashboard/commands/{id}", get(commands::detail))
        .route("/dashboard/commands/{id}/cancel", post(commands::cancel))
        .route("/dashboard/live/commands/{id}", get(commands::live_status))
        .route("/dashboard/audit", get(audit::index))
        .route("/dashboard/types", get(types::index))
        .route("/dashboard/schedules", get(schedules::index))
        .route("/dashboard/ordering", get(ordering::index))
        .route("/dashboard/schedules/{tenant}/{name}/{action}", post(schedules::set_paused))
        .layer(SetResponseHeaderLayer::overriding(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(REFERRER_POLICY, HeaderValue::from_static("same-origin")))
        .layer(SetResponseHeaderLayer::overriding(CACHE_CONTROL, HeaderValue::from_static("no-store")));
    let assets = Router::new()
        .route("/dashboard/assets/htmx.min.js", get(|| async { asset("text/javascript", HTMX) }))
        .route("/dashboard/assets/dashboard.js", get(|| async { asset("text/javascript", SCRIPT) }))
        .route("/dashboard/assets/style.css", get(|| async { asset("text/css", STYLE) }));
    pages.merge(assets).with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "public, max-age=3600")], body)
}
