//! After the verdict: ack, send to a retry tier, or dead-letter, always publishing (with
//! confirm) before acking so a message is never in neither place.

use super::acks::Acks;
use super::process::Verdict;
use super::WorkerCtx;
use crate::broker::wire::{Outgoing, Received};
use crate::command::Envelope;
use crate::store::commands;
use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;

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
        Verdict::Retry { cmd, error, after } if ctx.policies.of(&cmd.kind).allows_another(attempt) => {
            retry(r, delivery, &cmd, attempt, &error, after).await
        }
        Verdict::Retry { error, .. } => {
            let error = format!("gave up after {attempt} attempts; last error: {error}");
            dead_letter(r, delivery, attempt, "retries_exhausted", &error).await;
        }
        Verdict::Dead { kind, error, .. } => dead_letter(r, delivery, attempt, kind, &error).await,
        Verdict::GiveBack => acks.give_back(delivery).await,
        Verdict::Defer { delay_ms } => defer(r, delivery, delay_ms).await,
        Verdict::Forward { to } => {
            let out = Outgoing::forwarded(ctx.broker.topology(), &Received::of(delivery), to);
            publish_then_ack(r, delivery, &out, "forward to its priority's queue").await;
        }
    }
}

async fn retry(
    r: &Routing<'_>,
    delivery: &Delivery,
    cmd: &Envelope,
    attempt: u32,
    error: &str,
    after: Option<std::time::Duration>,
) {
    let ctx = r.ctx;
    let mut delay = ctx.policies.of(&cmd.kind).delay_ms(attempt, rand::random::<f64>());
    if let Some(after) = after {
        // The service said when to come back (Retry-After): no sooner, within the longest tier.
        let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        delay = delay.max(ctx.broker.topology().tier_at_least(after_ms));
    }
    tracing::info!(attempt, delay_ms = delay, %error, "transient failure; retrying later");
    if let Err(e) = commands::mark_retrying(&ctx.pool, cmd, attempt, error).await {
        // The status row is informational; the retry itself must not depend on it.
        tracing::warn!(error = %e, "could not record the retrying status");
    }
    let out = Outgoing::retry(ctx.broker.topology(), &Received::of(delivery), delay, error);
    if publish_then_ack(r, delivery, &out, "schedule the retry").await {
        metrics::counter!("sluice_retries_total").increment(1);
    }
}

/// Puts a delivery aside through the tier nearest above `delay_ms`, as the same attempt.
async fn defer(r: &Routing<'_>, delivery: &Delivery, delay_ms: u64) {
    let topology = r.ctx.broker.topology();
    let out = Outgoing::deferred(topology, &Received::of(delivery), topology.tier_at_least(delay_ms));
    publish_then_ack(r, delivery, &out, "defer").await;
}

async fn dead_letter(r: &Routing<'_>, delivery: &Delivery, attempt: u32, kind: &str, error: &str) {
    tracing::warn!(attempt, kind, %error, "dead-lettering command");
    let out = Outgoing::dead_letter(r.ctx.broker.topology(), &Received::of(delivery), kind, error);
    if publish_then_ack(r, delivery, &out, "dead-letter").await {
        metrics::counter!("sluice_dead_letters_total", "kind" => kind.to_owned()).increment(1);
    }
}

/// Publishes `out` (with confirm) and then acks `delivery`, so the message is never in neither
/// place; if the publish fails, gives the delivery back instead. True when published.
async fn publish_then_ack(r: &Routing<'_>, delivery: &Delivery, out: &Outgoing, what: &str) -> bool {
    match r.ctx.broker.publish_held(out.message(), r.cancel).await {
        Ok(()) => {
            r.acks.ack(&[delivery]).await;
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not {what}; giving the message back");
            r.acks.give_back(delivery).await;
            false
        }
    }
}
