//! `event.record`: append to the tenant's event log.

use super::{payload, Handler, HandlerFuture, HandlerManyFuture, Outcome};
use crate::command::Envelope;
use crate::store::events;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgConnection;

/// Handles `event.record`.
pub struct RecordEvent;

#[derive(Deserialize)]
struct EventPayload {
    name: String,
    data: Value,
    /// When it happened; defaults to when the API accepted it.
    time: Option<DateTime<Utc>>,
}

impl Handler for RecordEvent {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, cmd: &'a Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            let p: EventPayload = payload(cmd)?;
            if let Some(refusal) = reserved(&p) {
                return Ok(refusal);
            }
            let at = p.time.unwrap_or(cmd.submitted_at);
            events::append(tx, cmd.id, &cmd.tenant, &p.name, &p.data, at).await?;
            Ok(succeeded(cmd, at))
        })
    }

    fn handle_many<'a>(&'a self, tx: &'a mut PgConnection, cmds: &'a [&'a Envelope]) -> HandlerManyFuture<'a> {
        Box::pin(async move {
            let mut rows = events::NewEvents::with_capacity(cmds.len());
            let mut outcomes = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                let p: EventPayload = payload(cmd)?;
                if let Some(refusal) = reserved(&p) {
                    outcomes.push(refusal);
                    continue;
                }
                let at = p.time.unwrap_or(cmd.submitted_at);
                rows.push(cmd.id, &cmd.tenant, p.name, p.data, at);
                outcomes.push(succeeded(cmd, at));
            }
            events::append_many(tx, &rows).await?;
            Ok(outcomes)
        })
    }
}

/// Names under `webhook.` are written only by verified webhooks.
fn reserved(p: &EventPayload) -> Option<Outcome> {
    p.name.starts_with(super::webhooks::RESERVED_PREFIX).then(|| Outcome::Rejected {
        reason: "reserved_name".into(),
        message: format!(
            "event names starting with {:?} are written only by verified webhooks",
            super::webhooks::RESERVED_PREFIX
        ),
    })
}

fn succeeded(cmd: &Envelope, at: DateTime<Utc>) -> Outcome {
    Outcome::Succeeded(json!({"event_id": cmd.id, "occurred_at": at}))
}
