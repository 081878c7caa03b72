//! A run of a partition's deliveries in one transaction, in queue order: one commit (one WAL
//! flush) for many keys' commands instead of one each. Each delivery is decided as it would be
//! alone (held behind its key's block, dropped as a stale copy, or applied), so the order of
//! effects is the same; anything out of the ordinary rolls the whole run back, and the caller
//! handles its deliveries one by one, where each gets its precise treatment.

use super::{key_of, Job, WorkerCtx};
use crate::broker::headers::get_i64;
use crate::broker::wire::Received;
use crate::handlers::{HandlerError, Outcome};
use crate::store::commands::{self, FinalStatus};
use crate::store::ordering::{self, Position};
use crate::store::{cancellation, locks, StoreError};
use crate::worker::hooks::{self, AfterCommit};
use crate::worker::{process, Label};
use lapin::message::Delivery;
use std::time::Instant;

/// The job of a delivery that may go in a run: a decodable ordered command of a local type
/// that has not been crashing its workers.
pub(super) fn plain(ctx: &WorkerCtx, delivery: &Delivery) -> Option<Job> {
    let job = process::prepare(ctx, &delivery.data, Received::of(delivery).attempt()).ok()?;
    let local = job.handler.remote().is_none();
    (job.cmd.ordering_key.is_some() && local && crashed_on(ctx, delivery).is_none()).then_some(job)
}

/// How many times the delivery has been handed out, when that is so many that the queue's
/// delivery limit is next: it would dead-letter it past its key's block, so the worker does.
pub(super) fn crashed_on(ctx: &WorkerCtx, delivery: &Delivery) -> Option<i64> {
    let deliveries = get_i64(Received::of(delivery).headers(), "x-delivery-count").unwrap_or(0) + 1;
    (deliveries >= i64::from(ctx.broker.topology().delivery_limit())).then_some(deliveries)
}

fn fallback(why: &str) -> HandlerError {
    HandlerError::Transient(why.to_owned())
}

/// Decides `jobs` in one transaction, in order; each one's label (none for a held or stale
/// copy). An error means nothing was committed.
pub(super) async fn apply(ctx: &WorkerCtx, jobs: &[(Delivery, Job)]) -> Result<Vec<Option<Label>>, HandlerError> {
    let started = Instant::now();
    let mut tx = ctx.pool.begin().await.map_err(StoreError::from)?;
    let mut labels = Vec::with_capacity(jobs.len());
    let mut applied = Vec::with_capacity(jobs.len());
    for (delivery, job) in jobs {
        let (cmd, k) = (&job.cmd, key_of(job));
        let held_seq = Received::of(delivery).held_seq();
        match ordering::position(&mut tx, k, cmd.id, held_seq).await? {
            Position::Free | Position::Head => {}
            Position::Behind => {
                super::hold_behind(&mut tx, delivery, job).await?;
                labels.push(None);
                continue;
            }
            Position::Stale => {
                labels.push(None);
                continue;
            }
        }
        if let Some(batch) = cmd.batch {
            if !cancellation::cancelled_batches(&mut tx, &[batch.id]).await?.is_empty() {
                return Err(fallback("a command of the run belongs to a cancelled batch"));
            }
        }
        locks::lock_all(&mut tx, &job.handler.lock_keys(cmd)).await?;
        let (status, result, error, label) = match job.handler.handle(&mut tx, cmd).await? {
            Outcome::Succeeded(result) => (FinalStatus::Succeeded, Some(result), None, Label::Succeeded),
            Outcome::Rejected { reason, message } => {
                (FinalStatus::Rejected, Some(serde_json::json!({ "reason": reason })), Some(message), Label::Rejected)
            }
        };
        if !commands::record_outcome(&mut tx, cmd, job.attempt, status, result.as_ref(), error.as_deref()).await? {
            return Err(fallback("a command of the run was already final"));
        }
        if held_seq.is_some() {
            ordering::leave(&mut tx, k, cmd.id).await?;
        }
        labels.push(Some(label));
        applied.push(cmd.id);
    }
    tx.commit().await.map_err(StoreError::from)?;
    if hooks::after_commit(ctx.after_commit.as_ref(), &applied) == AfterCommit::Redeliver {
        // Committed: the redeliveries find their inbox rows. Refused here only to keep the
        // run's path simple; the caller then hands each delivery to the one-by-one path.
        return Err(fallback("the after-commit hook asked for a redelivery"));
    }
    metrics::histogram!("sluice_batch_seconds").record(started.elapsed());
    metrics::histogram!("sluice_batch_size").record(jobs.len() as f64);
    Ok(labels)
}
