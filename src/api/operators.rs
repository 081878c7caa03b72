//! `/v1/audit` and `/v1/queues` (admin scope): the audit log, queue depths, pause and resume.

use super::auth::{Principal, Scope};
use super::dead_letters::actor;
use super::error::ApiError;
use super::openapi::KeyedErrors;
use super::reads::limit_param;
use super::ApiState;
use crate::store::audit;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Query string of the audit log.
#[derive(Deserialize)]
pub struct AuditParams {
    before: Option<String>,
    limit: Option<String>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<audit::Entry>,
    /// Pass as `before` for the next page; absent at the end.
    pub next_before: Option<i64>,
}

/// The audit log, newest first
///
/// Needs an API key with the `operator` scope; it acts across tenants.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "operators",
    params(
        ("before" = Option<i64>, Query, description = "Entries older than this entry id (`next_before`)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
    ),
    responses((status = 200, description = "Entries", body = AuditPage), KeyedErrors)
)]
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
    Ok(Json(AuditPage { entries, next_before: next }))
}

/// One of sluice's queues.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub name: String,
    /// `work`, `retry` or `dead`.
    pub role: &'static str,
    /// Ready messages (not counting those delivered and unacked).
    pub messages: u32,
    pub consumers: u32,
    /// Whether an operator paused its consumption.
    pub paused: bool,
}

/// Every queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queues {
    pub queues: Vec<QueueView>,
}

/// A pause or resume that took effect.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseState {
    pub queue: String,
    pub paused: bool,
}

/// Queues with depth, consumers and pause state
///
/// Needs an API key with the `operator` scope; it acts across tenants.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "operators",
    responses((status = 200, description = "Queues", body = Queues), KeyedErrors)
)]
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
        out.push(QueueView { name: q.name, role: q.role, messages: q.messages, consumers: q.consumers, paused });
    }
    Ok(Json(Queues { queues: out }))
}

/// Pause consumption of a queue
///
/// Needs an API key with the `operator` scope. Workers finish what they hold.
#[utoipa::path(
    post,
    path = "/v1/queues/{name}/pause",
    tag = "operators",
    params(("name" = String, Path, min_length = 1, description = "The queue")),
    responses((status = 200, description = "Paused", body = PauseState), KeyedErrors)
)]
#[tracing::instrument(skip_all)]
pub async fn pause(
    State(state): State<ApiState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    set_paused(state, principal, name, true).await
}

/// Resume consumption of a queue
///
/// Needs an API key with the `operator` scope.
#[utoipa::path(
    post,
    path = "/v1/queues/{name}/resume",
    tag = "operators",
    params(("name" = String, Path, min_length = 1, description = "The queue")),
    responses((status = 200, description = "Resumed", body = PauseState), KeyedErrors)
)]
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
) -> Result<Json<PauseState>, ApiError> {
    principal.require(Scope::Operator)?;
    let Path(name) = name.map_err(|e| ApiError::bad_request("invalid_queue", e.body_text(), Some("path name")))?;
    state.ops().set_paused(&name, paused, &actor(&principal)).await?;
    Ok(Json(PauseState { queue: name, paused }))
}
