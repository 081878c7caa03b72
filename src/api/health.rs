//! Liveness, readiness and metrics.

use super::ApiState;
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
    let broker = state.broker.is_ready();
    let database = crate::store::ping(&state.pool, Duration::from_secs(1)).await;
    let status = if broker && database { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let word = |ok| if ok { "ok" } else { "unavailable" };
    (status, Json(json!({"status": word(broker && database), "broker": word(broker), "database": word(database)})))
}

/// Prometheus text format.
pub async fn metrics() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics_handle().render())
}
