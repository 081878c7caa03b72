//! Publishes due scheduled commands (and, through [`super::recurring`], fires due schedules). Every worker process runs one; they share the due rows
//! through `FOR UPDATE SKIP LOCKED`, so no leader is needed and a dead process's share is taken
//! by the others at their next poll. A row is deleted in the transaction that locked it, after
//! RabbitMQ confirmed its publish: a crash in between publishes it again, under the same id,
//! and the worker's inbox applies it once.

use crate::broker::wire::Outgoing;
use crate::broker::{Broker, Message};
use crate::config::SchedulingSettings;
use crate::store::{scheduled, StoreError};
use chrono::Utc;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Dispatches due commands and fires due recurring schedules every `poll_interval_ms` until
/// `cancel`.
pub async fn run(pool: PgPool, broker: Broker, settings: SchedulingSettings, cancel: CancellationToken) {
    let every = Duration::from_millis(settings.poll_interval_ms.max(10));
    // Beyond a year the grace means "never missed"; capped so the arithmetic cannot overflow.
    let grace = chrono::Duration::seconds(i64::try_from(settings.catch_up_grace_secs.min(31_536_000)).unwrap_or(0));
    let batch = settings.dispatch_batch.max(1);
    let mut failing = false;
    let mut schedules_failing = false;
    loop {
        // A full batch means more may be due: go on without waiting. Schedules fire every
        // round, so a backlog of scheduled commands cannot hold their ticks back.
        loop {
            match super::recurring::fire_once(&pool, &broker, grace).await {
                Ok(_) => schedules_failing = false,
                Err(e) if !schedules_failing => {
                    tracing::warn!(error = %e, "cannot fire recurring schedules; retrying every poll");
                    schedules_failing = true;
                }
                Err(_) => {}
            }
            match dispatch_once(&pool, &broker, batch).await {
                Ok(n) => {
                    if failing {
                        tracing::info!("dispatching scheduled commands again");
                        failing = false;
                    }
                    if (n as i64) < batch || cancel.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    // Logged once per outage; the rows stay and the next poll tries again.
                    if !failing {
                        tracing::warn!(error = %e, "cannot dispatch scheduled commands; retrying every poll");
                        failing = true;
                    }
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

/// Why a dispatch round stopped.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("RabbitMQ confirmed none of {0} due commands")]
    Unconfirmed(usize),
}

/// Publishes up to `limit` due commands and deletes those RabbitMQ confirmed; how many.
#[tracing::instrument(skip_all, fields(due, published))]
pub async fn dispatch_once(pool: &PgPool, broker: &Broker, limit: i64) -> Result<usize, DispatchError> {
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    let due = scheduled::lock_due(&mut tx, limit).await?;
    tracing::Span::current().record("due", due.len());
    if due.is_empty() {
        return Ok(0);
    }
    let topology = broker.topology();
    let outgoing: Vec<Outgoing> =
        due.iter().map(|d| Outgoing::first_attempt_of(topology, d.id, d.body.clone(), &d.traceparent)).collect();
    let msgs: Vec<Message> = outgoing.iter().map(Outgoing::message).collect();
    let results = broker.publish_many(&msgs).await;
    let now = Utc::now();
    let mut published = Vec::with_capacity(due.len());
    for (d, r) in due.iter().zip(&results) {
        if r.is_ok() {
            published.push(d.id);
            let lag = (now - d.run_at).to_std().unwrap_or_default();
            metrics::histogram!("sluice_scheduled_lag_seconds").record(lag);
        }
    }
    if published.is_empty() {
        return Err(DispatchError::Unconfirmed(due.len()));
    }
    scheduled::delete(&mut tx, &published).await?;
    tx.commit().await.map_err(StoreError::from)?;
    tracing::Span::current().record("published", published.len());
    metrics::counter!("sluice_scheduled_dispatched_total").increment(published.len() as u64);
    Ok(published.len())
}
