//! Commands with an ordering key: applied one at a time, in the order of their partition
//! queue, with a key that cannot move on parked in Postgres so the partition's other keys keep
//! flowing.
//!
//! Each partition queue has a single active consumer (and `partitions` spreads them over the
//! processes), whose deliveries are handled here one after another. A delivery of a key with
//! no block is applied in a transaction that first locks the (absent) block row's place; one
//! of a blocked key is appended to the key's line in `ordering_held` and acked. A failing
//! command blocks its key: a transient failure puts it at the head of the line with a
//! `not_before`; a dead one blocks the key for good under the type's `halt` policy (an
//! operator's replay or discard releases it) and not at all under `skip`. The release
//! dispatcher publishes a due key's line back to the partition, and a released delivery is
//! applied only while it is still the head of its line, so however deliveries are duplicated
//! or reordered by crashes, a key's commands take effect in line order.

use super::acks::Acks;
use super::process::{self, Job, Verdict};
use super::{Label, WorkerCtx};
use crate::broker::headers::table_to_json;
use crate::broker::wire::Received;
use crate::handlers::remote::{Call, CallError};
use crate::handlers::{HandlerError, OrderingPolicy, Outcome};
use crate::store::commands::{self, CommandStatus, FinalStatus};
use crate::store::dead_letters::NewDeadLetter;
use crate::store::ordering::{self, Blocking, Key, Position, Waiting};
use crate::store::{cancellation, dead_letters, locks, StoreError};
use futures_util::FutureExt;
use lapin::message::Delivery;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

mod run;

/// Namespace of the ids of dead letters recorded here: one per command, attempt and place in
/// its line, so a redelivery after a lost ack records none twice, and a replay that dies
/// again (attempt 1 again, but a new place) records a new one.
const ORDERED_DEAD_LETTER_NS: Uuid = Uuid::from_u128(0x51c3_0e7a_2d94_4b6f_8a15_c7e2_9f40_3b68);

/// Handles the deliveries of one partition that arrived together, in their order: runs of
/// plain ones in one transaction each, the rest (and a run that fails) one by one. Once one
/// is given back (shutdown, giving the partition up), so is everything after it: none may be
/// applied before it.
pub async fn handle_batch(ctx: &Arc<WorkerCtx>, acks: &Arc<Acks>, batch: Vec<Delivery>, cancel: &CancellationToken) {
    let mut plain: Vec<(Delivery, Job)> = Vec::new();
    let mut stopped = false;
    for delivery in batch {
        if stopped {
            acks.give_back(&delivery).await;
            continue;
        }
        if delivery.redelivered {
            metrics::counter!("sluice_redeliveries_total").increment(1);
        }
        match run::plain(ctx, &delivery) {
            Some(job) => plain.push((delivery, job)),
            None => {
                stopped = flush(ctx, acks, std::mem::take(&mut plain), cancel).await
                    || handle(ctx, acks, delivery, cancel).await;
            }
        }
    }
    flush(ctx, acks, plain, cancel).await;
}

/// Plain deliveries, in order: one transaction for all when nothing goes wrong. True when one
/// was given back, and with it all after it.
async fn flush(ctx: &Arc<WorkerCtx>, acks: &Arc<Acks>, jobs: Vec<(Delivery, Job)>, cancel: &CancellationToken) -> bool {
    if jobs.len() > 1 && !cancel.is_cancelled() {
        if let Ok(Ok(labels)) = AssertUnwindSafe(run::apply(ctx, &jobs)).catch_unwind().await {
            for ((delivery, job), label) in jobs.iter().zip(labels) {
                if let Some(label) = label {
                    super::tally(ctx, &job.cmd.kind, super::timed_since(delivery, &job.cmd), label);
                }
            }
            let deliveries: Vec<&Delivery> = jobs.iter().map(|(d, _)| d).collect();
            acks.ack(&deliveries).await;
            ctx.touched.add(jobs.iter().filter_map(|(_, j)| j.cmd.batch.map(|b| b.id)));
            return false;
        }
        metrics::counter!("sluice_batch_fallbacks_total").increment(1);
    }
    let mut stopped = false;
    for (delivery, job) in jobs {
        if stopped {
            acks.give_back(&delivery).await;
        } else {
            stopped = handle_job(ctx, acks, &delivery, job, cancel).await;
        }
    }
    stopped
}

