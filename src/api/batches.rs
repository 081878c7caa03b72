//! `POST /v1/batches` (a JSON array or NDJSON, validated item by item, published pipelined)
//! and `GET /v1/batches/{id}` (progress counted from the commands' rows).

use super::auth::{Principal, Scope};
use super::batch_body::read_batch;
use super::commands::{idempotency_key, traceparent_of};
use super::error::ApiError;
use super::error::ErrorBody;
use super::openapi::KeyedErrors;
use super::ApiState;
use crate::ingest::{BatchAccepted, BatchRequest};
use crate::ops::cancel::BatchCancelled;
use crate::store::batches;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A batch as JSON. As NDJSON the body is one command per line, and the options are query
/// parameters (the secret in the `Sluice-Callback-Secret` header).
#[derive(ToSchema)]
#[allow(dead_code)] // Only its schema is used: the body is read by batch_body.rs within a budget.
pub struct BatchBody {
    /// Each a command (`type`, `payload`) with an optional `idempotency_key` of its own.
    #[schema(min_items = 1, value_type = Vec<super::openapi::BatchItemPlaceholder>)]
    commands: Vec<Value>,
    /// Refuse the whole batch when any item is invalid.
    all_or_nothing: Option<bool>,
    /// POSTed, signed like a Standard Webhook, once every command is final.
    callback_url: Option<String>,
    /// `whsec_...`; required with `callback_url`.
    callback_secret: Option<String>,
    /// Priority of the items that give none of their own (default normal).
    priority: Option<crate::command::Priority>,
}

/// Submit up to batches.max_commands commands (JSON or NDJSON)
///
/// Needs an API key with the `submit` scope (or `admin` or `operator`). Every valid item is
/// published (pipelined, with confirms) unless `all_or_nothing` and some item is invalid, in
/// which case nothing is.
#[utoipa::path(
    post,
    path = "/v1/batches",
    tag = "batches",
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
         description = "Makes a retried request the same batch"),
        ("all_or_nothing" = Option<bool>, Query, description = "NDJSON only"),
        ("callback_url" = Option<String>, Query, description = "NDJSON only"),
        ("priority" = Option<crate::command::Priority>, Query, description = "NDJSON only"),
        ("Sluice-Callback-Secret" = Option<String>, Header, description = "NDJSON only"),
    ),
    request_body(content(
        (BatchBody = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 202, description = "Accepted (valid items published)", body = BatchAccepted,
         headers(("Location" = String, description = "The status URL"))),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Neither JSON nor NDJSON", body = ErrorBody),
        (status = 422, description = "Every item (or, all or nothing, one) is invalid", body = ErrorBody),
        KeyedErrors,
    )
)]
pub async fn submit(
    State(state): State<ApiState>,
    principal: Principal,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Submit)?;
    let headers = req.headers().clone();
    let key = idempotency_key(&headers)?;
    let traceparent = traceparent_of(&headers);
    let (items, options) = read_batch(&state, req).await?;
    // The request already took one token; a batch pays for every command it carries.
    state.limiter.charge(&principal.tenant, &principal.key_id, items.len().saturating_sub(1))?;
    let req =
        BatchRequest { tenant: &principal.tenant, items, options, idempotency_key: key, traceparent: &traceparent };
    let accepted = state.ingest.submit_batch(req).await?;
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, accepted.status_url.clone())], Json(accepted)))
}

/// Where a batch stands, counted from its commands' rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchProgress {
    pub id: Uuid,
    /// Commands published (items refused at ingest are not counted).
    pub total: i32,
    pub rejected_at_ingest: i32,
    /// Not yet final: scheduled, in the queue, being applied, or retrying.
    pub pending: i64,
    pub retrying: i64,
    pub succeeded: i64,
    pub rejected: i64,
    pub dead: i64,
    pub cancelled: i64,
    pub created_at: DateTime<Utc>,
    /// When a worker first took one of its commands.
    pub started_at: Option<DateTime<Utc>>,
    /// When every command was final.
    pub finished_at: Option<DateTime<Utc>>,
    /// When the batch was cancelled (`POST /v1/batches/{id}/cancel`), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Rejected and dead items, in batch order (at most 1000).
    pub failed_items: Vec<batches::FailedItem>,
    /// The completion callback, when the batch asked for one.
    pub callback: Option<CallbackState>,
}

/// Delivery of a batch's completion callback.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackState {
    pub url: String,
    pub attempts: i32,
    pub delivered_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A batch's progress
///
/// Needs an API key with the `read` scope (or `admin` or `operator`).
#[utoipa::path(
    get,
    path = "/v1/batches/{id}",
    tag = "batches",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Progress", body = BatchProgress),
        (status = 404, description = "No such batch", body = ErrorBody),
        KeyedErrors,
    )
)]
#[tracing::instrument(skip_all)]
pub async fn status(
    State(state): State<ApiState>,
    principal: Principal,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Read)?;
    let id = super::reads::path_id(id)?;
    let batch = batches::get(&state.pool, &principal.tenant, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no batch {id}")))?;
    let (counts, started_at) = batches::progress(&state.pool, id).await?;
    let count = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    let (succeeded, rejected, dead, retrying, cancelled) =
        (count("succeeded"), count("rejected"), count("dead"), count("retrying"), count("cancelled"));
    let pending = (i64::from(batch.total) - succeeded - rejected - dead - cancelled).max(0);
    let failed = batches::failed_items(&state.pool, id, 1000).await?;
    let callback = match (batch.callback_url, batches::callback_state(&state.pool, id).await?) {
        (None, _) => None,
        (Some(url), None) => Some(CallbackState { url, attempts: 0, delivered_at: None, last_error: None }),
        (Some(url), Some((attempts, delivered_at, last_error))) => {
            Some(CallbackState { url, attempts, delivered_at, last_error })
        }
    };
    Ok(Json(BatchProgress {
        id: batch.id,
        total: batch.total,
        rejected_at_ingest: batch.rejected_at_ingest,
        pending,
        retrying,
        succeeded,
        rejected,
        dead,
        cancelled,
        created_at: batch.created_at,
        started_at,
        finished_at: batch.finished_at,
        cancelled_at: batch.cancelled_at,
        failed_items: failed,
        callback,
    }))
}

/// Cancel a batch
///
/// Needs an API key with the `submit` scope (or `admin` or `operator`). Every command of the
/// batch not yet applied is cancelled: scheduled, retrying and dead ones at once, queued ones
/// as workers take them. The answer counts what was cancelled and what had been applied; a
/// batch that has finished answers 409.
#[utoipa::path(
    post,
    path = "/v1/batches/{id}/cancel",
    tag = "batches",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Cancelled", body = BatchCancelled),
        (status = 404, description = "No such batch", body = ErrorBody),
        (status = 409, description = "The batch has finished", body = ErrorBody),
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
    Ok(Json(state.ops_of_own(&principal).cancel_batch(id, &super::dead_letters::actor(&principal)).await?))
}
