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

/// Most keys released in one round before the next poll.
const KEYS: usize = 500;

/// Releases due keys every `every` until `cancel`.
pub async fn run(pool: PgPool, broker: Broker, every: Duration, batch: i64, cancel: CancellationToken) {
    let mut failing = false;
    loop {
        // One key per transaction, so a slow publish holds one key's lock, not many; the round
        // ends when no key is due, or a publish failed (the broker is away: wait for the poll).
        for _ in 0..KEYS {
            match release_once(&pool, &broker, batch.max(1)).await {
                Ok(Released::Key) => failing = false,
                Ok(Released::Nothing | Released::Failed) => break,
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

/// What one release transaction did.
enum Released {
    /// Nothing was due.
    Nothing,
    /// A key's line was published (or its empty block removed).
    Key,
    /// A publish failed; what went before it is recorded.
    Failed,
}

/// One transaction: one due key, its unpublished line published in order.
#[tracing::instrument(skip_all)]
async fn release_once(pool: &PgPool, broker: &Broker, batch: i64) -> Result<Released, StoreError> {
    let mut tx = pool.begin().await?;
    let Some((tenant, key)) = ordering::due(&mut tx, 1).await?.into_iter().next() else {
        return Ok(Released::Nothing);
    };
    let (tenant, key) = (tenant.as_str(), key.as_str());
    {
        let k = Key { tenant, key };
        let rows = ordering::unpublished(&mut tx, k, batch).await?;
        if rows.is_empty() {
            ordering::unblock_if_empty(&mut tx, k).await?;
            tx.commit().await?;
            return Ok(Released::Key);
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
        let failed = published.len() < rows.len();
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            tracing::warn!(error = %e, tenant, key, "could not release all of a key's line; the rest goes next round");
        }
        ordering::mark_published(&mut tx, k, &published).await?;
        tx.commit().await?;
        metrics::counter!("sluice_ordered_released_total").increment(published.len() as u64);
        Ok(if failed { Released::Failed } else { Released::Key })
    }
}