/// One delivery that is not plain; true when it was given back.
async fn handle(ctx: &Arc<WorkerCtx>, acks: &Arc<Acks>, delivery: Delivery, cancel: &CancellationToken) -> bool {
    let received = Received::of(&delivery);
    let attempt = received.attempt();
    let job = match process::prepare(ctx, &delivery.data, attempt) {
        Ok(job) => job,
        Err(verdict) => {
            if let Verdict::Dead { cmd: Some(cmd), kind, error } = &verdict {
                if cmd.ordering_key.is_some() {
                    let job = Job { cmd: (**cmd).clone(), handler: Arc::new(NoHandler), attempt };
                    let settled = dead(ctx, &delivery, &job, kind, error, cancel).await;
                    return finish(ctx, acks, &delivery, &job, settled).await;
                }
            }
            super::route::route(&super::route::Routing { ctx, acks, cancel }, &delivery, attempt, verdict).await;
            return false;
        }
    };
    if job.cmd.ordering_key.is_none() {
        // Published around the API into an ordered queue: no line to keep.
        super::run_jobs(ctx, acks, vec![(delivery, job)], cancel).await;
        return false;
    }
    handle_job(ctx, acks, &delivery, job, cancel).await
}

/// One ordered command on its own; true when it was given back.
async fn handle_job(
    ctx: &Arc<WorkerCtx>,
    acks: &Arc<Acks>,
    delivery: &Delivery,
    job: Job,
    cancel: &CancellationToken,
) -> bool {
    let received = Received::of(delivery);
    let attempt = job.attempt;
    let span = tracing::info_span!(
        "ordered_command",
        command_id = %job.cmd.id,
        kind = %job.cmd.kind,
        attempt,
        redelivered = delivery.redelivered,
        trace_id = received.trace_id(),
    );
    let run = async {
        if let Some(n) = run::crashed_on(ctx, delivery) {
            let error = format!("delivered {n} times without an outcome: workers crashed on it");
            return dead(ctx, delivery, &job, "crashed_worker", &error, cancel).await;
        }
        match AssertUnwindSafe(decide(ctx, delivery, &job, cancel)).catch_unwind().await {
            Ok(settled) => settled,
            Err(_) => {
                // Handing it back would let the key's next delivery, already here, go first:
                // a panic blocks the key like a transient failure.
                tracing::error!("handler panicked; holding its key for a retry");
                metrics::counter!("sluice_handler_panics_total").increment(1);
                retry(ctx, delivery, &job, "the handler panicked", None, cancel).await
            }
        }
    };
    let settled = run.instrument(span).await;
    finish(ctx, acks, delivery, &job, settled).await
}

/// How a delivery ended here.
enum Settled {
    /// Acked; counted under the label when there is one.
    Ack(Option<Label>),
    GiveBack,
}

/// Acks or gives back `delivery` as settled; true when given back.
async fn finish(ctx: &WorkerCtx, acks: &Acks, delivery: &Delivery, job: &Job, settled: Settled) -> bool {
    match settled {
        Settled::Ack(label) => {
            if let Some(label) = label {
                super::tally(ctx, &job.cmd.kind, super::timed_since(delivery, &job.cmd), label);
            }
            acks.ack(&[delivery]).await;
            ctx.touched.add(job.cmd.batch.map(|b| b.id));
        }
        Settled::GiveBack => {
            acks.give_back(delivery).await;
            return true;
        }
    }
    false
}

/// What one transaction made of a delivery.
enum Step {
    Applied(Label),
    /// Put in its blocked key's line.
    Held,
    /// A copy not (or no longer) at the head of its line, or of a dead command already
    /// recorded: nothing to do.
    Stale,
    /// Applied, and the after-commit hook asked for a redelivery.
    Redeliver,
}

