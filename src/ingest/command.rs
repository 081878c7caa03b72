//! One command: checked against its type's schema, published with a confirm.

use super::{Ingest, IngestError};
use crate::broker::wire::{trace_id, Outgoing};
use crate::command::{Envelope, Priority};
use crate::schemas::{PayloadError, SchemaRegistry};
use crate::store::scheduled::{self, NewScheduled};
use chrono::{DateTime, SubsecRound, Utc};
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
    /// `{"type", "payload", "run_at"?, "delay_ms"?, "priority"?, "ordering_key"?}`, not yet checked.
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
    /// When a scheduled command will be published to the workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Where the command's status is read.
    pub status_url: String,
}

/// `accepted`: RabbitMQ confirmed the command; `scheduled`: Postgres committed it for its
/// `run_at`. Durable either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AcceptedStatus {
    Accepted,
    Scheduled,
}

/// When a command asks to run, as submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timing {
    #[default]
    Now,
    /// `run_at`.
    At(DateTime<Utc>),
    /// `delay_ms`.
    After(u64),
}

/// A command's fields, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCommand {
    pub kind: String,
    pub payload: Value,
    pub timing: Timing,
    /// `None` when the command did not say (a batch's own priority may apply).
    pub priority: Option<Priority>,
    /// Commands of the tenant with the same key are applied in the order accepted.
    pub ordering_key: Option<String>,
}

/// Longest accepted ordering key, in characters.
pub const MAX_ORDERING_KEY: usize = 255;

impl Ingest {
    /// Checks `req`'s command and makes it durable: published with RabbitMQ's confirm, or, for
    /// a later `run_at`, committed to Postgres for the dispatcher.
    #[tracing::instrument(skip_all, fields(tenant = req.tenant, command_id, kind, trace_id))]
    pub async fn submit(&self, req: CommandRequest<'_>) -> Result<Accepted, IngestError> {
        let started = std::time::Instant::now();
        let parsed = parse_command(&self.schemas, req.body).and_then(|p| {
            let run_at = self.run_at(p.timing, "")?;
            Ok((p, run_at))
        });
        let (parsed, run_at) = match parsed {
            Ok(ok) => ok,
            Err(e) => {
                metrics::counter!("sluice_ingest_rejected_total", "reason" => "invalid").increment(1);
                return Err(e);
            }
        };
        self.backpressure.check()?;
        let mut cmd = Envelope::new(req.tenant, &parsed.kind, parsed.payload, req.idempotency_key);
        cmd.run_at = run_at;
        cmd.priority = parsed.priority.unwrap_or_default();
        cmd.ordering_key = parsed.ordering_key;
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("command_id", tracing::field::display(cmd.id)).record("kind", parsed.kind.as_str());
            span.record("trace_id", trace_id(req.traceparent).unwrap_or_default());
        }
        let status = match run_at {
            Some(at) => {
                let row = NewScheduled { cmd: &cmd, run_at: at, traceparent: req.traceparent };
                scheduled::insert_many(&self.pool, &[row]).await.map_err(IngestError::from_write)?;
                metrics::counter!("sluice_ingest_scheduled_total", "type" => parsed.kind.clone()).increment(1);
                AcceptedStatus::Scheduled
            }
            None => {
                let out = Outgoing::first_attempt(self.broker.topology(), &cmd, req.traceparent);
                if let Err(e) = self.broker.publish(out.message()).await {
                    metrics::counter!("sluice_ingest_rejected_total", "reason" => e.reason()).increment(1);
                    return Err(e.into());
                }
                AcceptedStatus::Accepted
            }
        };
        metrics::counter!("sluice_ingest_accepted_total", "type" => parsed.kind).increment(1);
        self.reporter.accepted();
        metrics::histogram!("sluice_ingest_seconds").record(started.elapsed());
        Ok(Accepted { id: cmd.id, status, run_at, status_url: format!("/v1/commands/{}", cmd.id) })
    }

    /// When a command with `timing` is to be published: `None` for now (no time asked, a
    /// zero delay, or a `run_at` already past), else a time within the horizon. `at` is the
    /// JSON pointer of the command in the request body.
    pub(super) fn run_at(&self, timing: Timing, at: &str) -> Result<Option<DateTime<Utc>>, IngestError> {
        self.run_at_unrounded(timing, at).map(|t| t.map(|t| t.trunc_subsecs(6)))
    }

    /// [`Self::run_at`] to the nanosecond; Postgres keeps microseconds, and the answer must say
    /// what GET will.
    fn run_at_unrounded(&self, timing: Timing, at: &str) -> Result<Option<DateTime<Utc>>, IngestError> {
        let now = Utc::now();
        let days = self.scheduling.horizon_days;
        let horizon =
            now.checked_add_signed(chrono::Duration::days(i64::from(days))).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let beyond = |field: &str| {
            IngestError::invalid(
                "beyond_horizon",
                format!("{field} is more than {days} days ahead (scheduling.horizon_days)"),
                &format!("{at}/{field}"),
                "too far ahead",
            )
        };
        match timing {
            Timing::Now => Ok(None),
            Timing::At(t) if t <= now => Ok(None),
            Timing::At(t) if t > horizon => Err(beyond("run_at")),
            Timing::At(t) => Ok(Some(t)),
            Timing::After(0) => Ok(None),
            Timing::After(ms) => {
                let later =
                    i64::try_from(ms).ok().and_then(|ms| now.checked_add_signed(chrono::Duration::milliseconds(ms)));
                match later {
                    Some(t) if t <= horizon => Ok(Some(t)),
                    _ => Err(beyond("delay_ms")),
                }
            }
        }
    }
}

