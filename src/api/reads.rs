//! Read models: `GET /v1/accounts/{id}` and `GET /v1/events`.

use super::auth::{Principal, Scope};
use super::error::ApiError;
use super::error::ErrorBody;
use super::openapi::KeyedErrors;
use super::ApiState;
use crate::store::events::EventQuery;
use crate::store::{accounts, events};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Largest page of events.
const MAX_LIMIT: i64 = 1000;

/// An account's balance
///
/// Needs an API key with the `read` scope (or `admin` or `operator`).
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}",
    tag = "reads",
    params(("id" = String, Path, min_length = 1, description = "The account's id")),
    responses(
        (status = 200, description = "The account", body = accounts::Account),
        (status = 404, description = "No such account", body = ErrorBody),
        KeyedErrors,
    )
)]
#[tracing::instrument(skip_all, fields(tenant))]
pub async fn account(
    State(state): State<ApiState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Read)?;
    let Path(id) = id.map_err(|e| ApiError::bad_request("invalid_id", e.body_text(), Some("path id")))?;
    let account = accounts::find(&state.pool, &principal.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account {id:?}")))?;
    Ok(Json(account))
}

/// Query string of `GET /v1/events`; parsed by hand so each error names its parameter.
#[derive(Deserialize)]
pub struct EventParams {
    name: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<events::Event>,
    /// Pass as `cursor` for the next page; absent at the end.
    pub next_cursor: Option<String>,
}

/// Events by name and time range, oldest first
///
/// Needs an API key with the `read` scope (or `admin` or `operator`). A page stops at `limit`
/// events or at `limits.max_page_bytes` of event data, whichever comes first.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "reads",
    params(
        ("name" = Option<String>, Query, description = "Only events of this name"),
        ("from" = Option<DateTime<Utc>>, Query, description = "Occurred at or after (RFC 3339)"),
        ("to" = Option<DateTime<Utc>>, Query, description = "Occurred before (RFC 3339)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "A page", body = EventPage), KeyedErrors)
)]
#[tracing::instrument(skip_all, fields(tenant))]
pub async fn events(
    State(state): State<ApiState>,
    principal: Principal,
    params: Result<Query<EventParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Read)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text(), Some("query")))?;
    let limit = limit_param(p.limit.as_deref(), 100, MAX_LIMIT)?;
    let q = EventQuery {
        name: p.name.filter(|n| !n.is_empty()),
        from: p.from.as_deref().map(|s| time_param(s, "from")).transpose()?,
        to: p.to.as_deref().map(|s| time_param(s, "to")).transpose()?,
        after: p.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
        max_bytes: i64::try_from(state.ingest.limits.max_page_bytes).unwrap_or(i64::MAX),
    };
    let page = events::list(&state.pool, &principal.tenant, &q).await?;
    let next = page.more.then(|| page.events.last().map(|e| encode_cursor(e.occurred_at, e.id))).flatten();
    Ok(Json(EventPage { events: page.events, next_cursor: next }))
}

/// A UUID path parameter, or a 400 naming it.
pub(super) fn path_id(id: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, ApiError> {
    id.map(|Path(id)| id).map_err(|e| ApiError::bad_request("invalid_id", e.body_text(), Some("path id")))
}

/// `limit` from the query string: `default` when absent, else 1..=`max`.
pub(super) fn limit_param(s: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match s {
        None => Ok(default),
        Some(s) => s.parse::<i64>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("limit must be 1-{max}"), Some("query limit"))
        }),
    }
}

pub(super) fn time_param(s: &str, name: &'static str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        ApiError::bad_request(
            "invalid_query",
            format!("{name} must be an RFC 3339 time: {e}"),
            Some(&format!("query {name}")),
        )
    })
}

pub(super) fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{}", at.timestamp_micros(), id.simple())
}

pub(super) fn decode_cursor(s: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::bad_request("invalid_query", "cursor is not one this API returned", Some("query cursor"));
    let (micros, id) = s.split_once('_').ok_or_else(bad)?;
    let at = micros.parse::<i64>().ok().and_then(DateTime::from_timestamp_micros).ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}
