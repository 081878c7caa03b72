//! One command: checked against its type's schema, published with a confirm.

use super::{Ingest, IngestError};
use crate::broker::wire::{trace_id, Outgoing};
use crate::command::Envelope;
use crate::schemas::{PayloadError, SchemaRegistry};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// Longest accepted idempotency key, of a command or of a batch item.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A command as a producer submits it.
#[derive(Debug)]
pub struct CommandRequest<'a> {
    /// The tenant it is submitted for (the API key's).
    pub tenant: &'a str,
    /// `{"type", "payload"}`, not yet checked.
    pub body: Value,
    /// Makes a retried submission the same command.
    pub idempotency_key: Option<&'a str>,
    /// W3C trace context the command carries to its worker.
    pub traceparent: &'a str,
}

/// The answer to an accepted command.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub id: Uuid,
    pub status: AcceptedStatus,
    /// Where the command's status is read.
    pub status_url: String,
}

/// Always `accepted`: RabbitMQ confirmed the command, so it is durable.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AcceptedStatus {
    Accepted,
}

impl Ingest {
    /// Checks `req`'s command and publishes it; `Ok` only once RabbitMQ confirmed it.
    #[tracing::instrument(skip_all, fields(tenant = req.tenant, command_id, kind, trace_id))]
    pub async fn submit(&self, req: CommandRequest<'_>) -> Result<Accepted, IngestError> {
        let started = std::time::Instant::now();
        let (kind, payload) = match parse_command(&self.schemas, req.body) {
            Ok(ok) => ok,
            Err(e) => {
                metrics::counter!("sluice_ingest_rejected_total", "reason" => "invalid").increment(1);
                return Err(e);
            }
        };
        self.backpressure.check()?;
        let cmd = Envelope::new(req.tenant, &kind, payload, req.idempotency_key);
        let span = tracing::Span::current();
        span.record("command_id", tracing::field::display(cmd.id)).record("kind", kind.as_str());
        span.record("trace_id", trace_id(req.traceparent).unwrap_or_default());
        let out = Outgoing::first_attempt(self.broker.topology(), &cmd, req.traceparent);
        if let Err(e) = self.broker.publish(out.message()).await {
            metrics::counter!("sluice_ingest_rejected_total", "reason" => e.reason()).increment(1);
            return Err(e.into());
        }
        metrics::counter!("sluice_ingest_accepted_total", "type" => kind).increment(1);
        self.reporter.accepted();
        metrics::histogram!("sluice_ingest_seconds").record(started.elapsed());
        Ok(Accepted { id: cmd.id, status: AcceptedStatus::Accepted, status_url: format!("/v1/commands/{}", cmd.id) })
    }
}

/// Checks a command's shape (`{"type", "payload"}` and nothing else) and its payload against
/// its type's schema, returning the type and the payload.
pub fn parse_command(schemas: &SchemaRegistry, body: Value) -> Result<(String, Value), IngestError> {
    let invalid =
        |message: &str, path: &str, detail: &str| IngestError::invalid("invalid_command", message, path, detail);
    let Value::Object(mut obj) = body else {
        return Err(invalid("body must be a JSON object", "", "expected an object"));
    };
    let kind = match obj.remove("type") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid("type must be a string", "/type", "expected a string")),
        None => return Err(invalid("type is required", "/type", "missing")),
    };
    let payload = match obj.remove("payload") {
        Some(p @ Value::Object(_)) => p,
        Some(_) => return Err(invalid("payload must be an object", "/payload", "expected an object")),
        None => return Err(invalid("payload is required", "/payload", "missing")),
    };
    if let Some(extra) = obj.keys().next() {
        return Err(invalid("unknown field in command", &format!("/{extra}"), "not allowed"));
    }
    if schemas.knows(&kind) && !schemas.submittable(&kind) {
        let why = format!("{kind} commands are made by sluice itself (e.g. from verified webhooks)");
        return Err(IngestError::invalid("not_submittable", why, "/type", "not submittable"));
    }
    match schemas.validate(&kind, &payload) {
        Ok(()) => Ok((kind, payload)),
        Err(PayloadError::UnknownType(k)) => Err(IngestError::invalid(
            "unknown_type",
            format!("unknown command type {k:?}; known types: {}", schemas.kinds().join(", ")),
            "/type",
            "unknown command type",
        )),
        Err(PayloadError::Invalid { kind, violations }) => Err(IngestError::Invalid {
            code: "invalid_payload",
            message: format!("payload does not match the schema of {kind}"),
            violations,
        }),
    }
}

/// Whether `key` may be an idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters.
pub fn valid_idempotency_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY && key.bytes().all(|b| b.is_ascii_graphic())
}
