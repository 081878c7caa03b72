//! Liveness, readiness and metrics.

use super::ApiState;
use crate::broker::Broker;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use std::time::Duration;

/// Alive as long as the process answers.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready only while RabbitMQ (connected, topology declared, not blocked) and Postgres answer.
pub async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    let broker = state.broker.is_ready() && state.worker_broker.as_ref().is_none_or(Broker::is_ready);
    let database = crate::store::ping(&state.pool, Duration::from_secs(1)).await;
    let status = if broker && database { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let word = |ok| if ok { "ok" } else { "unavailable" };
    (status, Json(json!({"status": word(broker && database), "broker": word(broker), "database": word(database)})))
}

/// Prometheus text format. Gauges read from elsewhere (queue depths from RabbitMQ, parked
/// dead letters from Postgres) are refreshed per scrape, each bounded to a second.
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
