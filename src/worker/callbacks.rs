//! Batch completion callbacks: a signed (Standard Webhooks) POST to the URL the submitter
//! gave, from an outbox row written when the batch finished, retried with backoff. Any worker
//! process may send one; row locks keep two from sending the same at once.

use super::WorkerCtx;
use crate::store::{batches, StoreError};
use crate::webhooks::standard;
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often due callbacks are looked for.
const POLL: Duration = Duration::from_secs(1);

/// Sends due callbacks until `cancel`.
pub async fn run(ctx: &WorkerCtx, cancel: CancellationToken) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_millis(ctx.batch_settings.callback_timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the callback HTTP client; batch callbacks are off");
            return;
        }
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = cancel.cancelled() => return,
        }
        if let Err(e) = send_due(ctx, &http).await {
            tracing::debug!(error = %e, "batch callbacks not sent this round");
        }
    }
}

async fn send_due(ctx: &WorkerCtx, http: &reqwest::Client) -> Result<(), StoreError> {
    let mut tx = ctx.pool.begin().await?;
    let due = batches::claim_callbacks(&mut tx, 10, ctx.batch_settings.callback_max_attempts).await?;
    for cb in due {
        let outcome = send(ctx, http, &cb).await;
        let retry_in = 2_i64.saturating_pow(u32::try_from(cb.attempts + 1).unwrap_or(31)).min(600);
        if let Err(e) = &outcome {
            tracing::warn!(batch_id = %cb.batch_id, attempt = cb.attempts + 1, error = %e, "batch callback failed");
        }
        batches::callback_attempted(&mut tx, cb.batch_id, outcome.err().as_deref(), retry_in).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn send(ctx: &WorkerCtx, http: &reqwest::Client, cb: &batches::DueCallback) -> Result<(), String> {
    let key = cb.secret.as_deref().and_then(standard::decode_secret).ok_or("the callback secret is unusable")?;
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
        .map_err(|e| format!("POST failed: {e}"))?;
    if response.status().is_success() {
        tracing::info!(batch_id = %cb.batch_id, "batch callback delivered");
        Ok(())
    } else {
        Err(format!("the receiver answered {}", response.status()))
    }
}
