//! `PUT/GET/DELETE /v1/schedules/{name}` and `GET /v1/schedules`: a tenant's recurring schedules.

use super::auth::{Principal, Scope};
use super::body::JsonBody;
use super::dead_letters::actor;
use super::error::{ApiError, ErrorBody};
use super::openapi::KeyedErrors;
use super::ApiState;
use crate::ops::schedules::{ScheduleInput, ScheduleView};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// A tenant's schedules.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// A schedule that was deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleRemoved {
    pub removed: String,
}

fn name_of(name: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    name.map(|Path(n)| n).map_err(|e| ApiError::bad_request("invalid_name", e.body_text(), Some("path name")))
}

/// Create or replace a recurring schedule
///
/// Needs an API key with the `submit` scope (or `admin` or `operator`). Each tick of `cron`
/// in `timezone` submits `command` once, however many workers run (its id follows from the
/// schedule and the tick). 201 when it is new, 200 when it replaced one; the next tick is
/// counted from now.
#[utoipa::path(
    put,
    path = "/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]*$")),
    request_body = ScheduleInput,
    responses(
        (status = 200, description = "Replaced", body = ScheduleView),
        (status = 201, description = "Created", body = ScheduleView),
        (status = 400, description = "Not a schedule (unknown field, bad name)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Bad cron, time zone or command", body = ErrorBody),
        KeyedErrors,
    )
)]
#[tracing::instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn put(
    State(state): State<ApiState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Submit)?;
    let name = name_of(name)?;
    let input: ScheduleInput =
        serde_json::from_value(body).map_err(|e| ApiError::bad_request("invalid_body", e.to_string(), Some("body")))?;
    let (view, created) =
        state.ops_of_own(&principal).put_schedule(&principal.tenant, &name, input, &actor(&principal)).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view)))
}

/// A recurring schedule, its next ticks and its last outcomes
///
/// Needs an API key with the `read` scope (or `admin` or `operator`).
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, min_length = 1)),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 404, description = "No such schedule", body = ErrorBody),
        KeyedErrors,
    )
)]
#[tracing::instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn get(
    State(state): State<ApiState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Read)?;
    let name = name_of(name)?;
    Ok(Json(state.ops_of_own(&principal).get_schedule(&principal.tenant, &name).await?))
}

/// Delete a recurring schedule
///
/// Needs an API key with the `submit` scope (or `admin` or `operator`). Commands it already
/// submitted stay.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, min_length = 1)),
    responses(
        (status = 200, description = "Deleted", body = ScheduleRemoved),
        (status = 404, description = "No such schedule", body = ErrorBody),
        KeyedErrors,
    )
)]
#[tracing::instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn delete(
    State(state): State<ApiState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Submit)?;
    let name = name_of(name)?;
    state.ops_of_own(&principal).delete_schedule(&principal.tenant, &name, &actor(&principal)).await?;
    Ok(Json(ScheduleRemoved { removed: name }))
}

/// The tenant's recurring schedules
///
/// Needs an API key with the `read` scope (or `admin` or `operator`).
#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = "schedules",
    responses((status = 200, description = "Every schedule of the tenant", body = ScheduleList), KeyedErrors)
)]
#[tracing::instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn list(State(state): State<ApiState>, principal: Principal) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Read)?;
    Ok(Json(ScheduleList { schedules: state.ops_of_own(&principal).list_schedules().await? }))
}
