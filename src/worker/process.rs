//! One delivery: decode, run its handler in one transaction, decide what happens next.

use super::WorkerCtx;
use crate::command::Envelope;
use crate::handlers::{Handler, HandlerError, Outcome};
use crate::store::commands::{self, FinalStatus};
use crate::store::StoreError;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the worker does with a delivery once its handler has run.
#[derive(Debug)]
pub enum Verdict {
    /// Committed (or already committed before): ack.
    Done { outcome: &'static str },
    /// Failed in a way that may pass later: retry through a delay tier (or dead-letter when
    /// attempts are exhausted).
    Retry { cmd: Envelope, error: String },
    /// Will never work: dead-letter now.
    Dead {
        cmd: Option<Envelope>,
        kind: &'static str,
        error: String,
    },
    /// Shutting down while the database is away: give the message back, untouched.
    GiveBack,
}

/// Decides the fate of one message body on its `attempt`-th delivery.
pub async fn decide(
    ctx: &WorkerCtx,
    body: &[u8],
    attempt: u32,
    cancel: &CancellationToken,
) -> Verdict {
    let cmd = match Envelope::decode(body) {
        Ok(cmd) => cmd,
        Err(e) => {
            return Verdict::Dead {
                cmd: None,
                kind: "undecodable",
                error: e.to_string(),
            }
        }
    };
    tracing::Span::current().record("command_id", tracing::field::display(cmd.id));
    tracing::Span::current().record("kind", cmd.kind.as_str());
    let Some(handler) = ctx.handlers.get(&cmd.kind).cloned() else {
        let error = format!("no handler for command type {:?}", cmd.kind);
        return Verdict::Dead {
            cmd: Some(cmd),
            kind: "unknown_type",
            error,
        };
    };
    let mut conflicts = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(200))
        .with_jitter()
        .with_max_times(ctx.settings.serialization_retries)
        .build();
    let mut outage = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        let started = Instant::now();
        let result = apply(ctx, handler.as_ref(), &cmd, attempt).await;
        metrics::histogram!("sluice_handler_seconds", "type" => cmd.kind.clone())
            .record(started.elapsed());
        let wait = match result {
            Ok(Applied::Fresh(Outcome::Succeeded(_))) => {
                return Verdict::Done {
                    outcome: "succeeded",
                }
            }
            Ok(Applied::Fresh(Outcome::Rejected { .. })) => {
                return Verdict::Done {
                    outcome: "rejected",
                }
            }
            Ok(Applied::Duplicate) => {
                return Verdict::Done {
                    outcome: "duplicate",
                }
            }
            Err(HandlerError::Permanent(error)) => {
                return Verdict::Dead {
                    cmd: Some(cmd),
                    kind: "permanent",
                    error,
                }
            }
            Err(HandlerError::Transient(error)) => return Verdict::Retry { cmd, error },
            Err(HandlerError::Store(StoreError::Conflict(e))) => match conflicts.next() {
                Some(delay) => {
                    metrics::counter!("sluice_tx_conflicts_total").increment(1);
                    delay
                }
                None => {
                    return Verdict::Retry {
                        cmd,
                        error: format!("transaction kept conflicting: {e}"),
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
                return Verdict::Retry {
                    cmd,
                    error: format!("statement timed out: {e}"),
                };
            }
            Err(HandlerError::Store(StoreError::Other(e))) => {
                return Verdict::Dead {
                    cmd: Some(cmd),
                    kind: "database_error",
                    error: e.to_string(),
                };
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
}

/// Business writes and the outcome row in one transaction. The outcome row is the inbox: if
/// it shows the command already completed, everything is rolled back.
async fn apply(
    ctx: &WorkerCtx,
    handler: &dyn Handler,
    cmd: &Envelope,
    attempt: u32,
) -> Result<Applied, HandlerError> {
    let mut tx = ctx.pool.begin().await.map_err(StoreError::from)?;
    let outcome = handler.handle(&mut tx, cmd).await?;
    let (status, result, error) = match &outcome {
        Outcome::Succeeded(v) => (FinalStatus::Succeeded, Some(v.clone()), None),
        Outcome::Rejected { reason, message } => (
            FinalStatus::Rejected,
            Some(serde_json::json!({"reason": reason})),
            Some(message.clone()),
        ),
    };
    let fresh = commands::record_outcome(
        &mut tx,
        cmd,
        attempt,
        status,
        result.as_ref(),
        error.as_deref(),
    )
    .await?;
    if !fresh {
        tx.rollback().await.map_err(StoreError::from)?;
        return Ok(Applied::Duplicate);
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Applied::Fresh(outcome))
}
