//! Inbound webhooks: `POST /v1/webhooks/{source}` (authenticated by the sender's signature,
//! not an API key), the sources admins configure, and the deliveries that arrived.

use super::auth::{Principal, Scope};
use super::body::{read_bytes, JsonBody};
use super::dead_letters::actor;
use super::error::ApiError;
use super::error::ErrorBody;
use super::openapi::{KeyedErrors, OpenErrors};
use super::reads::{decode_cursor, encode_cursor, limit_param};
use super::ApiState;
use crate::ingest::{Delivery, DeliveryAccepted};
use crate::store::webhooks::{self, Source};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Receive a webhook (authenticated by its signature, not an API key)
///
/// Verified over the raw bytes, recorded, published with a confirm, and only then answered
/// 200. A re-delivery (same sender id) is answered 200 again and applied once.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{source}",
    tag = "webhooks",
    security(()),
    params(("source" = String, Path, min_length = 1, description = "The source's name")),
    request_body(content = Object, content_type = "*/*", description = "The sender's body, as signed"),
    responses(
        (status = 200, description = "Durable in RabbitMQ", body = DeliveryAccepted),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Signature missing, wrong or stale", body = ErrorBody),
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Not a valid command for the source", body = ErrorBody),
        (status = 429, description = "Too many deliveries from this address or to this source; see Retry-After",
         body = ErrorBody),
        OpenErrors,
    )
)]
pub async fn receive(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    super::server::ClientIp(client): super::server::ClientIp,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    let gate = &state.webhook_gate;
    gate.admit_client(client)?;
    let source = gate
        .source(&state.pool, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook source {name:?}")))?;
    gate.admit_source(&name)?;
    let headers = req.headers().clone();
    let body = read_bytes(req, &state).await?;
    let delivery = Delivery { source: &source, headers: &headers, body: &body };
    Ok(Json(state.ingest.receive_webhook(delivery).await?))
}

/// Body of `PUT /v1/webhook-sources/{name}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceBody {
    /// `standard`, `github`, `stripe` or `hmac`.
    #[schema(pattern = "^(standard|github|stripe|hmac)$")]
    scheme: String,
    /// Current secrets first; several while rotating. Each 8-256 characters; for `standard`,
    /// `whsec_` followed by base64 of 24 to 64 bytes.
    #[schema(min_items = 1, inline, value_type = Vec<SecretText>)]
    secrets: Vec<String>,
    /// Defaults to the caller's tenant.
    tenant: Option<String>,
    /// How old a signed timestamp may be (default 300).
    #[serde(default = "default_tolerance")]
    #[schema(minimum = 1, maximum = 86400)]
    tolerance_secs: i32,
    #[serde(default = "default_type")]
    command_type: String,
    signature_header: Option<String>,
    id_header: Option<String>,
}

fn default_tolerance() -> i32 {
    300
}

fn default_type() -> String {
    "webhook.received".into()
}

/// One webhook secret.
#[derive(ToSchema)]
#[schema(min_length = 8, max_length = 256)]
#[allow(dead_code)] // Only its schema is used.
pub struct SecretText(String);

/// A source as saved, and where it receives.
#[derive(Debug, Serialize, ToSchema)]
pub struct SavedSource {
    pub source: Source,
    pub url: String,
}

/// Every source of the caller's reach.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sources {
    pub sources: Vec<Source>,
}

/// A removal that took effect.
#[derive(Debug, Serialize, ToSchema)]
pub struct Removed {
    pub removed: String,
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<webhooks::Delivery>,
    /// Pass as `cursor` for the next page; absent at the end.
    pub next_cursor: Option<String>,
}

/// Create or replace a webhook source
///
/// Needs an API key with the `admin` scope (or `operator`); an admin key manages its own
/// tenant's sources only.
#[utoipa::path(
    put,
    path = "/v1/webhook-sources/{name}",
    tag = "webhooks",
    params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    request_body = SourceBody,
    responses(
        (status = 200, description = "Saved", body = SavedSource),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        KeyedErrors,
    )
)]
#[tracing::instrument(skip_all)]
pub async fn put_source(
    State(state): State<ApiState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let Path(name) = name.map_err(|e| ApiError::bad_request("invalid_name", e.body_text(), Some("path name")))?;
    let b: SourceBody =
        serde_json::from_value(body).map_err(|e| ApiError::bad_request("invalid_body", e.to_string(), Some("body")))?;
    let source = Source {
        name,
        tenant: b.tenant.unwrap_or_else(|| principal.tenant.clone()),
        scheme: b.scheme,
        secrets: b.secrets,
        tolerance_secs: b.tolerance_secs,
        command_type: b.command_type,
        signature_header: b.signature_header.map(|h| h.to_ascii_lowercase()),
        id_header: b.id_header.map(|h| h.to_ascii_lowercase()),
    };
    state.ops_within(principal.reach()).set_source(&source, &actor(&principal)).await?;
    state.webhook_gate.invalidate().await;
    let url = format!("/v1/webhooks/{}", source.name);
    Ok(Json(SavedSource { source, url }))
}

/// Webhook sources (without secrets)
///
/// Needs an API key with the `admin` scope (or `operator`).
#[utoipa::path(
    get,
    path = "/v1/webhook-sources",
    tag = "webhooks",
    responses((status = 200, description = "Sources", body = Sources), KeyedErrors)
)]
pub async fn list_sources(State(state): State<ApiState>, principal: Principal) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    Ok(Json(Sources { sources: state.ops_within(principal.reach()).sources().await? }))
}

/// Remove a webhook source
///
/// Needs an API key with the `admin` scope (or `operator`). Its recorded deliveries stay.
#[utoipa::path(
    delete,
    path = "/v1/webhook-sources/{name}",
    tag = "webhooks",
    params(("name" = String, Path, min_length = 1)),
    responses(
        (status = 200, description = "Removed", body = Removed),
        (status = 404, description = "No such source", body = ErrorBody),
        KeyedErrors,
    )
)]
pub async fn delete_source(
    State(state): State<ApiState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let Path(name) = name.map_err(|e| ApiError::bad_request("invalid_name", e.body_text(), Some("path name")))?;
    state.ops_within(principal.reach()).remove_source(&name, &actor(&principal)).await?;
    state.webhook_gate.invalidate().await;
    Ok(Json(Removed { removed: name }))
}

/// Query string of the deliveries list.
#[derive(Deserialize)]
pub struct DeliveryParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Deliveries of a source, verified or not
///
/// Needs an API key with the `admin` scope (or `operator`). Newest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{source}/deliveries",
    tag = "webhooks",
    params(
        ("source" = String, Path, min_length = 1),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "A page", body = DeliveryPage), KeyedErrors)
)]
pub async fn deliveries(
    State(state): State<ApiState>,
    principal: Principal,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<DeliveryParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let Path(name) = name.map_err(|e| ApiError::bad_request("invalid_name", e.body_text(), Some("path name")))?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text(), Some("query")))?;
    let limit = limit_param(p.limit.as_deref(), 50, 500)?;
    let before = p.cursor.as_deref().map(decode_cursor).transpose()?;
    // Deliveries of a source are its tenant's; an operator also sees those of removed sources.
    if principal.reach() != crate::ops::Reach::Every {
        state.ops_within(principal.reach()).source(&name).await?;
    }
    let page = webhooks::deliveries(&state.pool, &name, before, limit).await?;
    let next = (page.len() as i64 == limit).then(|| page.last().map(|d| encode_cursor(d.received_at, d.id))).flatten();
    Ok(Json(DeliveryPage { deliveries: page, next_cursor: next }))
}
