//! `POST /v1/batches` (a JSON array or NDJSON, validated item by item, published pipelined)
//! and `GET /v1/batches/{id}` (progress counted from the commands' rows).

use super::auth::{Principal, Scope};
use super::batch_body::{read_batch, Options};
use super::commands::{idempotency_key, traceparent_of, validate, MAX_IDEMPOTENCY_KEY};
use super::error::ApiError;
use super::error::{ErrorBody, ErrorDetail};
use super::openapi::KeyedErrors;
use super::ApiState;
use crate::broker::wire::Outgoing;
use crate::broker::Message;
use crate::command::{command_id_for_key, BatchRef, Envelope};
use crate::schemas::Violation;
use crate::store::batches::{self, NewBatch};
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

/// Namespace of batch item ids derived from the batch id and the item's position.
const ITEM_NAMESPACE: Uuid = Uuid::from_u128(0x3f0c_2b8e_51d4_4a7f_8c19_d6e2_a047_b5c1);

/// Why one item of a batch was refused at ingest.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ItemRefusal {
    /// Position in the batch, from 0.
    pub index: usize,
    pub code: String,
    pub message: String,
    /// Where the item breaks its schema, as pointers into the whole batch body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<Violation>>,
}

impl ItemRefusal {
    fn new(index: usize, code: &str, message: impl Into<String>) -> Self {
        Self { index, code: code.to_owned(), message: message.into(), violations: None }
    }

    fn of(index: usize, e: ApiError) -> Self {
        match e {
            ApiError::Unprocessable { code, message, violations } => Self {
                violations: Some(
                    violations
                        .into_iter()
                        .map(|x| Violation { path: format!("/commands/{index}{}", x.path), message: x.message })
                        .collect(),
                ),
                ..Self::new(index, code, message)
            },
            other => Self::new(index, "invalid_command", other.to_string()),
        }
    }
}

/// An item that was valid but that RabbitMQ did not confirm.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotPublished {
    pub index: u32,
    pub id: Uuid,
    pub error: String,
}

