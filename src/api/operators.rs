//! `/v1/audit` and `/v1/queues` (admin scope): the audit log, queue depths, pause and resume.

use super::auth::{Principal, Scope};
use super::dead_letters::actor;
use super::error::ApiError;
use super::reads::limit_param;
use super::ApiState;
use crate::store::audit;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

/// Query string of the audit log.
#[derive(Deserialize)]
pub struct AuditParams {
    before: Option<String>,
    limit: Option<String>,
}

/// The audit log, newest first; `before` is an entry id (the last one of the previous page).
#[tracing::instrument(skip_all)]
pub async fn audit_log(
    State(state): State<ApiState>,
    principal: Principal,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Operator)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text(), Some("query")))?;
    let limit = limit_param(p.limit.as_deref(), 100, 1000)?;
    let before = p
        .before
        .as_deref()
        .map(|s| s.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_query", "before must be an entry id", Some("query before")))?;
    let entries = audit::list(&state.pool, before, limit).await?;
    let next = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.id)).flatten();
    Ok(Json(json!({"entries": entries, "next_before": next})))
}

/// Every sluice queue with its depth and consumers, and which are paused.
#[tracing::instrument(skip_all)]
pub async fn queues(State(state): State<ApiState>, principal: Principal) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Operator)?;
    let stats = state.broker.queue_stats().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read queues from RabbitMQ");
        ApiError::Unavailable {
            message: "cannot read queues from RabbitMQ; try again shortly".into(),
            retry_after_secs: 2,
        }
    })?;
    let paused_names = crate::store::processes::paused_queues(&state.pool).await?;
    let mut out = Vec::with_capacity(stats.len());
    for q in stats {
        let paused = paused_names.contains(&q.name);
        out.push(
            json!({"name": q.name, "role": q.role, "messages": q.messages, "consumers": q.consumers, "paused": paused}),
        );
    }
    Ok(Json(json!({"queues": out})))
}

/// Stops consumption of a queue (workers finish what they hold).
#[tracing::instrument(skip_all)]
pub async fn pause(
    State(state): State<ApiState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    set_paused(state, principal, name, true).await
}

/// Resumes consumption of a queue.
#[tracing::instrument(skip_all)]
pub async fn resume(
    State(state): State<ApiState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    set_paused(state, principal, name, false).await
}

async fn set_paused(
    state: ApiState,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
    paused: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require(Scope::Operator)?;
    let Path(name) = name.map_err(|e| ApiError::bad_request("invalid_queue", e.body_text(), Some("path name")))?;
    state.ops().set_paused(&name, paused, &actor(&principal)).await?;
    Ok(Json(json!({"queue": name, "paused": paused})))
}
