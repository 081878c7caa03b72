//! Read models: `GET /v1/accounts/{id}` and `GET /v1/events`.

use super::auth::{Principal, Scope};
use super::error::ApiError;
use super::ApiState;
use crate::store::events::EventQuery;
use crate::store::{accounts, events};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

/// Largest page of events.
const MAX_LIMIT: i64 = 1000;

/// An account's balance.
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

/// A page of events by name and time range, oldest first, with a cursor to the next page.
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
        max_bytes: i64::try_from(state.limits.max_page_bytes).unwrap_or(i64::MAX),
    };
    let page = events::list(&state.pool, &principal.tenant, &q).await?;
    let next = page.more.then(|| page.events.last().map(|e| encode_cursor(e.occurred_at, e.id))).flatten();
    Ok(Json(json!({"events": page.events, "next_cursor": next})))
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