/// Decides one delivery, retrying conflicts in-process and waiting out database outages.
async fn decide(ctx: &WorkerCtx, delivery: &Delivery, job: &Job, cancel: &CancellationToken) -> Settled {
    let mut conflicts = super::conflict_backoff(ctx.settings.serialization_retries);
    let mut outage = super::outage_backoff();
    let held_seq = Received::of(delivery).held_seq();
    loop {
        let result = match step(ctx, delivery, job, held_seq).await {
            // A redelivery of an applied command can fail in its handler before the inbox row
            // would have told: a duplicate, not a failure.
            Err(e) if !matches!(e, HandlerError::Store(StoreError::Unavailable(_))) => {
                match commands::settled(&ctx.pool, &job.cmd).await {
                    Ok(Some(status)) => leave_line(ctx, job, held_seq, status).await,
                    _ => Err(e),
                }
            }
            other => other,
        };
        let wait = match result {
            Ok(Step::Applied(label)) => return Settled::Ack(Some(label)),
            Ok(Step::Held | Step::Stale) => return Settled::Ack(None),
            Ok(Step::Redeliver) => return Settled::GiveBack,
            Err(HandlerError::Permanent(error)) => return dead(ctx, delivery, job, "permanent", &error, cancel).await,
            Err(HandlerError::Transient(error)) => return retry(ctx, delivery, job, &error, None, cancel).await,
            Err(HandlerError::Store(StoreError::Conflict(e))) => match conflicts.next() {
                Some(delay) => {
                    metrics::counter!("sluice_tx_conflicts_total").increment(1);
                    delay
                }
                None => {
                    let error = format!("transaction kept conflicting: {e}");
                    return retry(ctx, delivery, job, &error, None, cancel).await;
                }
            },
            Err(HandlerError::Store(StoreError::Timeout(e))) => {
                return retry(ctx, delivery, job, &format!("statement timed out: {e}"), None, cancel).await
            }
            Err(HandlerError::Store(StoreError::Unavailable(e))) => {
                let delay = outage.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = ?delay, "database unavailable; holding the command");
                metrics::counter!("sluice_db_unavailable_total").increment(1);
                delay
            }
            Err(HandlerError::Store(e @ (StoreError::Other(_) | StoreError::Invalid(_)))) => {
                return dead(ctx, delivery, job, "database_error", &e.to_string(), cancel).await
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return Settled::GiveBack,
        }
    }
}

/// Puts the delivery at the end of its blocked key's line.
async fn hold_behind(tx: &mut sqlx::PgConnection, delivery: &Delivery, job: &Job) -> Result<(), StoreError> {
    let traceparent = Received::of(delivery).traceparent();
    let waiting = Waiting {
        command_id: job.cmd.id,
        body: &delivery.data,
        attempt: job.attempt,
        traceparent: traceparent.as_deref(),
    };
    ordering::hold(tx, key_of(job), &waiting).await?;
    metrics::counter!("sluice_ordered_held_total").increment(1);
    Ok(())
}

fn key_of(job: &Job) -> Key<'_> {
    Key { tenant: &job.cmd.tenant, key: job.cmd.ordering_key.as_deref().unwrap_or_default() }
}

/// One transaction: hold the delivery behind its key's block, drop a stale copy, or apply it.
async fn step(ctx: &WorkerCtx, delivery: &Delivery, job: &Job, held_seq: Option<i64>) -> Result<Step, HandlerError> {
    let (cmd, k) = (&job.cmd, key_of(job));
    let mut tx = ctx.pool.begin().await.map_err(StoreError::from)?;
    match ordering::position(&mut tx, k, cmd.id, held_seq).await? {
        Position::Free | Position::Head => {}
        Position::Stale => return Ok(Step::Stale),
        Position::Behind => {
            hold_behind(&mut tx, delivery, job).await?;
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(Step::Held);
        }
    }
    if let Some(remote) = job.handler.remote() {
        // No transaction stays open across the call; the partition is busy with this key
        // meanwhile, so nothing of it moves before the outcome is recorded.
        tx.rollback().await.map_err(StoreError::from)?;
        return call_remote(ctx, delivery, job, held_seq, remote).await;
    }
    if let Some(batch) = cmd.batch {
        if !cancellation::cancelled_batches(&mut tx, &[batch.id]).await?.is_empty() {
            commands::mark_cancelled(&mut tx, cmd, job.attempt).await?;
            if held_seq.is_some() {
                ordering::leave(&mut tx, k, cmd.id).await?;
            }
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(Step::Applied(Label::Cancelled));
        }
    }
    locks::lock_all(&mut tx, &job.handler.lock_keys(cmd)).await?;
    let outcome = job.handler.handle(&mut tx, cmd).await?;
    commit_outcome(ctx, tx, job, held_seq, &outcome).await
}