/// The answer to an accepted batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    pub id: Uuid,
    pub status_url: String,
    /// Commands RabbitMQ confirmed: durable.
    pub accepted: usize,
    pub rejected: Vec<ItemRefusal>,
    /// Valid items whose publish was not confirmed; resubmit the batch with the same
    /// Idempotency-Key (the confirmed ones are not applied twice).
    pub not_published: Vec<NotPublished>,
}

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
#[tracing::instrument(skip_all, fields(tenant = %principal.tenant, batch_id, items))]
pub async fn submit(
    State(state): State<ApiState>,
    principal: Principal,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::Submit)?;
    let headers = req.headers().clone();
    let key = idempotency_key(&headers)?.map(str::to_owned);
    let (items, options) = read_batch(&state, req).await?;
    let max = state.batch_settings.max_commands;
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_batch_length",
            format!("a batch holds 1 to {max} commands, not 0"),
            Some("body commands"),
        ));
    }
    let callback = check_callback(&options)?;
    if let Some((url, _)) = callback {
        if let Err(refusal) = crate::webhooks::outbound::check(url, &state.batch_settings).await {
            return Err(ApiError::bad_request("invalid_callback", refusal.to_string(), Some("body callback_url")));
        }
    }
    // The request already took one token; a batch pays for every command it carries.
    state.limiter.charge(&principal.tenant, &principal.key_id, items.len().saturating_sub(1))?;
    state.backpressure.check()?;
    tracing::Span::current().record("items", items.len());
    let batch_id = match &key {
        Some(k) => command_id_for_key(&principal.tenant, &format!("batch\u{0}{k}")),
        None => Uuid::now_v7(),
    };
    tracing::Span::current().record("batch_id", tracing::field::display(batch_id));

    let mut cmds = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    let mut keys_seen = std::collections::HashSet::new();
    for (index, item) in items.into_iter().enumerate() {
        let l = &state.limits;
        if let Err(e) =
            super::limits::check_shape(&item, l.max_json_depth, l.max_string_bytes, &format!("/commands/{index}"))
        {
            rejected.push(ItemRefusal::new(index, "invalid_command", e.to_string()));
            continue;
        }
        if let Some(k) = item.get("idempotency_key").and_then(Value::as_str) {
            if !keys_seen.insert(k.to_owned()) {
                let why = "an earlier item of this batch has the same idempotency_key";
                rejected.push(ItemRefusal::new(index, "duplicate_idempotency_key", why));
                continue;
            }
        }
        match prepare(&state, &principal.tenant, batch_id, index, item) {
            Ok(cmd) => cmds.push(cmd),
            Err(e) => rejected.push(ItemRefusal::of(index, e)),
        }
    }
    if cmds.is_empty() || (options.all_or_nothing && !rejected.is_empty()) {
        metrics::counter!("sluice_ingest_rejected_total", "reason" => "invalid").increment(rejected.len() as u64);
        let error = ErrorDetail {
            code: "batch_rejected".into(),
            message: format!("{} of the batch's commands are invalid; nothing was accepted", rejected.len()),
            items: Some(rejected),
            ..ErrorDetail::default()
        };
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(ErrorBody { error })).into_response());
    }
    let total = i32::try_from(cmds.len()).unwrap_or(i32::MAX);
    let fresh = batches::create(
        &state.pool,
        &NewBatch {
            id: batch_id,
            tenant: &principal.tenant,
            total,
            rejected_at_ingest: i32::try_from(rejected.len()).unwrap_or(i32::MAX),
            callback_url: callback.map(|c| c.0),
            callback_secret: callback.map(|c| state.sealer.seal(c.1)).as_deref(),
        },
    )
    .await?;

    let traceparent = traceparent_of(&headers);
    let topology = state.broker.topology();
    let outgoing: Vec<Outgoing> = cmds.iter().map(|c| Outgoing::first_attempt(topology, c, &traceparent)).collect();
    let msgs: Vec<Message> = outgoing.iter().map(Outgoing::message).collect();
    let results = state.broker.publish_many(&msgs).await;
    let mut failed = Vec::new();
    for (cmd, r) in cmds.iter().zip(&results) {
        if let Err(e) = r {
            let index = cmd.batch.map_or(0, |b| b.index);
            failed.push(NotPublished { index, id: cmd.id, error: e.public().into_owned() });
        }
    }
    let published = cmds.len() - failed.len();
    // Timeouts and channel errors leave it unknown whether the broker took the message; only
    // definite refusals shrink the batch (an unknown one may still arrive and be counted).
    let definitely_lost = results.iter().filter(|r| matches!(r, Err(e) if e.definitely_not_published())).count();
    for cmd in cmds.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(c, _)| c) {
        metrics::counter!("sluice_ingest_accepted_total", "type" => cmd.kind.clone()).increment(1);
        state.reporter.accepted();
    }
    // Nothing got through: the client is told to retry, and the batch must not look finished.
    if published > 0 && (definitely_lost > 0 || !fresh) {
        let total = i32::try_from(cmds.len() - definitely_lost).unwrap_or(i32::MAX);
        batches::settle_total(&state.pool, batch_id, total, fresh).await?;
        // Workers may have finished every published command before the total changed.
        batches::finish_if_done(&state.pool, &[batch_id]).await?;
    }
    if published == 0 {
        let message = "RabbitMQ confirmed no command of the batch; retry with the same Idempotency-Key".to_owned();
        return Err(if definitely_lost == results.len() {
            ApiError::Unavailable { message, retry_after_secs: 2 }
        } else {
            // Some were sent unconfirmed and may still arrive.
            ApiError::OutcomeUnknown { message, retry_after_secs: 2 }
        });
    }
    let url = format!("/v1/batches/{batch_id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, url.clone())],
        Json(BatchAccepted { id: batch_id, status_url: url, accepted: published, rejected, not_published: failed }),
    )
        .into_response())
}

