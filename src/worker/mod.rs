//! The worker role: a pool consuming the work queues, the consumers of the ordered partitions
//! this process owns, the recorder that moves dead letters from their queue into Postgres, and
//! the dispatchers of scheduled commands and of released ordering keys.

mod acks;
mod callbacks;
mod consume;
mod dead_letters;
pub mod gate;
pub mod hooks;
pub mod ordered;
mod partitions;
mod process;
mod release;
mod remote;
pub mod retry;
pub mod route;
pub mod settle;
pub mod slots;

use crate::broker::topology::WORK_KEY;
use crate::broker::wire::Received;
use crate::broker::Broker;
use crate::command::Priority;
use crate::config::WorkerSettings;
use crate::handlers::Handlers;
use crate::heartbeat::{Ended, Reporter};
use acks::Acks;
use futures_util::FutureExt;
use lapin::message::Delivery;
use retry::Policies;
use sqlx::PgPool;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What every worker task shares.
pub struct WorkerCtx {
    pub pool: PgPool,
    pub broker: Broker,
    pub handlers: Handlers,
    /// The retry policy of each command type.
    pub policies: Policies,
    /// Per remote (HTTP) type: its in-flight bound and circuit.
    pub gates: HashMap<String, Arc<gate::Gate>>,
    /// Remote calls running off the worker's slots; the drain waits for them.
    pub remote_tasks: TaskTracker,
    pub settings: WorkerSettings,
    pub reporter: Arc<Reporter>,
    pub batch_settings: crate::config::BatchSettings,
    /// Batches moved forward since the settler last checked them.
    pub touched: settle::Touched,
    /// Opens the callback secrets of batches.
    pub sealer: Arc<crate::secrets::Sealer>,
    /// What the pruner keeps and for how long.
    pub retention: crate::config::RetentionSettings,
    /// How the dispatcher of scheduled commands polls.
    pub scheduling: crate::config::SchedulingSettings,
    /// How the ordered partitions are shared and released.
    pub ordering: crate::config::OrderingSettings,
    /// Run after each commit, before the ack.
    pub after_commit: Option<hooks::CommitHook>,
}

/// Runs the worker role until `cancel`, then drains in-flight commands.
pub async fn run(ctx: Arc<WorkerCtx>, cancel: CancellationToken) {
    let drain = Duration::from_millis(ctx.settings.drain_timeout_ms);
    let topology = ctx.broker.topology().clone();
    let work = {
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        move |batch: Vec<Delivery>, acks: Arc<Acks>| {
            let ctx = ctx.clone();
            let cancel = cancel.clone();
            async move { handle_batch(&ctx, &acks, batch, &cancel).await }
        }
    };
    let record = {
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        move |batch: Vec<Delivery>, acks: Arc<Acks>| {
            let ctx = ctx.clone();
            let cancel = cancel.clone();
            async move {
                for d in batch {
                    dead_letters::record(&ctx, &acks, d, &cancel).await;
                }
            }
        }
    };
    let s = &ctx.settings;
    // One consumer per priority's work queue, sharing the process's transaction slots by weight.
    let slots = slots::Slots::new(s.concurrency);
    let work_queue = |priority: Priority| consume::Options {
        queue: topology.work_queue_of(priority),
        prefetch: s.prefetch,
        batch_size: s.batch_size,
        linger: Duration::from_millis(s.batch_linger_ms),
        slots: slots.clone(),
        class: priority.class(),
        drain,
        on_consuming: if priority == Priority::Normal {
            let reporter = ctx.reporter.clone();
            Box::new(move |yes| reporter.consuming(yes))
        } else {
            Box::new(|_| {})
        },
        outstanding: Some(ctx.remote_tasks.clone()),
        keep_order: false,
    };
    let dead_queue = consume::Options {
        queue: topology.dead_letter_queue(),
        prefetch: 16,
        batch_size: 1,
        linger: Duration::ZERO,
        slots: slots::Slots::new(4),
        class: 1,
        drain,
        on_consuming: Box::new(|_| {}),
        outstanding: None,
        keep_order: false,
    };
    let callbacks = {
        let (ctx, cancel) = (ctx.clone(), cancel.clone());
        tokio::spawn(async move { callbacks::run(&ctx, cancel).await })
    };
    tokio::spawn(crate::retention::run(ctx.pool.clone(), ctx.retention.clone(), cancel.clone()));
    let dispatcher = tokio::spawn(crate::schedule::dispatch::run(
        ctx.pool.clone(),
        ctx.broker.clone(),
        ctx.scheduling.clone(),
        cancel.clone(),
    ));
    let releaser = tokio::spawn(release::run(
        ctx.pool.clone(),
        ctx.broker.clone(),
        Duration::from_millis(ctx.scheduling.poll_interval_ms.max(10)),
        ctx.ordering.release_batch,
        cancel.clone(),
    ));
    let partitions = tokio::spawn(partitions::run(ctx.clone(), cancel.clone()));
    // The settler outlives the consumers' drain, so batches finished by drained commands are
    // settled as the drain goes, not only at the very end.
    let settler_stop = CancellationToken::new();
    let settler = {
        let (ctx, stop) = (ctx.clone(), settler_stop.clone());
        tokio::spawn(async move { settle::run(&ctx, stop).await })
    };
    let consume_work = |priority: Priority| {
        let queue = topology.work_queue_of(priority);
        consume::consume(&ctx.broker, work_queue(priority), &cancel, ctx.reporter.pause_signal(&queue), work.clone())
    };
    tokio::join!(
        consume_work(Priority::High),
        consume_work(Priority::Normal),
        consume_work(Priority::Low),
        consume::consume(
            &ctx.broker,
            dead_queue,
            &cancel,
            ctx.reporter.pause_signal(&topology.dead_letter_queue()),
            record
        ),
    );
    let _ = partitions.await;
    settler_stop.cancel();
    let _ = settler.await;
    let _ = releaser.await;
    let _ = callbacks.await;
    let _ = dispatcher.await;
}

