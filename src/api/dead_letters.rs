//! `/v1/dead-letters` (admin scope): list, groups, show, replay, discard, one or by filter.
//! An admin key reaches its own tenant's dead letters; an operator key every tenant's.

use super::auth::{Principal, Scope};
use super::body::{JsonBody, MaybeJsonBody};
use super::error::ApiError;
use super::reads::{decode_cursor, encode_cursor, limit_param, path_id, time_param};
use super::ApiState;
use crate::ops::dead_letters::MAX_BULK;
use crate::store::dead_letters::{self, DeadLetterState, Filter};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// Query string of the list; parsed by hand so each error names its parameter.
#[derive(Deserialize)]
pub struct ListParams {
    state: Option<String>,
    command_type: Option<String>,
    tenant: Option<String>,
    error_kind: Option<String>,
    error: Option<String>,
    fingerprint: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page of dead letters, newest first.
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<ApiState>,
    principal: Principal,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text(), Some("query")))?;
    let limit = limit_param(p.limit.as_deref(), 50, 500)?;
    let filter = Filter {
        state: p.state.map(|s| check_state(&s)).transpose()?,
        command_type: p.command_type.filter(|s| !s.is_empty()),
        tenant: p.tenant.filter(|s| !s.is_empty()),
        error_kind: p.error_kind.filter(|s| !s.is_empty()),
        error: p.error.filter(|s| !s.is_empty()),
        fingerprint: p.fingerprint.filter(|s| !s.is_empty()),
        since: p.since.as_deref().map(|s| time_param(s, "since")).transpose()?,
        until: p.until.as_deref().map(|s| time_param(s, "until")).transpose()?,
    };
    let filter = state.ops_within(principal.reach()).within_reach(&filter);
    let before = p.cursor.as_deref().map(decode_cursor).transpose()?;
    let page = dead_letters::list(&state.pool, &filter, before, limit).await?;
    let next = (page.len() as i64 == limit).then(|| page.last().map(|d| encode_cursor(d.dead_at, d.id))).flatten();
    Ok(Json(json!({"dead_letters": page, "next_cursor": next})))
}

fn check_state(s: &str) -> Result<DeadLetterState, ApiError> {
    DeadLetterState::parse(s).ok_or_else(|| {
        let all: Vec<&str> = DeadLetterState::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::bad_request("invalid_query", format!("state must be one of {all:?}"), Some("query state"))
    })
}

/// Query string of the groups list.
#[derive(Deserialize)]
pub struct GroupParams {
    limit: Option<String>,
}

/// Groups of open dead letters by cause, most recently seen first.
#[tracing::instrument(skip_all)]
pub async fn groups(
    State(state): State<ApiState>,
    principal: Principal,
    params: Result<Query<GroupParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text(), Some("query")))?;
    let limit = limit_param(p.limit.as_deref(), 50, 500)?;
    let groups = match principal.reach().tenant() {
        None => dead_letters::groups(&state.pool, limit).await?,
        Some(tenant) => dead_letters::groups_of(&state.pool, tenant, limit).await?,
    };
    Ok(Json(json!({"groups": groups})))
}

/// One dead letter with its payload, headers and every attempt's error.
#[tracing::instrument(skip_all)]
pub async fn show(
    State(state): State<ApiState>,
    principal: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let id = path_id(id)?;
    Ok(Json(state.ops_within(principal.reach()).detail(id).await?))
}

/// Body of a single replay: an optional edited payload.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    payload: Option<Value>,
}

/// Replays one dead letter (202: republished with a confirm; the command's status follows).
#[tracing::instrument(skip_all)]
pub async fn replay(
    State(state): State<ApiState>,
    principal: Principal,
    id: Result<Path<Uuid>, PathRejection>,
    MaybeJsonBody(body): MaybeJsonBody,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let id = path_id(id)?;
    let body: ReplayBody = match body {
        Some(v) => {
            serde_json::from_value(v).map_err(|e| ApiError::bad_request("invalid_body", e.to_string(), Some("body")))?
        }
        None => ReplayBody::default(),
    };
    let r = state.ops_within(principal.reach()).replay(id, body.payload, &actor(&principal)).await?;
    let url = format!("/v1/commands/{}", r.command_id);
    Ok((StatusCode::ACCEPTED, Json(json!({"replayed": r, "status_url": url}))))
}

/// Discards one open dead letter.
#[tracing::instrument(skip_all)]
pub async fn discard(
    State(state): State<ApiState>,
    principal: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let id = path_id(id)?;
    state.ops_within(principal.reach()).discard(id, &actor(&principal)).await?;
    Ok(Json(json!({"discarded": id})))
}

/// Body of a bulk action: which open dead letters, how many, how fast.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    #[serde(default)]
    filter: Filter,
    limit: Option<usize>,
    /// Replays per second (replay only); default 100.
    rate_per_second: Option<f64>,
}

fn bulk_body(body: JsonBody) -> Result<BulkBody, ApiError> {
    serde_json::from_value(body.0).map_err(|e| ApiError::bad_request("invalid_body", e.to_string(), Some("body")))
}

/// Replays open dead letters by filter; repeat the request to resume.
#[tracing::instrument(skip_all)]
pub async fn replay_many(
    State(state): State<ApiState>,
    principal: Principal,
    body: JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let b = bulk_body(body)?;
    let limit = b.limit.unwrap_or(1000).min(MAX_BULK);
    let bulk = state
        .ops_within(principal.reach())
        .replay_many(&b.filter, limit, b.rate_per_second.unwrap_or(100.0), &actor(&principal))
        .await?;
    Ok(Json(
        json!({"replayed": bulk.done, "failed": bulk.failed, "failures": bulk.failures, "remaining": bulk.remaining}),
    ))
}

/// Discards open dead letters by filter.
#[tracing::instrument(skip_all)]
pub async fn discard_many(
    State(state): State<ApiState>,
    principal: Principal,
    body: JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let b = bulk_body(body)?;
    let limit = b.limit.unwrap_or(1000).min(MAX_BULK);
    let bulk = state.ops_within(principal.reach()).discard_many(&b.filter, limit, &actor(&principal)).await?;
    Ok(Json(json!({"discarded": bulk.done, "remaining": bulk.remaining})))
}

/// How an API caller appears in the audit log.
pub(crate) fn actor(p: &Principal) -> String {
    format!("key:{}", p.key_id)
}