/// Checks a command's shape (`{"type", "payload"}`, optionally `run_at` or `delay_ms`,
/// `priority` and `ordering_key`, and nothing else) and its payload against its type's schema.
pub fn parse_command(schemas: &SchemaRegistry, body: Value) -> Result<ParsedCommand, IngestError> {
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
    let timing = match (obj.remove("run_at"), obj.remove("delay_ms")) {
        (Some(_), Some(_)) => return Err(invalid("give run_at or delay_ms, not both", "/delay_ms", "not both")),
        (Some(Value::String(t)), None) => match DateTime::parse_from_rfc3339(&t) {
            Ok(t) => Timing::At(t.with_timezone(&Utc)),
            Err(_) => {
                let why = "run_at must be an RFC 3339 timestamp, e.g. 2026-12-24T18:00:00Z";
                return Err(invalid(why, "/run_at", "expected an RFC 3339 timestamp"));
            }
        },
        (Some(_), None) => return Err(invalid("run_at must be a string", "/run_at", "expected a string")),
        (None, Some(d)) => match d.as_u64() {
            Some(ms) => Timing::After(ms),
            None => {
                let why = "delay_ms must be a non-negative integer (milliseconds)";
                return Err(invalid(why, "/delay_ms", "expected a non-negative integer"));
            }
        },
        (None, None) => Timing::Now,
    };
    let priority = match obj.remove("priority") {
        None => None,
        Some(p) => match p.as_str().and_then(Priority::parse) {
            Some(p) => Some(p),
            None => {
                return Err(invalid(
                    "priority must be high, normal or low",
                    "/priority",
                    "expected high, normal or low",
                ))
            }
        },
    };
    let ordering_key = match obj.remove("ordering_key") {
        None => None,
        Some(Value::String(k))
            if !k.is_empty() && k.chars().count() <= MAX_ORDERING_KEY && !k.chars().any(char::is_control) =>
        {
            Some(k)
        }
        Some(_) => {
            let why = format!("ordering_key must be 1-{MAX_ORDERING_KEY} characters, none of them control characters");
            return Err(invalid(&why, "/ordering_key", "invalid"));
        }
    };
    if ordering_key.is_some() && priority.is_some_and(|p| !p.is_normal()) {
        let why = "give ordering_key or a priority, not both: a key's commands run in the order accepted";
        return Err(invalid(why, "/priority", "not with ordering_key"));
    }
    if let Some(extra) = obj.keys().next() {
        return Err(invalid("unknown field in command", &format!("/{extra}"), "not allowed"));
    }
    if schemas.knows(&kind) && !schemas.submittable(&kind) {
        let why = format!("{kind} commands are made by sluice itself (e.g. from verified webhooks)");
        return Err(IngestError::invalid("not_submittable", why, "/type", "not submittable"));
    }
    match schemas.validate(&kind, &payload) {
        Ok(()) => Ok(ParsedCommand { kind, payload, timing, priority, ordering_key }),
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
