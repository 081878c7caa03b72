//! `POST /v1/commands` and `GET /v1/commands/{id}`.

use super::auth::{Principal, Scope};
use super::body::JsonBody;
use super::error::ApiError;
use super::error::ErrorBody;
use super::openapi::KeyedErrors;
use super::ApiState;
use crate::broker::wire::{new_traceparent, trace_id, TRACEPARENT_HEADER};
use crate::ingest::{valid_idempotency_key, Accepted, CommandRequest, MAX_IDEMPOTENCY_KEY};
use crate::ops::cancel::Cancelled;
use crate::store::commands::{self, CommandStatus};
use crate::store::scheduled;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A command's status as its tenant reads it. The fields after `detail` are there once a
/// worker has taken the command (a `pending` or `pruned` command has no row to show).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct CommandView {
    pub id: Uuid,
    pub status: CommandStatus,
    /// Why a command without a row reads as `pending` or `pruned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When a scheduled command is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// The last attempt's error, when one failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The handler's result (succeeded), or `{"reason"}` (rejected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Every failed attempt, oldest first: `{"attempt", "error", "at"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Value>,
}

/// Submit a command (202 once RabbitMQ confirmed it)
///
/// Needs an API key with the `submit` scope (or `admin` or `operator`). With an
/// Idempotency-Key the command's id follows from the tenant and the key, so a retried request
/// is applied once.
#[utoipa::path(
    post,
    path = "/v1/commands",
    tag = "commands",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
            description = "Makes a retried request the same command")),
    request_body(content = ref("#/components/schemas/Command"), description = "One command"),
    responses(
        (status = 202, description = "Accepted and durable", body = Accepted,
         headers(("Location" = String, description = "The status URL"))),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Unknown type or invalid payload", body = ErrorBody),
        KeyedErrors,
    )
)]
pub async fn submit(
    State(state): State<ApiState>,
    principal: Principal,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Submit)?;
    let traceparent = traceparent_of(&headers);
    let req = CommandRequest {
        tenant: &principal.tenant,
        body,
        idempotency_key: idempotency_key(&headers)?,
        traceparent: &traceparent,
    };
    let accepted = state.ingest.submit(req).await?;
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, accepted.status_url.clone())], Json(accepted)))
}

/// The caller's `traceparent` when it is valid, else a new one.
pub(super) fn traceparent_of(headers: &HeaderMap) -> String {
    match headers.get(TRACEPARENT_HEADER).and_then(|v| v.to_str().ok()) {
        Some(tp) if trace_id(tp).is_some() => tp.to_owned(),
        _ => new_traceparent(),
    }
}

/// The `Idempotency-Key` header, when there is one and it is valid.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let where_ = Some("header Idempotency-Key");
    let key =
        v.to_str().map_err(|_| ApiError::bad_request("invalid_idempotency_key", "must be visible ASCII", where_))?;
    if !valid_idempotency_key(key) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
            where_,
        ));
    }
    Ok(Some(key))
}

/// A command's status
///
/// Needs an API key with the `read` scope (or `admin` or `operator`). A command accepted for a
/// later `run_at` reads as `scheduled` until it is published; one not yet taken by a worker has
/// no row and reads as `pending` (ingest writes nothing to Postgres); another tenant's command
/// reads the same way.
#[utoipa::path(
    get,
    path = "/v1/commands/{id}",
    tag = "commands",
    params(("id" = Uuid, Path, description = "The command's id")),
    responses((status = 200, description = "Its status", body = CommandView), KeyedErrors)
)]
#[tracing::instrument(skip_all, fields(tenant))]
pub async fn status(
    State(state): State<ApiState>,
    principal: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Read)?;
    let id = super::reads::path_id(id)?;
    match commands::find(&state.pool, &principal.tenant, id).await? {
        Some(mut row) => {
            // The tenant's view: each attempt's error without the database's own words, which
            // the operators' dead-letter view keeps.
            if let Some(errors) = row.errors.as_array_mut() {
                for entry in errors {
                    if let Some(text) = entry.get("error").and_then(Value::as_str) {
                        let shown = crate::store::public_error(text).into_owned();
                        entry["error"] = Value::String(shown);
                    }
                }
            }
            Ok(Json(CommandView {
                id: row.id,
                status: row.status,
                detail: None,
                run_at: None,
                // A tombstone has no type until its command arrives.
                kind: Some(row.kind).filter(|k| !k.is_empty()),
                attempts: Some(row.attempts),
                last_error: row.last_error,
                result: row.result,
                submitted_at: Some(row.submitted_at),
                first_seen_at: Some(row.first_seen_at),
                updated_at: Some(row.updated_at),
                completed_at: row.completed_at,
                errors: Some(row.errors),
            }))
        }
        None => scheduled_or_not(&state, &principal.tenant, id).await,
    }
}

/// A command without a row: scheduled, pruned or pending.
async fn scheduled_or_not(state: &ApiState, tenant: &str, id: Uuid) -> Result<Json<CommandView>, ApiError> {
    let stub = |status, detail: String| CommandView { id, status, detail: Some(detail), ..CommandView::default() };
    match scheduled::find(&state.pool, Some(tenant), id).await? {
        Some(s) => Ok(Json(CommandView {
            id,
            status: CommandStatus::Scheduled,
            run_at: Some(s.run_at),
            kind: Some(s.kind),
            submitted_at: Some(s.created_at),
            ..CommandView::default()
        })),
        None if crate::retention::pruned_by_age(id, &state.retention) => Ok(Json(stub(
            CommandStatus::Pruned,
            format!(
                "the id is older than retention.commands_days ({} days): a record of it, if there was one, has been \
                 pruned",
                state.retention.commands_days
            ),
        ))),
        None => Ok(Json(stub(
            CommandStatus::Pending,
            "no worker has completed or retried this command yet, or the id is unknown (or, for an id from an \
             Idempotency-Key, pruned after retention.commands_days)"
                .into(),
        ))),
    }
}

/// Cancel a command
///
/// Needs an API key with the `submit` scope (or `admin` or `operator`). A command that has not
/// been applied (scheduled, queued, retrying or dead) becomes `cancelled` and will never be
/// applied; a dead one's dead letter is closed. Cancelling twice is harmless. Once the
/// command has succeeded or been rejected, or while its HTTP endpoint is being called
/// (`processing`), the answer is 409 with that status. An id sluice has not seen yet is
/// cancelled all the same, in case it is queued; another tenant's id answers the same way
/// and changes nothing.
#[utoipa::path(
    post,
    path = "/v1/commands/{id}/cancel",
    tag = "commands",
    params(("id" = Uuid, Path, description = "The command's id")),
    responses(
        (status = 200, description = "Cancelled (or cancelled before)", body = Cancelled),
        (status = 409, description = "Applied already, or being applied: `error.status` says which", body = ErrorBody),
        KeyedErrors,
    )
)]
#[tracing::instrument(skip_all, fields(tenant = %principal.tenant))]
pub async fn cancel(
    State(state): State<ApiState>,
    principal: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Submit)?;
    let id = super::reads::path_id(id)?;
    Ok(Json(state.ops_of_own(&principal).cancel_command(id, &super::dead_letters::actor(&principal)).await?))
}
