//! After the verdict: ack, send to a retry tier, or dead-letter, always publishing (with
//! confirm) before acking so a message is never in neither place.

use super::acks::Acks;
use super::process::Verdict;
use super::WorkerCtx;
use crate::broker::headers::{set_i64, set_str};
use crate::broker::{topology::DEAD_KEY, Message};
use crate::command::{Envelope, ATTEMPT_HEADER};
use crate::store::commands;
use lapin::message::Delivery;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

/// Header: why the message was dead-lettered.
pub const ERROR_HEADER: &str = "x-sluice-error";
/// Header: the class of failure (permanent, retries_exhausted, undecodable, ...).
pub const ERROR_KIND_HEADER: &str = "x-sluice-error-kind";
/// Header: a unique id per dead-lettering, so a redelivered dead letter is recorded once.
pub const DEAD_LETTER_ID_HEADER: &str = "x-sluice-dead-letter-id";
/// Header: the last transient error, carried along the retries.
pub const LAST_ERROR_HEADER: &str = "x-sluice-last-error";

/// Where a routed delivery goes and what it may wait for.
pub struct Routing<'a> {
    pub ctx: &'a WorkerCtx,
    pub acks: &'a Acks,
    /// Shutdown: a message held for a blocked broker is handed back instead.
    pub cancel: &'a CancellationToken,
}

/// Carries out `verdict` for `delivery`, which was the `attempt`-th.
pub async fn route(r: &Routing<'_>, delivery: &Delivery, attempt: u32, verdict: Verdict) {
    let (ctx, acks) = (r.ctx, r.acks);
    match verdict {
        // Counted by the caller, which knows the command.
        Verdict::Done { .. } => acks.ack(&[delivery]).await,
        Verdict::Retry { cmd, error } if ctx.policy.allows_another(attempt) => {
            retry(r, delivery, &cmd, attempt, &error).await
        }
        Verdict::Retry { cmd, error } => {
            let error = format!("gave up after {attempt} attempts; last error: {error}");
            dead_letter(r, delivery, Some(&cmd), attempt, "retries_exhausted", &error).await;
        }
        Verdict::Dead { cmd, kind, error } => dead_letter(r, delivery, cmd.as_deref(), attempt, kind, &error).await,
        Verdict::GiveBack => acks.give_back(delivery).await,
    }
}

async fn retry(r: &Routing<'_>, delivery: &Delivery, cmd: &Envelope, attempt: u32, error: &str) {
    let (ctx, acks) = (r.ctx, r.acks);
    let delay = ctx.policy.delay_ms(attempt, rand::random::<f64>());
    tracing::info!(attempt, delay_ms = delay, %error, "transient failure; retrying later");
    if let Err(e) = commands::mark_retrying(&ctx.pool, cmd, attempt, error).await {
        // The status row is informational; the retry itself must not depend on it.
        tracing::warn!(error = %e, "could not record the retrying status");
    }
    let mut headers = copy_headers(delivery);
    set_i64(&mut headers, ATTEMPT_HEADER, i64::from(attempt) + 1);
    set_str(&mut headers, LAST_ERROR_HEADER, truncate(error));
    let topology = ctx.broker.topology();
    let (exchange, key) = (topology.retry_exchange(), topology.tier_queue(delay));
    let message_id = cmd.id.to_string();
    let msg =
        Message { exchange: &exchange, routing_key: &key, body: &delivery.data, message_id: &message_id, headers };
    match ctx.broker.publish_held(msg, r.cancel).await {
        Ok(()) => {
            metrics::counter!("sluice_retries_total").increment(1);
            acks.ack(&[delivery]).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not schedule the retry; giving the message back");
            acks.give_back(delivery).await;
        }
    }
}

async fn dead_letter(
    r: &Routing<'_>,
    delivery: &Delivery,
    cmd: Option<&Envelope>,
    attempt: u32,
    kind: &str,
    error: &str,
) {
    let (ctx, acks) = (r.ctx, r.acks);
    tracing::warn!(attempt, kind, %error, "dead-lettering command");
    let mut headers = copy_headers(delivery);
    set_str(&mut headers, ERROR_HEADER, truncate(error));
    set_str(&mut headers, ERROR_KIND_HEADER, kind);
    set_str(&mut headers, DEAD_LETTER_ID_HEADER, &uuid::Uuid::new_v4().to_string());
    set_i64(&mut headers, ATTEMPT_HEADER, i64::from(attempt));
    let exchange = ctx.broker.topology().dead_letter_exchange();
    let message_id = cmd.map(|c| c.id.to_string()).unwrap_or_default();
    let msg =
        Message { exchange: &exchange, routing_key: DEAD_KEY, body: &delivery.data, message_id: &message_id, headers };
    match ctx.broker.publish_held(msg, r.cancel).await {
        Ok(()) => {
            metrics::counter!("sluice_dead_letters_total", "kind" => kind.to_owned()).increment(1);
            acks.ack(&[delivery]).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not dead-letter; giving the message back");
            acks.give_back(delivery).await;
        }
    }
}

fn copy_headers(delivery: &Delivery) -> FieldTable {
    delivery.properties.headers().clone().unwrap_or_default()
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(1000);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