/// Records `outcome` (the inbox row) in `tx`, takes the command out of its line, commits.
async fn commit_outcome(
    ctx: &WorkerCtx,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    job: &Job,
    held_seq: Option<i64>,
    outcome: &Outcome,
) -> Result<Step, HandlerError> {
    let (cmd, k) = (&job.cmd, key_of(job));
    let (status, result, error, label) = match outcome {
        Outcome::Succeeded(result) => (FinalStatus::Succeeded, Some(result.clone()), None, Label::Succeeded),
        Outcome::Rejected { reason, message } => (
            FinalStatus::Rejected,
            Some(serde_json::json!({ "reason": reason })),
            Some(message.as_str()),
            Label::Rejected,
        ),
    };
    if !commands::record_outcome(&mut tx, cmd, job.attempt, status, result.as_ref(), error).await? {
        tx.rollback().await.map_err(StoreError::from)?;
        let status = commands::settled(&ctx.pool, cmd).await?.unwrap_or(CommandStatus::Succeeded);
        return leave_line(ctx, job, held_seq, status).await;
    }
    if held_seq.is_some() {
        ordering::leave(&mut tx, k, cmd.id).await?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    match super::hooks::after_commit(ctx.after_commit.as_ref(), &[cmd.id]) {
        super::hooks::AfterCommit::Ack => Ok(Step::Applied(label)),
        super::hooks::AfterCommit::Redeliver => Ok(Step::Redeliver),
    }
}

/// A command found already final (`status`): out of its line, if it was released from one.
async fn leave_line(
    ctx: &WorkerCtx,
    job: &Job,
    held_seq: Option<i64>,
    status: CommandStatus,
) -> Result<Step, HandlerError> {
    let label = if status == CommandStatus::Cancelled {
        commands::name_tombstone(&ctx.pool, &job.cmd).await?;
        Label::Cancelled
    } else {
        Label::Duplicate
    };
    if held_seq.is_some() {
        let mut tx = ctx.pool.begin().await.map_err(StoreError::from)?;
        let k = key_of(job);
        ordering::lock_block(&mut tx, k).await?;
        ordering::leave(&mut tx, k, job.cmd.id).await?;
        tx.commit().await.map_err(StoreError::from)?;
    }
    Ok(Step::Applied(label))
}

/// An ordered command of a remote type: claimed, called with no transaction open, recorded.
async fn call_remote(
    ctx: &WorkerCtx,
    delivery: &Delivery,
    job: &Job,
    held_seq: Option<i64>,
    remote: &dyn crate::handlers::remote::Remote,
) -> Result<Step, HandlerError> {
    match commands::claim(&ctx.pool, &job.cmd, job.attempt).await? {
        None | Some(CommandStatus::Processing) => {}
        Some(status) => return leave_line(ctx, job, held_seq, status).await,
    }
    let traceparent = Received::of(delivery).traceparent();
    let call = Call { cmd: &job.cmd, attempt: job.attempt, traceparent: traceparent.as_deref() };
    let outcome = match remote.call(call).await {
        Ok(outcome) => outcome,
        Err(CallError::Transient { error, .. }) => return Err(HandlerError::Transient(error)),
        Err(CallError::Permanent(error)) => return Err(HandlerError::Permanent(error)),
    };
    let mut tx = ctx.pool.begin().await.map_err(StoreError::from)?;
    ordering::lock_block(&mut tx, key_of(job)).await?;
    commit_outcome(ctx, tx, job, held_seq, &outcome).await
}

/// A transient failure: another attempt at the head of the key's line after the policy's
/// delay, or, once attempts run out, a dead letter.
async fn retry(
    ctx: &WorkerCtx,
    delivery: &Delivery,
    job: &Job,
    error: &str,
    after: Option<Duration>,
    cancel: &CancellationToken,
) -> Settled {
    let policy = ctx.policies.of(&job.cmd.kind);
    if !policy.allows_another(job.attempt) {
        let error = format!("gave up after {} attempts; last error: {error}", job.attempt);
        return dead(ctx, delivery, job, "retries_exhausted", &error, cancel).await;
    }
    let mut delay = Duration::from_millis(policy.delay_ms(job.attempt, rand::random::<f64>()));
    if let Some(after) = after {
        delay = delay.max(after);
    }
    tracing::info!(attempt = job.attempt, delay_ms = delay.as_millis() as u64, %error, "transient failure; holding the key");
    let not_before = chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
    let traceparent = Received::of(delivery).traceparent();
    let write = || async {
        let k = key_of(job);
        let mut tx = ctx.pool.begin().await?;
        // Decided again: the failure may have come before its place was (a timed-out lock).
        let position = ordering::position(&mut tx, k, job.cmd.id, Received::of(delivery).held_seq()).await?;
        match position {
            Position::Free | Position::Head => {
                let waiting = Waiting {
                    command_id: job.cmd.id,
                    body: &delivery.data,
                    attempt: job.attempt + 1,
                    traceparent: traceparent.as_deref(),
                };
                ordering::hold_first(&mut tx, k, &waiting).await?;
                let blocking = Blocking {
                    command_id: job.cmd.id,
                    dead_letter_id: None,
                    command_type: &job.cmd.kind,
                    error,
                    halted: false,
                    not_before,
                };
                ordering::block(&mut tx, k, &blocking).await?;
            }
            Position::Behind => hold_behind(&mut tx, delivery, job).await?,
            Position::Stale => {}
        }
        tx.commit().await?;
        Ok::<Position, StoreError>(position)
    };
    match persist(write, cancel).await {
        None => return Settled::GiveBack,
        Some(Position::Behind | Position::Stale) => return Settled::Ack(None),
        Some(Position::Free | Position::Head) => {}
    }
    if let Err(e) = commands::mark_retrying(&ctx.pool, &job.cmd, job.attempt, error).await {
        tracing::warn!(error = %e, "could not record the retrying status");
    }
    metrics::counter!("sluice_retries_total").increment(1);
    Settled::Ack(Some(Label::Retried))
}

/// Dead: the dead letter recorded in the same transaction as what it does to the key (halted,
/// or moving on past it, by the type's policy).
async fn dead(
    ctx: &WorkerCtx,
    delivery: &Delivery,
    job: &Job,
    kind: &str,
    error: &str,
    cancel: &CancellationToken,
) -> Settled {
    tracing::warn!(attempt = job.attempt, kind, %error, "dead-lettering ordered command");
    let policy = ctx.policies.of(&job.cmd.kind).ordering;
    let cmd = &job.cmd;
    let place = Received::of(delivery).held_seq().unwrap_or(i64::MIN);
    let name = [cmd.id.as_bytes().as_slice(), &job.attempt.to_be_bytes(), &place.to_be_bytes()].concat();
    let dead_letter_id = Uuid::new_v5(&ORDERED_DEAD_LETTER_NS, &name);
    let write = || async {
        let k = key_of(job);
        let mut tx = ctx.pool.begin().await?;
        // Only the command whose turn it is dies here: a copy behind another's block waits in
        // the line (its turn comes), and a stale copy is dropped.
        let position = ordering::position(&mut tx, k, cmd.id, Received::of(delivery).held_seq()).await?;
        match position {
            Position::Free | Position::Head => {}
            Position::Behind => {
                hold_behind(&mut tx, delivery, job).await?;
                tx.commit().await?;
                return Ok(position);
            }
            Position::Stale => return Ok(position),
        }
        let fresh = dead_letters::insert(
            &mut tx,
            &NewDeadLetter {
                id: dead_letter_id,
                command_id: Some(cmd.id),
                tenant: Some(&cmd.tenant),
                command_type: Some(&cmd.kind),
                body: &delivery.data,
                headers: table_to_json(Received::of(delivery).headers()),
                error_kind: kind,
                error,
                attempts: i32::try_from(job.attempt).unwrap_or(i32::MAX),
            },
        )
        .await?;
        if fresh {
            commands::mark_dead(&mut tx, cmd, job.attempt, error).await?;
        }
        ordering::leave(&mut tx, k, cmd.id).await?;
        match policy {
            OrderingPolicy::Halt => {
                let now = chrono::Utc::now();
                let blocking = Blocking {
                    command_id: cmd.id,
                    dead_letter_id: Some(dead_letter_id),
                    command_type: &cmd.kind,
                    error,
                    halted: true,
                    not_before: now,
                };
                ordering::block(&mut tx, k, &blocking).await?;
            }
            OrderingPolicy::Skip => {
                // Whatever waits behind it goes on: due now.
                ordering::due_now(&mut tx, k).await?;
            }
        }
        tx.commit().await?;
        Ok::<Position, StoreError>(position)
    };
    match persist(write, cancel).await {
        None => return Settled::GiveBack,
        Some(Position::Behind | Position::Stale) => return Settled::Ack(None),
        Some(Position::Free | Position::Head) => {}
    }
    metrics::counter!("sluice_dead_letters_total", "kind" => kind.to_owned()).increment(1);
    Settled::Ack(Some(Label::Dead))
}

/// Runs `write` until it commits, waiting out database outages; `None` on shutdown first.
async fn persist<F, Fut, T>(write: F, cancel: &CancellationToken) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut outage = super::outage_backoff();
    loop {
        match write().await {
            Ok(done) => return Some(done),
            Err(e) => {
                let delay = outage.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = ?delay, "cannot record the ordered outcome yet");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return None,
                }
            }
        }
    }
}

/// Stands in for the handler of a command whose type is unknown, to dead-letter it.
struct NoHandler;

impl crate::handlers::Handler for NoHandler {
    fn handle<'a>(
        &'a self,
        _tx: &'a mut sqlx::PgConnection,
        _cmd: &'a crate::command::Envelope,
    ) -> crate::handlers::HandlerFuture<'a> {
        Box::pin(async { Err(HandlerError::Permanent("no handler".into())) })
    }
}
