//! Batch completion callbacks: a signed (Standard Webhooks) POST to the URL the submitter
//! gave, from an outbox row written when the batch finished, retried with backoff. Any worker
//! process may send one; a lease (the next attempt pushed past the POST's timeout) keeps two
//! from sending the same at once, and an attempt is recorded only for the lease it had.

use super::WorkerCtx;
use crate::store::{batches, StoreError};
use crate::webhooks::{outbound, standard};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often due callbacks are looked for.
const POLL: Duration = Duration::from_secs(1);

/// Sends due callbacks until `cancel`.
pub async fn run(ctx: &WorkerCtx, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = cancel.cancelled() => return,
        }
        if let Err(e) = send_due(ctx).await {
            tracing::debug!(error = %e, "batch callbacks not sent this round");
        }
    }
}

async fn send_due(ctx: &WorkerCtx) -> Result<(), StoreError> {
    // A short transaction leases the due callbacks (pushing their next attempt past the POST's
    // timeout), so no connection or row lock is held while receivers answer.
    let lease_secs = i64::try_from(ctx.batch_settings.callback_timeout_ms / 1000).unwrap_or(60) * 2 + 5;
    let due = batches::lease_callbacks(&ctx.pool, 10, ctx.batch_settings.callback_max_attempts, lease_secs).await?;
    let sends = due.iter().map(|cb| async move {
        let outcome = send(ctx, cb).await;
        let retry_in = 2_i64.saturating_pow(u32::try_from(cb.attempts + 1).unwrap_or(31)).min(600);
        if let Err(e) = &outcome {
            tracing::warn!(batch_id = %cb.batch_id, attempt = cb.attempts + 1, error = %e, "batch callback failed");
        }
        // The submitter reads this error: a database error's own text stays in the log.
        let shown = outcome.as_ref().err().map(|e| crate::store::public_error(e).into_owned());
        if let Err(e) =
            batches::callback_attempted(&ctx.pool, cb.batch_id, cb.attempts, shown.as_deref(), retry_in).await
        {
            tracing::warn!(batch_id = %cb.batch_id, error = %e, "could not record the callback attempt");
        }
    });
    futures_util::future::join_all(sends).await;
    Ok(())
}

async fn send(ctx: &WorkerCtx, cb: &batches::DueCallback) -> Result<(), String> {
    let secret = cb.secret.as_ref().map(|s| ctx.sealer.open(s.expose())).transpose().map_err(|e| {
        tracing::error!(batch_id = %cb.batch_id, error = %e, "a callback secret cannot be opened");
        "the callback secret cannot be opened"
    })?;
    let key = secret.as_deref().and_then(standard::decode_secret).ok_or("the callback secret is unusable")?;
    // Checked again at send time, and the POST goes to exactly the addresses checked: the name
    // may resolve elsewhere now than at submission, or between the check and the connection.
    let target = outbound::check(&cb.url, &ctx.batch_settings).await.map_err(|e| e.to_string())?;
    let timeout = Duration::from_millis(ctx.batch_settings.callback_timeout_ms);
    let http = outbound::client(&target, timeout).map_err(|_| "cannot build the HTTP client")?;
    let batch =
        batches::get(&ctx.pool, &cb.tenant, cb.batch_id).await.map_err(|e| e.to_string())?.ok_or("batch gone")?;
    let (counts, _) = batches::progress(&ctx.pool, cb.batch_id).await.map_err(|e| e.to_string())?;
    let count = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    let now = chrono::Utc::now();
    let body = json!({
        "type": "batch.finished",
        "timestamp": now,
        "data": {
            "id": batch.id,
            "total": batch.total,
            "succeeded": count("succeeded"),
            "rejected": count("rejected"),
            "dead": count("dead"),
            "finished_at": batch.finished_at,
            "status_url": format!("/v1/batches/{}", batch.id),
        }
    })
    .to_string();
    // The same id on every attempt, so the receiver can deduplicate.
    let id = format!("batch_{}", batch.id.simple());
    let ts = now.timestamp();
    let response = http
        .post(&cb.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", standard::signature(&key, &id, ts, body.as_bytes()))
        .body(body)
        .send()
        .await
        // The receiver is the submitter's, but the error is shown to them: say what happened,
        // not what the network said (no map of sluice's surroundings).
        .map_err(|e| {
            if e.is_timeout() {
                "the receiver did not answer in time".to_owned()
            } else {
                "could not reach the receiver".to_owned()
            }
        })?;
    if response.status().is_success() {
        tracing::info!(batch_id = %cb.batch_id, "batch callback delivered");
        Ok(())
    } else {
        Err(format!("the receiver answered {}", response.status()))
    }
}
