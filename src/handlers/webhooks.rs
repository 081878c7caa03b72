//! `webhook.received`: a verified inbound webhook, recorded in the tenant's event log as
//! `webhook.<source>.<event>` with the sender's body as data. The `webhook.` prefix is
//! reserved: `event.record` refuses it, so no key can forge what a sender signed.

use super::{payload, Handler, HandlerFuture, HandlerManyFuture, Outcome};
use crate::command::Envelope;
use crate::store::events;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgConnection;

/// Prefix of event names only verified webhooks may write.
pub const RESERVED_PREFIX: &str = "webhook.";

/// Handles `webhook.received`.
pub struct ReceivedWebhook;

#[derive(Deserialize)]
struct WebhookPayload {
    source: String,
    event: String,
    body: Value,
}

fn event_name(p: &WebhookPayload) -> String {
    format!("{}{}.{}", RESERVED_PREFIX, p.source, p.event)
}

impl Handler for ReceivedWebhook {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, cmd: &'a Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            let p: WebhookPayload = payload(cmd)?;
            let name = event_name(&p);
            events::append(tx, cmd.id, &cmd.tenant, &name, &p.body, cmd.submitted_at).await?;
            Ok(Outcome::Succeeded(json!({"event": name, "event_id": cmd.id})))
        })
    }

    fn handle_many<'a>(&'a self, tx: &'a mut PgConnection, cmds: &'a [&'a Envelope]) -> HandlerManyFuture<'a> {
        Box::pin(async move {
            let mut rows = events::NewEvents::with_capacity(cmds.len());
            let mut outcomes = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                let p: WebhookPayload = payload(cmd)?;
                let name = event_name(&p);
                outcomes.push(Outcome::Succeeded(json!({"event": name, "event_id": cmd.id})));
                rows.push(cmd.id, &cmd.tenant, name, p.body, cmd.submitted_at);
            }
            events::append_many(tx, &rows).await?;
            Ok(outcomes)
        })
    }
}
