//! Deliveries of remote types (an HTTP endpoint decides them). They leave the worker's batch
//! at once, so a slow endpoint holds no worker slot: each runs in a task of its own, waits for
//! a call slot of its type, calls with no transaction open, then records the outcome in a
//! transaction of its own, as any command's is recorded.

use super::acks::Acks;
use super::gate::Admit;
use super::process::{Job, Verdict};
use super::{Label, WorkerCtx};
use crate::broker::wire::Received;
use crate::command::Envelope;
use crate::handlers::remote::{Call, CallError};
use crate::handlers::{Handler, HandlerFuture, Outcome};
use crate::store::commands;
use lapin::message::Delivery;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Runs `job` in a task the worker's drain waits for.
pub fn spawn(ctx: &Arc<WorkerCtx>, acks: &Arc<Acks>, delivery: Delivery, job: Job, cancel: &CancellationToken) {
    let (ctx, acks, cancel) = (ctx.clone(), acks.clone(), cancel.clone());
    let tracker = ctx.remote_tasks.clone();
    let span = tracing::info_span!(
        "remote_command",
        command_id = %job.cmd.id,
        kind = %job.cmd.kind,
        attempt = job.attempt,
        trace_id = Received::of(&delivery).trace_id(),
    );
    tracker.spawn(
        async move {
            ctx.reporter.in_flight(1);
            metrics::gauge!("sluice_worker_in_flight").increment(1.0);
            run(&ctx, &acks, delivery, job, &cancel).await;
            metrics::gauge!("sluice_worker_in_flight").decrement(1.0);
            ctx.reporter.in_flight(-1);
        }
        .instrument(span),
    );
}

async fn run(ctx: &WorkerCtx, acks: &Acks, delivery: Delivery, job: Job, cancel: &CancellationToken) {
    let (Some(remote), Some(gate)) = (job.handler.remote(), ctx.gates.get(&job.cmd.kind)) else {
        // Only jobs with a remote handler and a gate are sent here.
        let verdict = Verdict::Dead {
            cmd: Some(Box::new(job.cmd.clone())),
            kind: "permanent",
            error: "no gate for a remote type".into(),
        };
        return super::conclude(ctx, acks, &delivery, &job.cmd, job.attempt, verdict, cancel).await;
    };
    // Redelivered after its outcome committed (the ack was lost): do not call again.
    if let Ok(true) = commands::is_final(&ctx.pool, job.cmd.id).await {
        let verdict = Verdict::Done { outcome: Label::Duplicate };
        return super::conclude(ctx, acks, &delivery, &job.cmd, job.attempt, verdict, cancel).await;
    }
    let probe = match gate.admit() {
        Admit::Go { probe } => probe,
        Admit::Defer { delay, why } => {
            metrics::counter!("sluice_remote_deferred_total", "type" => job.cmd.kind.clone(), "reason" => why)
                .increment(1);
            let verdict = Verdict::Defer { delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX) };
            return super::conclude(ctx, acks, &delivery, &job.cmd, job.attempt, verdict, cancel).await;
        }
    };
    let slot = tokio::select! {
        s = gate.slot() => s,
        () = cancel.cancelled() => None,
    };
    let Some(slot) = slot else {
        gate.not_called(probe);
        return acks.give_back(&delivery).await;
    };
    let received = Received::of(&delivery);
    let traceparent = received.traceparent();
    let started = Instant::now();
    let called = remote.call(Call { cmd: &job.cmd, attempt: job.attempt, traceparent: traceparent.as_deref() }).await;
    drop(slot);
    let took = started.elapsed();
    metrics::histogram!("sluice_handler_seconds", "type" => job.cmd.kind.clone()).record(took);
    gate.called(!matches!(called, Err(CallError::Transient { .. })), probe, took);
    let verdict = match called {
        Ok(outcome) => {
            // Recorded like any outcome: the inbox row decides, conflicts and outages are
            // waited out, and the endpoint is not called again for it.
            let job = Job { cmd: job.cmd, handler: Arc::new(Decided(outcome)), attempt: job.attempt };
            return super::handle_one(ctx, acks, &delivery, job, cancel).await;
        }
        Err(CallError::Transient { error, retry_after }) => {
            Verdict::Retry { cmd: Box::new(job.cmd.clone()), error, after: retry_after }
        }
        Err(CallError::Permanent(error)) => {
            Verdict::Dead { cmd: Some(Box::new(job.cmd.clone())), kind: "permanent", error }
        }
    };
    super::conclude(ctx, acks, &delivery, &job.cmd, job.attempt, verdict, cancel).await;
}

/// An outcome already decided by the endpoint, recorded by the ordinary transaction.
struct Decided(Outcome);

impl Handler for Decided {
    fn handle<'a>(&'a self, _tx: &'a mut sqlx::PgConnection, _cmd: &'a Envelope) -> HandlerFuture<'a> {
        let outcome = self.0.clone();
        Box::pin(async move { Ok(outcome) })
    }
}