/// Deliveries that arrived together: one transaction for all of them when nothing goes
/// wrong, otherwise each on its own.
async fn handle_batch(ctx: &Arc<WorkerCtx>, acks: &Arc<Acks>, batch: Vec<Delivery>, cancel: &CancellationToken) {
    let n = batch.len();
    metrics::gauge!("sluice_worker_in_flight").increment(n as f64);
    ctx.reporter.in_flight(n as i64);
    let mut jobs = Vec::with_capacity(n);
    let mut remote_jobs = Vec::new();
    for delivery in batch {
        if delivery.redelivered {
            // Handed out before and never acked: a worker died, its connection broke, or a
            // worker gave it back (a panicking handler, a shutdown during an outage).
            metrics::counter!("sluice_redeliveries_total").increment(1);
        }
        let attempt = Received::of(&delivery).attempt();
        match process::prepare(ctx, &delivery.data, attempt) {
            // A retry tier brings every retry back to the normal queue: on to its own.
            Ok(job) if !job.cmd.priority.is_normal() && delivery.routing_key.as_str() == WORK_KEY => {
                let verdict = process::Verdict::Forward { to: job.cmd.priority };
                route::route(&route::Routing { ctx, acks, cancel }, &delivery, attempt, verdict).await
            }
            Ok(job) => {
                if let Some(since) = timed_since(&delivery, &job.cmd) {
                    ctx.reporter.delivered(since);
                }
                if job.handler.remote().is_some() {
                    remote_jobs.push((delivery, job));
                } else {
                    jobs.push((delivery, job));
                }
            }
            Err(verdict) => {
                if let process::Verdict::Dead { cmd: Some(cmd), .. } = &verdict {
                    tally(ctx, &cmd.kind, timed_since(&delivery, cmd), Label::Dead);
                }
                route::route(&route::Routing { ctx, acks, cancel }, &delivery, attempt, verdict).await
            }
        }
    }
    if !remote_jobs.is_empty() {
        remote::spawn(ctx, acks, remote_jobs, cancel);
    }
    run_jobs(ctx, acks, jobs, cancel).await;
    metrics::gauge!("sluice_worker_in_flight").decrement(n as f64);
    ctx.reporter.in_flight(-(n as i64));
}

