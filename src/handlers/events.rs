//! `event.record`: append to the tenant's event log.

use super::{payload, Handler, HandlerFuture, Outcome};
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
            let at = p.time.unwrap_or(cmd.submitted_at);
            events::append(tx, cmd.id, &cmd.tenant, &p.name, &p.data, at).await?;
            Ok(Outcome::Succeeded(
                json!({"event_id": cmd.id, "occurred_at": at}),
            ))
        })
    }
}
