//! `webhook.received`: a verified inbound webhook, recorded in the tenant's event log as
//! `webhook.<source>.<event>` with the sender's body as data. The `webhook.` prefix is
//! reserved: `event.record` refuses it, so no key can forge what a sender signed.

use super::typed::{CommandType, Handle, Incoming, PayloadSchema};
use super::{HandlerError, Outcome};
use crate::store::events;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgConnection;

/// Prefix of event names only verified webhooks may write.
pub const RESERVED_PREFIX: &str = "webhook.";

/// The payload of `webhook.received`, made by the webhook endpoint after verification.
#[derive(Debug, Deserialize)]
pub struct WebhookReceived {
    source: String,
    event: String,
    body: Value,
}

impl CommandType for WebhookReceived {
    const TYPE: &'static str = "webhook.received";
    const SUBMITTABLE: bool = false;
    fn schema() -> PayloadSchema {
        PayloadSchema::Text(include_str!("../../schemas/webhook.received.json"))
    }
}

/// Handles `webhook.received`.
pub struct ReceivedWebhook;

fn event_name(p: &WebhookReceived) -> String {
    format!("{}{}.{}", RESERVED_PREFIX, p.source, p.event)
}

impl Handle<WebhookReceived> for ReceivedWebhook {
    async fn handle(&self, tx: &mut PgConnection, cmd: Incoming<'_, WebhookReceived>) -> Result<Outcome, HandlerError> {
        let (p, env) = (cmd.payload, cmd.envelope);
        let name = event_name(&p);
        events::append(tx, env.id, &env.tenant, &name, &p.body, env.submitted_at).await?;
        Ok(Outcome::Succeeded(json!({"event": name, "event_id": env.id})))
    }

    async fn handle_many(
        &self,
        tx: &mut PgConnection,
        cmds: Vec<Incoming<'_, WebhookReceived>>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let mut rows = events::NewEvents::with_capacity(cmds.len());
        let mut outcomes = Vec::with_capacity(cmds.len());
        for Incoming { payload: p, envelope: env } in cmds {
            let name = event_name(&p);
            outcomes.push(Outcome::Succeeded(json!({"event": name, "event_id": env.id})));
            rows.push(env.id, &env.tenant, name, p.body, env.submitted_at);
        }
        events::append_many(tx, &rows).await?;
        Ok(outcomes)
    }
}