/// Decoded jobs: one transaction for all of them when nothing goes wrong, otherwise each on
/// its own.
async fn run_jobs(ctx: &WorkerCtx, acks: &Acks, jobs: Vec<(Delivery, process::Job)>, cancel: &CancellationToken) {
    let batched = if jobs.len() > 1 {
        let only_jobs: Vec<&process::Job> = jobs.iter().map(|(_, j)| j).collect();
        let run = process::apply_batch(ctx, &only_jobs);
        let span = tracing::info_span!("batch", size = jobs.len());
        match AssertUnwindSafe(run.instrument(span)).catch_unwind().await {
            Ok(Ok(done)) => Some(done),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, size = jobs.len(), "batch fell back to one transaction per command");
                metrics::counter!("sluice_batch_fallbacks_total").increment(1);
                None
            }
            Err(_) => None,
        }
    } else {
        None
    };
    if let Some((outcomes, then)) = batched {
        let ended = jobs.iter().zip(&outcomes).map(|((d, j), o)| (j.cmd.kind.as_str(), timed_since(d, &j.cmd), *o));
        tally_many(ctx, ended);
        for ((delivery, job), outcome) in jobs.iter().zip(outcomes) {
            tracing::debug!(
                command_id = %job.cmd.id,
                trace_id = Received::of(delivery).trace_id(),
                outcome = outcome.as_str(),
                "committed in a batch"
            );
        }
        let deliveries: Vec<&Delivery> = jobs.iter().map(|(d, _)| d).collect();
        match then {
            hooks::AfterCommit::Ack => acks.ack(&deliveries).await,
            hooks::AfterCommit::Redeliver => {
                for delivery in deliveries {
                    acks.give_back(delivery).await;
                }
            }
        }
        ctx.touched.add(jobs.iter().filter_map(|(_, j)| j.cmd.batch.map(|b| b.id)));
    } else {
        for (delivery, job) in jobs {
            handle_one(ctx, acks, &delivery, job, cancel).await;
        }
    }
}

/// When a delivery's end-to-end latency counts from: the command's acceptance, or the time it
/// was scheduled for; not at all for an operator's replay (days later, perhaps), whose latency
/// would only skew the figures.
fn timed_since(delivery: &Delivery, cmd: &crate::command::Envelope) -> Option<chrono::DateTime<chrono::Utc>> {
    let since = cmd.run_at.map_or(cmd.submitted_at, |at| at.max(cmd.submitted_at));
    (!Received::of(delivery).is_replay()).then_some(since)
}

/// How one delivery of a command ended, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Succeeded,
    Rejected,
    /// Already applied by an earlier delivery: acked, nothing written.
    Duplicate,
    /// Cancelled before it was applied: acked, nothing applied.
    Cancelled,
    Retried,
    Dead,
}

impl Label {
    /// The `outcome` label of `sluice_commands_processed_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Rejected => "rejected",
            Self::Duplicate => "duplicate",
            Self::Cancelled => "cancelled",
            Self::Retried => "retried",
            Self::Dead => "dead",
        }
    }

    /// What the dashboard's outcome counts make of it (a duplicate is not counted twice).
    fn ended(self) -> Option<Ended> {
        match self {
            Self::Succeeded => Some(Ended::Succeeded),
            Self::Rejected => Some(Ended::Rejected),
            Self::Retried => Some(Ended::Retried),
            Self::Dead => Some(Ended::Dead),
            Self::Duplicate | Self::Cancelled => None,
        }
    }
}

/// Counts how a delivery of a command ended: metrics, and the dashboard's outcome counts.
fn tally(ctx: &WorkerCtx, kind: &str, submitted_at: Option<chrono::DateTime<chrono::Utc>>, outcome: Label) {
    tally_many(ctx, [(kind, submitted_at, outcome)]);
}

