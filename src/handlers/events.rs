//! `event.record`: append to the tenant's event log.

use super::typed::{CommandType, Handle, Incoming, PayloadSchema};
use super::{HandlerError, Outcome};
use crate::command::Envelope;
use crate::store::events;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgConnection;

/// The payload of `event.record`.
#[derive(Debug, Deserialize)]
pub struct EventRecord {
    name: String,
    data: Value,
    /// When it happened; defaults to when the API accepted it.
    time: Option<DateTime<Utc>>,
}

impl CommandType for EventRecord {
    const TYPE: &'static str = "event.record";
    fn schema() -> PayloadSchema {
        PayloadSchema::Text(include_str!("../../schemas/event.record.json"))
    }
}

/// Handles `event.record`.
pub struct RecordEvent;

impl Handle<EventRecord> for RecordEvent {
    async fn handle(&self, tx: &mut PgConnection, cmd: Incoming<'_, EventRecord>) -> Result<Outcome, HandlerError> {
        let (p, env) = (cmd.payload, cmd.envelope);
        if let Some(refusal) = reserved(&p) {
            return Ok(refusal);
        }
        let at = p.time.unwrap_or(env.submitted_at);
        events::append(tx, env.id, &env.tenant, &p.name, &p.data, at).await?;
        Ok(succeeded(env, at))
    }

    async fn handle_many(
        &self,
        tx: &mut PgConnection,
        cmds: Vec<Incoming<'_, EventRecord>>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let mut rows = events::NewEvents::with_capacity(cmds.len());
        let mut outcomes = Vec::with_capacity(cmds.len());
        for Incoming { payload: p, envelope: env } in cmds {
            if let Some(refusal) = reserved(&p) {
                outcomes.push(refusal);
                continue;
            }
            let at = p.time.unwrap_or(env.submitted_at);
            rows.push(env.id, &env.tenant, p.name, p.data, at);
            outcomes.push(succeeded(env, at));
        }
        events::append_many(tx, &rows).await?;
        Ok(outcomes)
    }
}

/// Names under `webhook.` are written only by verified webhooks.
fn reserved(p: &EventRecord) -> Option<Outcome> {
    p.name.starts_with(super::webhooks::RESERVED_PREFIX).then(|| {
        Outcome::rejected(
            "reserved_name",
            format!(
                "event names starting with {:?} are written only by verified webhooks",
                super::webhooks::RESERVED_PREFIX
            ),
        )
    })
}

fn succeeded(env: &Envelope, at: DateTime<Utc>) -> Outcome {
    Outcome::Succeeded(json!({"event_id": env.id, "occurred_at": at}))
}
