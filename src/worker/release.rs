//! Publishes the lines of blocked ordering keys that may move again (a retry's delay passed,
//! an operator released a halted key) back to their partitions, head first. Every worker
//! process runs one; they share the due keys through `FOR UPDATE SKIP LOCKED`. A row is marked
//! published in the transaction that locked its key, after RabbitMQ confirmed it: a crash in
//! between publishes it again, and the worker's head-of-line check applies one copy.

use crate::broker::wire::Outgoing;
use crate::broker::{Broker, Message};
use crate::command::Envelope;
use crate::store::ordering::{self, Key};
use crate::store::StoreError;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Keys taken per transaction.
const KEYS: i64 = 50;

/// Releases due keys every `every` until `cancel`.
pub async fn run(pool: PgPool, broker: Broker, every: Duration, batch: i64, cancel: CancellationToken) {
    let mut failing = false;
    loop {
        loop {
            match release_once(&pool, &broker, batch.max(1)).await {
                Ok(n) => {
                    failing = false;
                    if n < KEYS as usize {
                        break;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot release held ordered commands; retrying every poll");
                    }
                    failing = true;
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// One transaction: up to [`KEYS`] due keys, each's unpublished line published in order.
/// Returns how many keys it took.
#[tracing::instrument(skip_all)]
async fn release_once(pool: &PgPool, broker: &Broker, batch: i64) -> Result<usize, StoreError> {
    let mut tx = pool.begin().await?;
    let keys = ordering::due(&mut tx, KEYS).await?;
    for (tenant, key) in &keys {
        let k = Key { tenant, key };
        let rows = ordering::unpublished(&mut tx, k, batch).await?;
        if rows.is_empty() {
            ordering::unblock_if_empty(&mut tx, k).await?;
            continue;
        }
        let outgoing: Vec<Outgoing> = rows
            .iter()
            .map_while(|r| {
                let cmd = Envelope::decode(&r.body).ok()?;
                let attempt = u32::try_from(r.attempt).unwrap_or(1);
                Some(Outgoing::released(
                    broker.topology(),
                    &cmd,
                    r.body.clone(),
                    attempt,
                    r.seq,
                    r.traceparent.as_deref(),
                ))
            })
            .collect();
        let messages: Vec<Message<'_>> = outgoing.iter().map(Outgoing::message).collect();
        let results = broker.publish_many(&messages).await;
        // Only the run before the first failure counts: a later one that got through is not
        // the head when it arrives, is dropped, and must be published again.
        let published: Vec<i64> =
            rows.iter().zip(&results).take_while(|(_, r)| r.is_ok()).map(|(row, _)| row.seq).collect();
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            tracing::warn!(error = %e, tenant, key, "could not release all of a key's line; the rest goes next round");
        }
        ordering::mark_published(&mut tx, k, &published).await?;
        metrics::counter!("sluice_ordered_released_total").increment(published.len() as u64);
    }
    tx.commit().await?;
    Ok(keys.len())
}