/// [`tally`] for a batch's commands: one metrics lookup and one count per type and outcome,
/// not one per command.
fn tally_many<'a>(
    ctx: &WorkerCtx,
    ended: impl IntoIterator<Item = (&'a str, Option<chrono::DateTime<chrono::Utc>>, Label)>,
) {
    type Since = Option<chrono::DateTime<chrono::Utc>>;
    let mut groups: Vec<(&str, Label, Vec<Since>)> = Vec::new();
    for (kind, since, outcome) in ended {
        match groups.iter_mut().find(|(k, o, _)| *k == kind && *o == outcome) {
            Some((_, _, all)) => all.push(since),
            None => groups.push((kind, outcome, vec![since])),
        }
    }
    for (kind, outcome, since) in groups {
        metrics::counter!("sluice_commands_processed_total", "type" => kind.to_owned(), "outcome" => outcome.as_str())
            .increment(since.len() as u64);
        if let Some(how) = outcome.ended() {
            ctx.reporter.ended_many(kind, how, &since);
        }
    }
}

/// One command in its own transaction, start to ack.
async fn handle_one(ctx: &WorkerCtx, acks: &Acks, delivery: &Delivery, job: process::Job, cancel: &CancellationToken) {
    let attempt = job.attempt;
    let span = tracing::info_span!(
        "command",
        command_id = tracing::field::Empty,
        kind = tracing::field::Empty,
        attempt,
        redelivered = delivery.redelivered,
        trace_id = Received::of(delivery).trace_id(),
    );
    async {
        // A panicking handler is treated like a crashed worker: the message goes back to the
        // queue, and the quorum queue's delivery limit dead-letters it if it keeps happening.
        let (kind, submitted_at, batch) =
            (job.cmd.kind.clone(), timed_since(delivery, &job.cmd), job.cmd.batch.map(|b| b.id));
        match AssertUnwindSafe(process::decide(ctx, job, cancel)).catch_unwind().await {
            Ok(verdict) => {
                settle_verdict(ctx, acks, delivery, (&kind, submitted_at, batch), attempt, verdict, cancel).await
            }
            Err(_) => {
                tracing::error!("handler panicked; returning the message to the queue");
                metrics::counter!("sluice_handler_panics_total").increment(1);
                acks.give_back(delivery).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Counts and carries out the verdict on a delivery of `cmd` that was decided outside
/// [`handle_one`] (a remote call's failure, a duplicate, a deferral).
async fn conclude(
    ctx: &WorkerCtx,
    acks: &Acks,
    delivery: &Delivery,
    cmd: &crate::command::Envelope,
    attempt: u32,
    verdict: process::Verdict,
    cancel: &CancellationToken,
) {
    let about = (cmd.kind.as_str(), timed_since(delivery, cmd), cmd.batch.map(|b| b.id));
    settle_verdict(ctx, acks, delivery, about, attempt, verdict, cancel).await;
}

type About<'a> = (&'a str, Option<chrono::DateTime<chrono::Utc>>, Option<uuid::Uuid>);

async fn settle_verdict(
    ctx: &WorkerCtx,
    acks: &Acks,
    delivery: &Delivery,
    (kind, submitted_at, batch): About<'_>,
    attempt: u32,
    verdict: process::Verdict,
    cancel: &CancellationToken,
) {
    let outcome = match &verdict {
        process::Verdict::Done { outcome } => Some(*outcome),
        process::Verdict::Retry { .. } if ctx.policies.of(kind).allows_another(attempt) => Some(Label::Retried),
        process::Verdict::Retry { .. } | process::Verdict::Dead { .. } => Some(Label::Dead),
        process::Verdict::GiveBack | process::Verdict::Defer { .. } | process::Verdict::Forward { .. } => None,
    };
    if let Some(outcome) = outcome {
        tally(ctx, kind, submitted_at, outcome);
    }
    route::route(&route::Routing { ctx, acks, cancel }, delivery, attempt, verdict).await;
    ctx.touched.add(batch);
}

/// Backoff between tries of a transaction that hit a serialization failure or deadlock,
/// `retries` times at most.
fn conflict_backoff(retries: usize) -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(200))
        .with_jitter()
        .with_max_times(retries)
        .build()
}

/// Backoff while the database is unreachable: work is held, never failed, so it has no end.
fn outage_backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}
