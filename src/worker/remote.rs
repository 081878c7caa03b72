//! Deliveries of remote types (an HTTP endpoint decides them). They leave the worker's batch
//! at once, so a slow endpoint holds no worker slot: they run in a task of their own, each
//! waits for a call slot of its type and calls with no transaction open, and the outcomes that
//! are ready together are recorded as a worker batch is, in one transaction.

use super::acks::Acks;
use super::gate::Admit;
use super::process::{Job, Verdict};
use super::{Label, WorkerCtx};
use crate::broker::wire::Received;
use crate::command::Envelope;
use crate::handlers::remote::{Call, CallError};
use crate::handlers::{Handler, HandlerError, HandlerFuture, Outcome};
use crate::store::commands::{self, CommandStatus};
use lapin::message::Delivery;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// Runs the remote `jobs` of one batch in tasks the worker's drain waits for: each call goes
/// on its own (waiting for a slot of its type), and the outcomes that are ready together are
/// recorded in one transaction, as a worker batch is. The calls do not wait for the recording:
/// an answer left unread while a transaction waits for a connection would time out.
pub fn spawn(ctx: &Arc<WorkerCtx>, acks: &Arc<Acks>, jobs: Vec<(Delivery, Job)>, cancel: &CancellationToken) {
    let tracker = ctx.remote_tasks.clone();
    let (decided, mut ready) = tokio::sync::mpsc::unbounded_channel();
    let n = jobs.len();
    ctx.reporter.in_flight(n as i64);
    metrics::gauge!("sluice_worker_in_flight").increment(n as f64);
    for (delivery, job) in jobs {
        let (ctx, acks, cancel, decided) = (ctx.clone(), acks.clone(), cancel.clone(), decided.clone());
        let span = tracing::info_span!(
            "remote_command",
            command_id = %job.cmd.id,
            kind = %job.cmd.kind,
            attempt = job.attempt,
            trace_id = Received::of(&delivery).trace_id(),
        );
        tracker.spawn(
            async move {
                if let Some(done) = call(&ctx, &acks, delivery, job, &cancel).await {
                    // The recorder outlives every sender.
                    let _ = decided.send(done);
                }
            }
            .instrument(span),
        );
    }
    drop(decided);
    let (ctx, acks, cancel) = (ctx.clone(), acks.clone(), cancel.clone());
    tracker.spawn(async move {
        let mut chunk = Vec::new();
        while ready.recv_many(&mut chunk, ctx.settings.batch_size.max(1)).await > 0 {
            let decided = std::mem::take(&mut chunk);
            // One handler for all of them: the batch path runs a type's commands through the
            // handler of its first.
            let outcomes: HashMap<Uuid, Outcome> = decided.iter().map(|(_, j, o)| (j.cmd.id, o.clone())).collect();
            let handler: Arc<dyn Handler> = Arc::new(Decided(outcomes));
            let jobs = decided
                .into_iter()
                .map(|(d, j, _)| (d, Job { cmd: j.cmd, handler: handler.clone(), attempt: j.attempt }))
                .collect();
            super::run_jobs(&ctx, &acks, jobs, &cancel).await;
        }
        metrics::gauge!("sluice_worker_in_flight").decrement(n as f64);
        ctx.reporter.in_flight(-(n as i64));
    });
}

/// Calls out for one job: the endpoint's outcome to record, or `None` when the delivery was
/// settled here (a duplicate, put aside, failed, or given back).
async fn call(
    ctx: &WorkerCtx,
    acks: &Acks,
    delivery: Delivery,
    job: Job,
    cancel: &CancellationToken,
) -> Option<(Delivery, Job, Outcome)> {
    let (Some(remote), Some(gate)) = (job.handler.remote(), ctx.gates.get(&job.cmd.kind)) else {
        // Only jobs with a remote handler and a gate are sent here.
        let verdict = Verdict::Dead {
            cmd: Some(Box::new(job.cmd.clone())),
            kind: "permanent",
            error: "no gate for a remote type".into(),
        };
        super::conclude(ctx, acks, &delivery, &job.cmd, job.attempt, verdict, cancel).await;
        return None;
    };
    let probe = match gate.admit() {
        Admit::Go { probe } => probe,
        Admit::Defer { delay, why } => {
            metrics::counter!("sluice_remote_deferred_total", "type" => job.cmd.kind.clone(), "reason" => why)
                .increment(1);
            let verdict = Verdict::Defer { delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX) };
            super::conclude(ctx, acks, &delivery, &job.cmd, job.attempt, verdict, cancel).await;
            return None;
        }
    };
    let slot = tokio::select! {
        s = gate.slot() => s,
        () = cancel.cancelled() => None,
    };
    let Some(slot) = slot else {
        gate.not_called(probe);
        acks.give_back(&delivery).await;
        return None;
    };
    // Claimed (`processing`) just before the call, so a cancel from now on loses; redelivered
    // after its outcome committed (the ack was lost) or cancelled: not called.
    let settled = match commands::claim(&ctx.pool, &job.cmd, job.attempt).await {
        Ok(None) => None,
        Ok(Some(CommandStatus::Cancelled)) => Some(Verdict::Done { outcome: Label::Cancelled }),
        Ok(Some(CommandStatus::Processing)) | Err(_) => Some(Verdict::Defer { delay_ms: 1000 }),
        Ok(Some(_)) => Some(Verdict::Done { outcome: Label::Duplicate }),
    };
    if let Some(verdict) = settled {
        drop(slot);
        gate.not_called(probe);
        super::conclude(ctx, acks, &delivery, &job.cmd, job.attempt, verdict, cancel).await;
        return None;
    }
    let received = Received::of(&delivery);
    let traceparent = received.traceparent();
    let started = Instant::now();
    let called = remote.call(Call { cmd: &job.cmd, attempt: job.attempt, traceparent: traceparent.as_deref() }).await;
    drop(slot);
    let took = started.elapsed();
    metrics::histogram!("sluice_handler_seconds", "type" => job.cmd.kind.clone()).record(took);
    gate.called(!matches!(called, Err(CallError::Transient { .. })), probe, took);
    let verdict = match called {
        // Recorded like any outcome: the inbox row decides, conflicts and outages are waited
        // out, and the endpoint is not called again for it.
        Ok(outcome) => return Some((delivery, job, outcome)),
        Err(CallError::Transient { error, retry_after }) => {
            Verdict::Retry { cmd: Box::new(job.cmd.clone()), error, after: retry_after }
        }
        Err(CallError::Permanent(error)) => {
            Verdict::Dead { cmd: Some(Box::new(job.cmd.clone())), kind: "permanent", error }
        }
    };
    super::conclude(ctx, acks, &delivery, &job.cmd, job.attempt, verdict, cancel).await;
    None
}

/// Outcomes already decided by the endpoint, by command id, recorded by the ordinary
/// transaction.
struct Decided(HashMap<Uuid, Outcome>);

impl Handler for Decided {
    fn handle<'a>(&'a self, _tx: &'a mut sqlx::PgConnection, cmd: &'a Envelope) -> HandlerFuture<'a> {
        let outcome = self.0.get(&cmd.id).cloned();
        Box::pin(
            async move { outcome.ok_or_else(|| HandlerError::Permanent("no decided outcome for this command".into())) },
        )
    }

    fn decided_before(&self) -> bool {
        true
    }
}
