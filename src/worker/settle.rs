//! Marking batches finished. A commit only notes which batches it touched; a settler checks
//! them together a moment later. Checking after every commit counted a batch's rows once per
//! transaction: for a 10,000-command batch taken 256 at a time, forty counts of up to 10,000
//! rows, on the cores that were draining it. Now a batch is counted about once per interval.
//! A sweep through the unfinished batches, a page now and then, covers a process that died
//! between a batch's last commit and its settling, which would otherwise leave it open for good.

use super::WorkerCtx;
use crate::store::batches;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Unfinished batches one sweep looks at; the next sweep goes on from where it stopped, so
/// batches that never finish (none of their commands was confirmed) cannot crowd others out.
const SWEEP_PAGE: i64 = 1000;

/// Batches touched since the last check.
#[derive(Debug, Default)]
pub struct Touched(Mutex<HashSet<Uuid>>);

impl Touched {
    /// Notes batches that a commit (or a dead letter) moved forward.
    pub fn add(&self, ids: impl IntoIterator<Item = Uuid>) {
        let mut ids = ids.into_iter().peekable();
        if ids.peek().is_none() {
            return;
        }
        if let Ok(mut set) = self.0.lock() {
            set.extend(ids);
        }
    }

    fn take(&self) -> Vec<Uuid> {
        self.0.lock().map(|mut set| set.drain().collect()).unwrap_or_default()
    }
}

/// Checks touched batches every `batches.settle_interval_ms` and sweeps unfinished ones every
/// `batches.sweep_interval_secs`, until `stop`, then checks once more.
pub async fn run(ctx: &WorkerCtx, stop: CancellationToken) {
    let every = Duration::from_millis(ctx.batch_settings.settle_interval_ms.max(1));
    let sweep_every = Duration::from_secs(ctx.batch_settings.sweep_interval_secs.max(1));
    let mut next_sweep = tokio::time::Instant::now() + sweep_every;
    let mut cursor = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => break,
        }
        settle_now(ctx).await;
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep = tokio::time::Instant::now() + sweep_every;
            cursor = sweep(ctx, cursor).await;
        }
    }
    settle_now(ctx).await;
}

/// Checks the batches touched so far; ones it could not check are kept for the next round.
async fn settle_now(ctx: &WorkerCtx) {
    let ids = ctx.touched.take();
    if ids.is_empty() {
        return;
    }
    match batches::finish_if_done(&ctx.pool, &ids).await {
        Ok(done) => {
            for id in done {
                tracing::info!(batch_id = %id, "batch finished");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, batches = ids.len(), "could not check batch completion; will retry");
            ctx.touched.add(ids);
        }
    }
}

/// Checks the next page of unfinished batches; returns where the next sweep goes on.
async fn sweep(ctx: &WorkerCtx, cursor: batches::SweepCursor) -> batches::SweepCursor {
    let next = match batches::unfinished_after(&ctx.pool, cursor, SWEEP_PAGE).await {
        Ok((ids, next)) => {
            ctx.touched.add(ids);
            next
        }
        Err(e) => {
            tracing::debug!(error = %e, "could not list unfinished batches");
            cursor
        }
    };
    settle_now(ctx).await;
    next
}
