//! One delivery: decode, run its handler in one transaction, decide what happens next.

use super::hooks::{self, AfterCommit};
use super::{Label, WorkerCtx};
use crate::command::Envelope;
use crate::handlers::{Handler, HandlerError, Outcome};
use crate::store::cancellation;
use crate::store::commands::{self, CommandStatus, FinalStatus};
use crate::store::locks;
use crate::store::StoreError;
use sqlx::PgConnection;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the worker does with a delivery once its handler has run.
#[derive(Debug)]
pub enum Verdict {
    /// Committed (or already committed before): ack.
    Done { outcome: Label },
    /// Failed in a way that may pass later: retry through a delay tier (or dead-letter when
    /// attempts are exhausted).
    Retry { cmd: Box<Envelope>, error: String, after: Option<Duration> },
    /// Not attempted: put aside for about `delay_ms` through a retry tier, the attempt
    /// unchanged (a remote type at its bound, or its circuit open).
    Defer { delay_ms: u64 },
    /// Will never work: dead-letter now.
    Dead { cmd: Option<Box<Envelope>>, kind: &'static str, error: String },
    /// Not attempted: belongs in the work queue of another priority.
    Forward { to: crate::command::Priority },
    /// Shutting down while the database is away, or the after-commit hook asked for a
    /// redelivery: give the message back unacked.
    GiveBack,
}

/// A decoded command with its handler, ready to run.
pub struct Job {
    pub cmd: Envelope,
    pub handler: Arc<dyn Handler>,
    pub attempt: u32,
}

/// Decodes a message body and finds its handler; failures are verdicts of their own.
pub fn prepare(ctx: &WorkerCtx, body: &[u8], attempt: u32) -> Result<Job, Verdict> {
    let cmd = match Envelope::decode(body) {
        Ok(cmd) => cmd,
        Err(e) => return Err(Verdict::Dead { cmd: None, kind: "undecodable", error: e.to_string() }),
    };
    match ctx.handlers.get(&cmd.kind).cloned() {
        Some(handler) => Ok(Job { cmd, handler, attempt }),
        None => {
            let error = format!("no handler for command type {:?}", cmd.kind);
            Err(Verdict::Dead { cmd: Some(Box::new(cmd)), kind: "unknown_type", error })
        }
    }
}

/// Runs several jobs in one transaction (one commit, one WAL flush; handlers may use
/// multi-row statements). Succeeds only if every job was fresh and decided without error;
/// otherwise everything is rolled back and the caller runs the jobs one by one, where each
/// failure gets its precise treatment. Returns each job's outcome label, in order, and what
/// the after-commit hook asked for.
pub async fn apply_batch(ctx: &WorkerCtx, jobs: &[&Job]) -> Result<(Vec<Label>, AfterCommit), HandlerError> {
    let fallback = |why: &str| Err(HandlerError::Transient(why.to_owned()));
    let mut ids: Vec<_> = jobs.iter().map(|j| j.cmd.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != jobs.len() {
        return fallback("the batch holds the same command twice");
    }
    let started = Instant::now();
    let mut tx = ctx.pool.begin().await.map_err(StoreError::from)?;
    let mut batch_ids: Vec<_> =
        jobs.iter().filter(|j| !j.handler.decided_before()).filter_map(|j| j.cmd.batch.map(|b| b.id)).collect();
    batch_ids.sort_unstable();
    batch_ids.dedup();
    if !batch_ids.is_empty() && !cancellation::cancelled_batches(&mut tx, &batch_ids).await?.is_empty() {
        return fallback("a command of the batch belongs to a cancelled batch");
    }
    let keys: Vec<String> = jobs.iter().flat_map(|j| j.handler.lock_keys(&j.cmd)).collect();
    locks::lock_all(&mut tx, &keys).await?;
    // Group by type, keeping positions, so each handler sees all of its commands at once.
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match groups.iter_mut().find(|(kind, _)| *kind == job.cmd.kind) {
            Some((_, members)) => members.push(i),
            None => groups.push((&job.cmd.kind, vec![i])),
        }
    }
    let mut outcomes: Vec<Option<Outcome>> = jobs.iter().map(|_| None).collect();
    for (_, members) in &groups {
        let cmds: Vec<&Envelope> = members.iter().map(|&i| &jobs[i].cmd).collect();
        let results = jobs[members[0]].handler.handle_many(&mut tx, &cmds).await?;
        if results.len() != members.len() {
            return fallback("a handler returned the wrong number of outcomes");
        }
        for (&i, outcome) in members.iter().zip(results) {
            outcomes[i] = Some(outcome);
        }
    }
    let mut rows = commands::Outcomes::default();
    let mut labels = Vec::with_capacity(jobs.len());
    for (job, outcome) in jobs.iter().zip(outcomes) {
        match outcome {
            Some(Outcome::Succeeded(result)) => {
                rows.push(&job.cmd, job.attempt, FinalStatus::Succeeded, Some(result), None);
                labels.push(Label::Succeeded);
            }
            Some(Outcome::Rejected { reason, message }) => {
                let result = serde_json::json!({ "reason": reason });
                rows.push(&job.cmd, job.attempt, FinalStatus::Rejected, Some(result), Some(message));
                labels.push(Label::Rejected);
            }
            None => return fallback("a command of the batch got no outcome"),
        }
    }
    if commands::record_outcomes(&mut tx, &rows).await? != rows.len() {
        // Some command had already completed: its effects must not happen again.
        return fallback("a command of the batch was a duplicate");
    }
    tx.commit().await.map_err(StoreError::from)?;
    let then = hooks::after_commit(ctx.after_commit.as_ref(), &ids);
    metrics::histogram!("sluice_batch_seconds").record(started.elapsed());
    metrics::histogram!("sluice_batch_size").record(jobs.len() as f64);
    Ok((labels, then))
}

/// Decides the fate of one job in its own transaction, retrying conflicts in-process and
/// waiting out database outages.
pub async fn decide(ctx: &WorkerCtx, job: Job, cancel: &CancellationToken) -> Verdict {
    let Job { cmd, handler, attempt } = job;
    tracing::Span::current().record("command_id", tracing::field::display(cmd.id));
    tracing::Span::current().record("kind", cmd.kind.as_str());
    let mut conflicts = super::conflict_backoff(ctx.settings.serialization_retries);
    let mut outage = super::outage_backoff();
    loop {
        let started = Instant::now();
        let result = apply(ctx, handler.as_ref(), &cmd, attempt).await;
        metrics::histogram!("sluice_handler_seconds", "type" => cmd.kind.clone()).record(started.elapsed());
        // A redelivery of a command that is already applied can fail in its handler before
        // the inbox row would have told (a unique key the first delivery wrote, or a lock it
        // waited on): it is a duplicate, not a failure. Asked only when something failed.
        let result = match result {
            Err(e) if !matches!(e, HandlerError::Store(StoreError::Unavailable(_))) => {
                match commands::settled(&ctx.pool, &cmd).await {
                    Ok(Some(CommandStatus::Cancelled)) => Ok(Applied::Cancelled),
                    Ok(Some(_)) => Ok(Applied::Duplicate),
                    _ => Err(e),
                }
            }
            other => other,
        };
        let wait = match result {
            Ok(Applied::Fresh(Outcome::Succeeded(_))) => return Verdict::Done { outcome: Label::Succeeded },
            Ok(Applied::Fresh(Outcome::Rejected { .. })) => return Verdict::Done { outcome: Label::Rejected },
            Ok(Applied::Duplicate) => return Verdict::Done { outcome: Label::Duplicate },
            Ok(Applied::Cancelled) => return Verdict::Done { outcome: Label::Cancelled },
            Ok(Applied::Redeliver) => return Verdict::GiveBack,
            Err(HandlerError::Permanent(error)) => {
                return Verdict::Dead { cmd: Some(Box::new(cmd)), kind: "permanent", error }
            }
            Err(HandlerError::Transient(error)) => return Verdict::Retry { cmd: Box::new(cmd), error, after: None },
            Err(HandlerError::Store(StoreError::Conflict(e))) => match conflicts.next() {
                Some(delay) => {
                    metrics::counter!("sluice_tx_conflicts_total").increment(1);
                    delay
                }
                None => {
                    return Verdict::Retry {
                        cmd: Box::new(cmd),
                        error: format!("transaction kept conflicting: {e}"),
                        after: None,
                    }
                }
            },
            Err(HandlerError::Store(StoreError::Unavailable(e))) => {
                // Not the command's fault: hold it (unacked) until the database is back, so
                // an outage neither burns attempts nor dead-letters healthy commands.
                let delay = outage.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = ?delay, "database unavailable; holding the command");
                metrics::counter!("sluice_db_unavailable_total").increment(1);
                delay
            }
            Err(HandlerError::Store(StoreError::Timeout(e))) => {
                let error = format!("statement timed out: {e}");
                return Verdict::Retry { cmd: Box::new(cmd), error, after: None };
            }
            Err(HandlerError::Store(e @ (StoreError::Other(_) | StoreError::Invalid(_)))) => {
                return Verdict::Dead { cmd: Some(Box::new(cmd)), kind: "database_error", error: e.to_string() };
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return Verdict::GiveBack,
        }
    }
}

/// Whether the transaction applied the command or found it already applied.
enum Applied {
    Fresh(Outcome),
    Duplicate,
    /// Cancelled (by its tenant, an operator or its batch's cancel) before it was applied.
    Cancelled,
    /// Applied, and the after-commit hook asked for the delivery to go back unacked.
    Redeliver,
}

/// Business writes and the outcome row in one transaction. The outcome row is the inbox: if
/// it shows the command already completed or cancelled, everything is rolled back.
async fn apply(ctx: &WorkerCtx, handler: &dyn Handler, cmd: &Envelope, attempt: u32) -> Result<Applied, HandlerError> {
    let mut tx = ctx.pool.begin().await.map_err(StoreError::from)?;
    if let Some(batch) = cmd.batch.filter(|_| !handler.decided_before()) {
        // Held under FOR SHARE to the commit: a batch's cancel waits for it, or came first.
        if !cancellation::cancelled_batches(&mut tx, &[batch.id]).await?.is_empty() {
            commands::mark_cancelled(&mut tx, cmd, attempt).await?;
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(Applied::Cancelled);
        }
    }
    locks::lock_all(&mut tx, &handler.lock_keys(cmd)).await?;
    let outcome = handler.handle(&mut tx, cmd).await?;
    if !record(&mut tx, cmd, attempt, &outcome).await? {
        tx.rollback().await.map_err(StoreError::from)?;
        // The row said final or cancelled; which, for the metrics and a tombstone's type.
        if commands::settled(&ctx.pool, cmd).await? == Some(CommandStatus::Cancelled) {
            commands::name_tombstone(&ctx.pool, cmd).await?;
            return Ok(Applied::Cancelled);
        }
        return Ok(Applied::Duplicate);
    }
    tx.commit().await.map_err(StoreError::from)?;
    match hooks::after_commit(ctx.after_commit.as_ref(), &[cmd.id]) {
        AfterCommit::Ack => Ok(Applied::Fresh(outcome)),
        AfterCommit::Redeliver => Ok(Applied::Redeliver),
    }
}

/// Writes the outcome row (the inbox entry); false if the command had already completed.
async fn record(tx: &mut PgConnection, cmd: &Envelope, attempt: u32, outcome: &Outcome) -> Result<bool, StoreError> {
    match outcome {
        Outcome::Succeeded(result) => {
            commands::record_outcome(tx, cmd, attempt, FinalStatus::Succeeded, Some(result), None).await
        }
        Outcome::Rejected { reason, message } => {
            let result = serde_json::json!({ "reason": reason });
            commands::record_outcome(tx, cmd, attempt, FinalStatus::Rejected, Some(&result), Some(message)).await
        }
    }
}
