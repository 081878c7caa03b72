//! Liveness, readiness and metrics.

use super::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// `ok` or `unavailable`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    Unavailable,
}

impl Health {
    fn of(ok: bool) -> Self {
        if ok {
            Self::Ok
        } else {
            Self::Unavailable
        }
    }
}

/// The answer of `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Alive {
    pub status: Health,
}

/// The answer of `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: Health,
    pub broker: Health,
    pub database: Health,
    /// Why not ready, in fixed words.
    pub reasons: Vec<&'static str>,
}

/// Alive
///
/// Answers as long as the process does.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "The process answers", body = Alive))
)]
pub async fn healthz() -> impl IntoResponse {
    Json(Alive { status: Health::Ok })
}

/// What a starting process still waits for; the API proper answers 503 until it is done.
#[derive(Debug)]
pub struct Startup {
    waiting: std::sync::Mutex<Option<&'static str>>,
    started: std::sync::atomic::AtomicBool,
}

impl Startup {
    /// A process that has not started yet.
    pub fn new() -> Self {
        Self { waiting: std::sync::Mutex::new(Some("starting")), started: Default::default() }
    }

    /// Says what start-up waits for now (a fixed phrase: `/readyz` shows it to anyone).
    pub fn waiting_for(&self, what: &'static str) {
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
    }

    /// Start-up is over: the database is migrated and the API may serve.
    pub fn finished(&self) {
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.started.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether start-up is over.
    pub fn is_finished(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::Acquire)
    }

    fn waiting(&self) -> Option<&'static str> {
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Startup {
    fn default() -> Self {
        Self::new()
    }
}

/// Broker and database reachable
///
/// Ready only while start-up is over and RabbitMQ (connected, topology declared, not blocked)
/// and Postgres answer; otherwise 503 with the reasons, in fixed words (no error text: this
/// route needs no key).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    let mut reasons: Vec<&'static str> = Vec::new();
    if let Some(what) = state.startup.waiting() {
        reasons.push(what);
    }
    let mut broker = true;
    for b in std::iter::once(&state.broker).chain(&state.worker_broker) {
        if !b.is_ready() {
            broker = false;
            let connected = b.link().is_some_and(|l| l.connection.status().connected());
            reasons.push(if connected {
                "RabbitMQ blocks publishing (a resource alarm)"
            } else {
                "RabbitMQ is not connected"
            });
        }
    }
    let database = crate::store::ping(&state.pool, Duration::from_secs(1)).await;
    if !database {
        reasons.push("the database does not answer");
    }
    let ready = reasons.is_empty();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    reasons.dedup();
    let body =
        Readiness { status: Health::of(ready), broker: Health::of(broker), database: Health::of(database), reasons };
    (status, Json(body))
}

/// Prometheus metrics
///
/// Prometheus text format. Gauges read from elsewhere (queue depths from RabbitMQ, parked
/// dead letters from Postgres) are refreshed per scrape, each bounded to a second.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    security(()),
    responses((status = 200, description = "Prometheus text", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    // At most once per 5 s whatever the scrape rate: /metrics is unauthenticated, and each
    // refresh opens a channel and queries Postgres.
    static REFRESHED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let due = {
        let mut last = REFRESHED.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    };
    if due {
        refresh_gauges(&state).await;
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics_handle().render())
}

async fn refresh_gauges(state: &ApiState) {
    let bound = Duration::from_secs(1);
    let _ = tokio::time::timeout(bound, state.broker.queue_stats()).await;
    if let Ok(Ok(n)) = tokio::time::timeout(bound, crate::store::dead_letters::open_count(&state.pool)).await {
        metrics::gauge!("sluice_dead_letters_parked").set(n as f64);
    }
    // One series per connection (`role` api or worker), so a worker connection that is down
    // shows even while the API's is up.
    for broker in std::iter::once(&state.broker).chain(&state.worker_broker) {
        let link_up = broker.link().is_some_and(|l| l.connection.status().connected());
        let role = broker.role();
        metrics::gauge!("sluice_broker_connected", "role" => role).set(if link_up { 1.0 } else { 0.0 });
        let blocked = link_up && !broker.is_ready();
        metrics::gauge!("sluice_broker_blocked", "role" => role).set(if blocked { 1.0 } else { 0.0 });
    }
}