/// The callback URL and secret, checked: both or neither, http(s), a Standard Webhooks secret.
fn check_callback(o: &Options) -> Result<Option<(&str, &str)>, ApiError> {
    match (o.callback_url.as_deref(), o.callback_secret.as_deref()) {
        (None, None) => Ok(None),
        (Some(url), Some(secret)) => {
            let ok_url = (url.starts_with("https://") || url.starts_with("http://")) && url.len() <= 2048;
            if !ok_url || url.parse::<axum::http::Uri>().is_err() {
                return Err(ApiError::bad_request(
                    "invalid_callback",
                    "callback_url must be an http(s) URL",
                    Some("body callback_url"),
                ));
            }
            if crate::webhooks::standard::decode_secret(secret).is_none() {
                return Err(ApiError::bad_request(
                    "invalid_callback",
                    "callback_secret must be whsec_ followed by base64 of 24 to 64 bytes",
                    Some("body callback_secret"),
                ));
            }
            Ok(Some((url, secret)))
        }
        _ => Err(ApiError::bad_request(
            "invalid_callback",
            "callback_url and callback_secret go together",
            Some("body callback_url"),
        )),
    }
}

/// A batch item made a command: validated like a single command, with an optional
/// `idempotency_key` field of its own.
fn prepare(state: &ApiState, tenant: &str, batch_id: Uuid, index: usize, item: Value) -> Result<Envelope, ApiError> {
    let Value::Object(mut obj) = item else {
        return Err(ApiError::Unprocessable {
            code: "invalid_command",
            message: "a batch item must be a command object".into(),
            violations: vec![Violation { path: String::new(), message: "expected an object".into() }],
        });
    };
    let key = match obj.remove("idempotency_key") {
        None => None,
        Some(Value::String(k))
            if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(k)
        }
        Some(_) => {
            return Err(ApiError::Unprocessable {
                code: "invalid_command",
                message: format!("idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
                violations: vec![Violation { path: "/idempotency_key".into(), message: "invalid".into() }],
            })
        }
    };
    let (kind, payload) = validate(&state.schemas, Value::Object(obj))?;
    let mut cmd = Envelope::new(tenant, &kind, payload, None);
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    // Ids live in the batch's namespace (an item key names the item within its batch), so
    // every item gets a row of this batch and the batch's progress can reach its total.
    let name = match &key {
        Some(k) => [batch_id.as_bytes().as_slice(), b"key\0", k.as_bytes()].concat(),
        None => [batch_id.as_bytes().as_slice(), &index.to_be_bytes()].concat(),
    };
    cmd.id = Uuid::new_v5(&ITEM_NAMESPACE, &name);
    cmd.batch = Some(BatchRef { id: batch_id, index });
    Ok(cmd)
}

/// Where a batch stands, counted from its commands' rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchProgress {
    pub id: Uuid,
    /// Commands published (items refused at ingest are not counted).
    pub total: i32,
    pub rejected_at_ingest: i32,
    /// Not yet final: in the queue, being applied, or retrying.
    pub pending: i64,
    pub retrying: i64,
    pub succeeded: i64,
    pub rejected: i64,
    pub dead: i64,
    pub created_at: DateTime<Utc>,
    /// When a worker first took one of its commands.
    pub started_at: Option<DateTime<Utc>>,
    /// When every command was final.
    pub finished_at: Option<DateTime<Utc>>,
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
    let (succeeded, rejected, dead, retrying) =
        (count("succeeded"), count("rejected"), count("dead"), count("retrying"));
    let pending = (i64::from(batch.total) - succeeded - rejected - dead).max(0);
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
        created_at: batch.created_at,
        started_at,
        finished_at: batch.finished_at,
        failed_items: failed,
        callback,
    }))
}
