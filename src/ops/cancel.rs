//! Cancelling a command, or every command of a batch, that has not been applied. The command's
//! row orders a cancel against a worker: whichever writes it first wins, and a cancel that
//! loses learns the final status (409 in the API). Each cancel is audited.

use super::{Operators, OpsError};
use crate::store::cancellation::{self, Target, Written};
use crate::store::commands::CommandStatus;
use crate::store::{audit, batches, scheduled};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// A command that will not be applied.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Cancelled {
    pub id: Uuid,
    /// Always `cancelled`.
    pub status: CommandStatus,
    /// Its status before: `scheduled`, `retrying` or `dead`; absent when sluice had no record
    /// of it (queued and not yet taken by a worker, or an id it never saw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<CommandStatus>,
    /// It had been cancelled before; nothing changed.
    pub already: bool,
}

/// What cancelling a batch did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchCancelled {
    pub id: Uuid,
    /// Commands of the batch now cancelled (including those cancelled before).
    pub cancelled: i64,
    /// Commands applied before the cancel (succeeded or rejected).
    pub applied: i64,
    /// Commands of an HTTP type whose endpoint is being called: they may still be applied.
    pub in_flight: i64,
    /// Commands still queued: each is cancelled when a worker takes it.
    pub queued: i64,
}

impl Operators {
    /// Cancels command `id` unless it has been applied, by `actor`. A tenant's reach cancels
    /// by id whether or not sluice has a record yet; every tenant's reach (operators) needs one.
    #[tracing::instrument(skip(self), fields(reach = ?self.reach))]
    pub async fn cancel_command(&self, id: Uuid, actor: &str) -> Result<Cancelled, OpsError> {
        let mut tx = self.pool.begin().await.map_err(crate::store::StoreError::from)?;
        let taken = scheduled::take(&mut tx, self.reach.tenant(), id).await?;
        let tenant = match (&taken, self.reach.tenant()) {
            (Some(t), _) => t.tenant.clone(),
            (None, Some(t)) => t.to_owned(),
            (None, None) => cancellation::owner(&mut tx, id)
                .await?
                .ok_or_else(|| OpsError::NotFound(format!("sluice has no record of command {id}")))?,
        };
        let target = Target {
            id,
            tenant: &tenant,
            kind: taken.as_ref().map_or("", |t| t.kind.as_str()),
            submitted_at: taken.as_ref().map(|t| t.created_at),
            batch: taken.as_ref().and_then(|t| t.batch_id.zip(t.batch_index)),
        };
        let was = match cancellation::write(&mut tx, &target).await? {
            Written::Cancelled { was } => was,
            Written::Already => {
                return Ok(Cancelled { id, status: CommandStatus::Cancelled, was: None, already: true })
            }
            Written::Final(status) => return Err(OpsError::AlreadyFinal { status: status.as_str().to_owned() }),
        };
        let was = if taken.is_some() { Some(CommandStatus::Scheduled) } else { was };
        if was == Some(CommandStatus::Dead) {
            cancellation::close_dead_letters(&mut tx, &tenant, Some(id), None).await?;
        }
        let details = json!({"tenant": tenant, "was": was.map(CommandStatus::as_str)});
        audit::record(&mut tx, actor, "command.cancel", &id.to_string(), &details).await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        if let Some(batch) = cancellation::batch_of(&self.pool, &tenant, id).await? {
            batches::finish_if_done(&self.pool, &[batch]).await?;
        }
        metrics::counter!("sluice_commands_cancelled_total").increment(1);
        Ok(Cancelled { id, status: CommandStatus::Cancelled, was, already: false })
    }

    /// Cancels every command of batch `id` that has not been applied, by `actor`: the scheduled
    /// and failed ones now, the queued ones as workers take them.
    #[tracing::instrument(skip(self), fields(reach = ?self.reach))]
    pub async fn cancel_batch(&self, id: Uuid, actor: &str) -> Result<BatchCancelled, OpsError> {
        let mut tx = self.pool.begin().await.map_err(crate::store::StoreError::from)?;
        let batch = cancellation::mark_batch(&mut tx, self.reach.tenant(), id)
            .await?
            .ok_or_else(|| OpsError::NotFound(format!("no batch {id}")))?;
        if batch.finished {
            return Err(OpsError::AlreadyFinal { status: "finished".into() });
        }
        let taken = scheduled::take_batch(&mut tx, id).await?;
        cancellation::write_many(&mut tx, &batch.tenant, &taken).await?;
        cancellation::cancel_batch_rows(&mut tx, id).await?;
        cancellation::close_dead_letters(&mut tx, &batch.tenant, None, Some(id)).await?;
        let count = |statuses: &[(String, i64)], of: &[&str]| -> i64 {
            statuses.iter().filter(|(s, _)| of.contains(&s.as_str())).map(|(_, n)| n).sum()
        };
        let statuses = cancellation::batch_statuses(&mut tx, id).await?;
        let rows: i64 = statuses.iter().map(|(_, n)| n).sum();
        let done = BatchCancelled {
            id,
            cancelled: count(&statuses, &["cancelled"]),
            applied: count(&statuses, &["succeeded", "rejected"]),
            in_flight: count(&statuses, &["processing"]),
            queued: (i64::from(batch.total) - rows).max(0),
        };
        let details = json!({"tenant": batch.tenant, "cancelled": done.cancelled, "applied": done.applied});
        audit::record(&mut tx, actor, "batch.cancel", &id.to_string(), &details).await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        batches::finish_if_done(&self.pool, &[id]).await?;
        Ok(done)
    }
}
