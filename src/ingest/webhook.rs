//! A webhook delivery: verified over its raw bytes, recorded, and published as a command of
//! its source's type.

use super::shape::check_shape;
use super::{Ingest, IngestError};
use crate::broker::wire::{new_traceparent, Outgoing};
use crate::command::Envelope;
use crate::store::webhooks::{self, NewDelivery, Source};
use crate::webhooks::inbound::{self, clean_event};
use crate::webhooks::VerifyError;
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// Namespace of command ids derived from (source, sender's delivery id).
const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x9d2e_6a41_0b7c_4f53_a8e1_3c5d_7f90_2b14);

/// At most this many refusals a second are recorded per source; the rest are only counted.
const REFUSALS_PER_SECOND: u32 = 20;

/// A delivery as it arrived, for a source already found and admitted.
#[derive(Debug)]
pub struct Delivery<'a> {
    pub source: &'a Source,
    pub headers: &'a HeaderMap,
    /// The body exactly as signed.
    pub body: &'a [u8],
}

/// The answer to a delivery: durable in RabbitMQ.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryAccepted {
    pub status: super::AcceptedStatus,
    pub command_id: Uuid,
    /// A re-delivery of one already accepted (applied once all the same).
    pub duplicate: bool,
}

impl Ingest {
    /// Verifies, records and publishes `d`. A re-delivery (same sender id) is accepted again
    /// and applied once; a verified delivery that cannot become a command is recorded all the
    /// same, so nothing a sender signed is lost, and refused.
    #[tracing::instrument(skip_all, fields(source = %d.source.name))]
    pub async fn receive_webhook(&self, d: Delivery<'_>) -> Result<DeliveryAccepted, IngestError> {
        let name = &d.source.name;
        let now = chrono::Utc::now().timestamp();
        let verified = match inbound::verify(d.source, d.headers, d.body, now) {
            Ok(v) => v,
            Err(e) => return Err(self.refuse(&d, &e).await?),
        };
        let command_id = Uuid::new_v5(&DELIVERY_NAMESPACE, format!("{name}\u{0}{}", verified.dedupe_key).as_bytes());
        // A body that is not JSON, or more JSON than a command may hold, travels as text; the
        // shape check below then refuses what is too long.
        let l = &self.limits;
        let budget = crate::json::Budget::new(l.max_json_values, l.max_json_bytes);
        let parsed = crate::json::parse(d.body, &[&budget])
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(d.body).into_owned()));
        let payload = json!({
            "source": name,
            "delivery_id": verified.delivery_id.chars().take(255).collect::<String>(),
            "event": clean_event(&verified.event),
            "body": parsed,
        });
        let kind = &d.source.command_type;
        let problem = check_shape(&payload["body"], l.max_json_depth, l.max_string_bytes, "")
            .err()
            .map(|e| e.to_string())
            .or_else(|| self.schemas.validate(kind, &payload).err().map(|e| e.to_string()));
        let fresh = webhooks::record(
            &self.pool,
            &NewDelivery {
                id: command_id,
                source: name,
                delivery_id: Some(&verified.delivery_id),
                verified: true,
                error: problem.as_deref(),
                headers: kept_headers(d.headers),
                body: Some(d.body),
                command_id: problem.is_none().then_some(command_id),
            },
        )
        .await?;
        if !fresh && problem.is_none() {
            webhooks::mark_accepted(&self.pool, command_id).await?;
        }
        if let Some(problem) = problem {
            return Err(IngestError::Invalid {
                code: "invalid_payload",
                message: format!("the delivery was recorded but cannot become a {kind} command: {problem}"),
                violations: Vec::new(),
            });
        }
        let mut cmd = Envelope::new(&d.source.tenant, kind, payload, None);
        cmd.id = command_id;
        let out = Outgoing::first_attempt(self.broker.topology(), &cmd, &new_traceparent());
        // Published again on a re-delivery: if the first publish failed the sender retries, and
        // the worker's inbox absorbs a second copy.
        self.broker.publish(out.message()).await?;
        metrics::counter!("sluice_webhooks_accepted_total", "source" => name.clone()).increment(1);
        Ok(DeliveryAccepted { status: super::AcceptedStatus::Accepted, command_id, duplicate: !fresh })
    }

    /// Counts a delivery that does not verify and records it (when few enough arrive) without
    /// its body: when, a few headers and why, so unsigned traffic cannot fill the table.
    async fn refuse(&self, d: &Delivery<'_>, e: &VerifyError) -> Result<IngestError, IngestError> {
        let name = &d.source.name;
        metrics::counter!("sluice_webhooks_refused_total", "source" => name.clone()).increment(1);
        if refusals_may_be_recorded(name) {
            let error = e.to_string();
            let delivery = NewDelivery {
                id: Uuid::now_v7(),
                source: name,
                delivery_id: None,
                verified: false,
                error: Some(&error),
                headers: refusal_headers(d.headers),
                body: None,
                command_id: None,
            };
            webhooks::record(&self.pool, &delivery).await?;
            let kept = i64::try_from(self.webhooks.max_refused_kept).unwrap_or(i64::MAX);
            webhooks::trim_refused(&self.pool, name, kept).await?;
        }
        Ok(IngestError::Unauthorized(match e {
            VerifyError::Missing(_) => "webhook signature headers are missing",
            VerifyError::OutsideTolerance(_) => "webhook timestamp is outside the tolerance",
            _ => "webhook signature does not verify",
        }))
    }
}

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
