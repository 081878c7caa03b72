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
use crate::broker::wire::{new_traceparent, Outgoing};
use crate::command::Envelope;
use crate::store::webhooks::{self, NewDelivery, Source};
use crate::webhooks::inbound::{self, clean_event};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// Namespace of command ids derived from (source, sender's delivery id).
const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x9d2e_6a41_0b7c_4f53_a8e1_3c5d_7f90_2b14);

/// Headers kept with a delivery: what a sender sends, not what proxies add (and no cookies).
fn kept_headers(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        let n = name.as_str();
        if matches!(n, "authorization" | "cookie" | "proxy-authorization") {
            continue;
        }
        if let Ok(v) = value.to_str() {
            out.insert(n.to_owned(), Value::String(v.chars().take(1024).collect()));
        }
    }
    Value::Object(out)
}

/// The few headers kept with a refused delivery: enough to see who sent what.
fn refusal_headers(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in ["user-agent", "content-type", "content-length", "x-forwarded-for", "webhook-id", "x-github-delivery"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            out.insert(name.to_owned(), Value::String(v.chars().take(256).collect()));
        }
    }
    Value::Object(out)
}

/// At most this many refusals a second are recorded per source; the rest are only counted.
const REFUSALS_PER_SECOND: u32 = 20;

fn refusals_may_be_recorded(source: &str) -> bool {
    static WINDOWS: std::sync::Mutex<Option<(u64, std::collections::HashMap<String, u32>)>> =
        std::sync::Mutex::new(None);
    let second = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut w = WINDOWS.lock().unwrap_or_else(|e| e.into_inner());
    let (at, counts) = w.get_or_insert_with(|| (second, std::collections::HashMap::new()));
    if *at != second {
        *at = second;
        counts.clear();
    }
    let n = counts.entry(source.to_owned()).or_insert(0);
    *n += 1;
    *n <= REFUSALS_PER_SECOND
}

/// The answer to a delivery: durable in RabbitMQ.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryAccepted {
    pub status: super::commands::AcceptedStatus,
    pub command_id: Uuid,
    /// A re-delivery of one already accepted (applied once all the same).
    pub duplicate: bool,
}

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
#[tracing::instrument(skip_all, fields(source = %name))]
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
    let now = chrono::Utc::now().timestamp();
    let verified = match inbound::verify(&source, &headers, &body, now) {
        Ok(v) => v,
        Err(e) => {
            metrics::counter!("sluice_webhooks_refused_total", "source" => name.clone()).increment(1);
            // Refused deliveries keep no body: only when, a few headers and why; and at most
            // a few a second per source, so unsigned traffic cannot fill the table.
            let error = e.to_string();
            if refusals_may_be_recorded(&name) {
                webhooks::record(
                    &state.pool,
                    &NewDelivery {
                        id: Uuid::now_v7(),
                        source: &name,
                        delivery_id: None,
                        verified: false,
                        error: Some(&error),
                        headers: refusal_headers(&headers),
                        body: None,
                        command_id: None,
                    },
                )
                .await?;
                webhooks::trim_refused(&state.pool, &name, gate.refused_kept()).await?;
            }
            return Err(ApiError::Unauthorized(match e {
                crate::webhooks::VerifyError::Missing(_) => "webhook signature headers are missing",
                crate::webhooks::VerifyError::OutsideTolerance(_) => "webhook timestamp is outside the tolerance",
                _ => "webhook signature does not verify",
            }));
        }
    };
    let command_id = Uuid::new_v5(&DELIVERY_NAMESPACE, format!("{name}\u{0}{}", verified.dedupe_key).as_bytes());
    // A body that is not JSON, or more JSON than a command may hold, travels as text; the
    // shape check below then refuses what is too long.
    let budget = super::body::ShapeLimit::from(state.limits.as_ref()).budget();
    let parsed = crate::json::parse(&body, &[&budget])
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let payload = json!({
        "source": name,
        "delivery_id": verified.delivery_id.chars().take(255).collect::<String>(),
        "event": clean_event(&verified.event),
        "body": parsed,
    });
    // A verified delivery is recorded (raw bytes) even when it cannot become a command, so
    // nothing a sender signed is lost; it is then refused with 422.
    let l = &state.limits;
    let problem = super::limits::check_shape(&payload["body"], l.max_json_depth, l.max_string_bytes, "")
        .err()
        .map(|e| e.to_string())
        .or_else(|| state.schemas.validate(&source.command_type, &payload).err().map(|e| e.to_string()));
    let fresh = webhooks::record(
        &state.pool,
        &NewDelivery {
            id: command_id,
            source: &name,
            delivery_id: Some(&verified.delivery_id),
            verified: true,
            error: problem.as_deref(),
            headers: kept_headers(&headers),
            body: Some(&body),
            command_id: problem.is_none().then_some(command_id),
        },
    )
    .await?;
    if !fresh && problem.is_none() {
        webhooks::mark_accepted(&state.pool, command_id).await?;
    }
    if let Some(problem) = problem {
        return Err(ApiError::Unprocessable {
            code: "invalid_payload",
            message: format!(
                "the delivery was recorded but cannot become a {} command: {problem}",
                source.command_type
            ),
            violations: Vec::new(),
        });
    }
    let mut cmd = Envelope::new(&source.tenant, &source.command_type, payload, None);
    cmd.id = command_id;
    let out = Outgoing::first_attempt(state.broker.topology(), &cmd, &new_traceparent());
    // Published again on a re-delivery: if the first publish failed the sender retries, and
    // the worker's inbox absorbs a second copy.
    state.broker.publish(out.message()).await?;
    metrics::counter!("sluice_webhooks_accepted_total", "source" => name.clone()).increment(1);
    Ok(Json(DeliveryAccepted { status: super::commands::AcceptedStatus::Accepted, command_id, duplicate: !fresh }))
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
