//! `/v1/dead-letters` (admin scope): list, groups, show, replay, discard, one or by filter.
//! An admin key reaches its own tenant's dead letters; an operator key every tenant's.

use super::auth::{Principal, Scope};
use super::body::{JsonBody, MaybeJsonBody};
use super::error::ApiError;
use super::error::ErrorBody;
use super::openapi::KeyedErrors;
use super::reads::{decode_cursor, encode_cursor, limit_param, path_id, time_param};
use super::ApiState;
use crate::ops::dead_letters::MAX_BULK;
use crate::store::dead_letters::{self, DeadLetterState, Filter};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
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

/// A page of dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub dead_letters: Vec<dead_letters::Summary>,
    /// Pass as `cursor` for the next page; absent at the end.
    pub next_cursor: Option<String>,
}

/// Dead letters, newest first
///
/// Needs an API key with the `admin` scope (or `operator`); an admin key reaches its own
/// tenant's dead letters only, an operator key every tenant's.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "dead letters",
    params(
        ("state" = Option<DeadLetterState>, Query, description = "Default open"),
        ("command_type" = Option<String>, Query),
        ("tenant" = Option<String>, Query, description = "Operators only; an admin key sees its own tenant"),
        ("error_kind" = Option<String>, Query),
        ("error" = Option<String>, Query, description = "Errors containing this text (case-insensitive)"),
        ("fingerprint" = Option<String>, Query, description = "One group's"),
        ("since" = Option<DateTime<Utc>>, Query),
        ("until" = Option<DateTime<Utc>>, Query),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "A page", body = DeadLetterPage), KeyedErrors)
)]
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
    Ok(Json(DeadLetterPage { dead_letters: page, next_cursor: next }))
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

/// Groups of open dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct Groups {
    pub groups: Vec<dead_letters::Group>,
}

/// Groups of open dead letters by cause
///
/// Needs an API key with the `admin` scope (or `operator`). Most recently seen first.
#[utoipa::path(
    get,
    path = "/v1/dead-letters/groups",
    tag = "dead letters",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Most groups (default 50)")),
    responses((status = 200, description = "Groups", body = Groups), KeyedErrors)
)]
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
    Ok(Json(Groups { groups }))
}

/// One dead letter with payload, headers and attempt errors
///
/// Needs an API key with the `admin` scope (or `operator`).
#[utoipa::path(
    get,
    path = "/v1/dead-letters/{id}",
    tag = "dead letters",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The dead letter", body = crate::ops::dead_letters::Detail),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        KeyedErrors,
    )
)]
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
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Replaces the command's payload; checked against its type's schema.
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
}

/// A replay that was published.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayAccepted {
    pub replayed: crate::ops::dead_letters::Replayed,
    /// Where the command's status is read.
    pub status_url: String,
}

/// Replay one dead letter, optionally with an edited payload
///
/// Needs an API key with the `admin` scope (or `operator`). 202: republished with a confirm;
/// the command's status follows.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{id}/replay",
    tag = "dead letters",
    params(("id" = Uuid, Path)),
    request_body(content = Option<ReplayBody>, description = "Optional; without it the original payload is replayed"),
    responses(
        (status = 202, description = "Republished", body = ReplayAccepted),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 409, description = "Discarded, or not a command", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "The edited payload breaks the schema", body = ErrorBody),
        KeyedErrors,
    )
)]
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
    Ok((StatusCode::ACCEPTED, Json(ReplayAccepted { replayed: r, status_url: url })))
}

/// A discard that took effect.
#[derive(Debug, Serialize, ToSchema)]
pub struct Discarded {
    pub discarded: Uuid,
}

/// Discard one open dead letter
///
/// Needs an API key with the `admin` scope (or `operator`).
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{id}/discard",
    tag = "dead letters",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Discarded", body = Discarded),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 409, description = "Not open", body = ErrorBody),
        KeyedErrors,
    )
)]
#[tracing::instrument(skip_all)]
pub async fn discard(
    State(state): State<ApiState>,
    principal: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let id = path_id(id)?;
    state.ops_within(principal.reach()).discard(id, &actor(&principal)).await?;
    Ok(Json(Discarded { discarded: id }))
}

/// Body of a bulk action: which open dead letters, how many, how fast.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    #[serde(default)]
    filter: Filter,
    /// Most dead letters this request acts on (default 1000).
    #[schema(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// Replays per second (replay only); default 100.
    #[schema(exclusive_minimum = 0.0)]
    rate_per_second: Option<f64>,
}

/// What a bulk replay did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkReplayed {
    pub replayed: usize,
    pub failed: usize,
    /// `[dead letter id, error]` pairs, at most 20.
    #[schema(value_type = Vec<Vec<String>>)]
    pub failures: Vec<(Uuid, String)>,
    /// Open dead letters still matching: send the same request again to go on.
    pub remaining: i64,
}

/// What a bulk discard did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkDiscarded {
    pub discarded: usize,
    /// Open dead letters still matching: send the same request again to go on.
    pub remaining: i64,
}

fn bulk_body(body: JsonBody) -> Result<BulkBody, ApiError> {
    serde_json::from_value(body.0).map_err(|e| ApiError::bad_request("invalid_body", e.to_string(), Some("body")))
}

/// Replay open dead letters by filter (resumable)
///
/// Needs an API key with the `admin` scope (or `operator`). Repeat the request to resume.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/replay",
    tag = "dead letters",
    request_body = BulkBody,
    responses(
        (status = 200, description = "What was done", body = BulkReplayed),
        (status = 409, description = "Stopped", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        KeyedErrors,
    )
)]
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
    Ok(Json(BulkReplayed {
        replayed: bulk.done,
        failed: bulk.failed,
        failures: bulk.failures,
        remaining: bulk.remaining,
    }))
}

/// Discard open dead letters by filter
///
/// Needs an API key with the `admin` scope (or `operator`).
#[utoipa::path(
    post,
    path = "/v1/dead-letters/discard",
    tag = "dead letters",
    request_body = BulkBody,
    responses(
        (status = 200, description = "What was done", body = BulkDiscarded),
        (status = 409, description = "Stopped", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        KeyedErrors,
    )
)]
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
    Ok(Json(BulkDiscarded { discarded: bulk.done, remaining: bulk.remaining }))
}

/// How an API caller appears in the audit log.
pub(crate) fn actor(p: &Principal) -> String {
    format!("key:{}", p.key_id)
}
