//! Cancelling commands and batches: the `commands` row is where a cancel and a worker meet.
//! Both write it; its primary key (tenant, id) orders them, so one of them finds the other's
//! row, and a tenant's cancel can only ever meet its own tenant's command.

use super::commands::CommandStatus;
use super::StoreError;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// The command a cancel is about, as far as it is known.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub id: Uuid,
    pub tenant: &'a str,
    /// Empty when no worker has seen the command yet (the row is a tombstone until it comes).
    pub kind: &'a str,
    pub submitted_at: Option<DateTime<Utc>>,
    pub batch: Option<(Uuid, i32)>,
}

/// What writing the cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The row now says cancelled; `was` is what it said before (`None`: there was no row).
    Cancelled { was: Option<CommandStatus> },
    /// Cancelled before: nothing changed.
    Already,
    /// Applied, or a remote call is under way: cannot be cancelled.
    Final(CommandStatus),
}

/// Writes the cancel of `t` into its `commands` row (rows are the tenant's own: the key is
/// tenant and id). A row that is retrying or dead becomes cancelled; a missing one becomes a
/// tombstone the worker's inbox insert will meet. Succeeded, rejected and processing rows are
/// left alone.
pub async fn write(tx: &mut PgConnection, t: &Target<'_>) -> Result<Written, StoreError> {
    let was: Option<String> =
        sqlx::query_scalar("SELECT status FROM commands WHERE tenant = $1 AND id = $2 FOR UPDATE")
            .bind(t.tenant)
            .bind(t.id)
            .fetch_optional(&mut *tx)
            .await?;
    let was = was.as_deref().and_then(CommandStatus::parse);
    let changed = sqlx::query(
        "INSERT INTO commands (id, tenant, type, status, attempts, submitted_at, completed_at, batch_id, batch_index)
         VALUES ($1, $2, $3, 'cancelled', 0, coalesce($4, now()), now(), $5, $6)
         ON CONFLICT (tenant, id) DO UPDATE
            SET status = 'cancelled', updated_at = now(), completed_at = now()
          WHERE commands.status IN ('retrying', 'dead')
         RETURNING id",
    )
    .bind(t.id)
    .bind(t.tenant)
    .bind(t.kind)
    .bind(t.submitted_at)
    .bind(t.batch.map(|b| b.0))
    .bind(t.batch.map(|b| b.1))
    .fetch_optional(&mut *tx)
    .await?;
    if changed.is_some() {
        return Ok(Written::Cancelled { was });
    }
    // Read again: a worker's row may have appeared (and committed) since the first read.
    let now: Option<String> = sqlx::query_scalar("SELECT status FROM commands WHERE tenant = $1 AND id = $2")
        .bind(t.tenant)
        .bind(t.id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(match now.as_deref().and_then(CommandStatus::parse) {
        Some(CommandStatus::Cancelled) => Written::Already,
        Some(other) => Written::Final(other),
        // The insert conflicted, so a row was there; a prune between the two reads is all
        // that could remove it.
        None => Written::Final(CommandStatus::Pruned),
    })
}

/// The tenant of a command's row, whoever's it is (the first, should tenants share an id).
pub async fn owner(tx: &mut PgConnection, id: Uuid) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT tenant FROM commands WHERE id = $1 AND type <> '' ORDER BY first_seen_at LIMIT 1")
        .bind(id)
        .fetch_optional(tx)
        .await?)
}

/// The batch a command's row belongs to.
pub async fn batch_of(pool: &sqlx::PgPool, tenant: &str, id: Uuid) -> Result<Option<Uuid>, StoreError> {
    Ok(sqlx::query_scalar::<_, Option<Uuid>>("SELECT batch_id FROM commands WHERE tenant = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .flatten())
}

/// Tombstones for commands of one tenant taken out of the schedule before they ran (a
/// batch's): each row becomes cancelled unless it is final already.
pub async fn write_many(
    tx: &mut PgConnection,
    tenant: &str,
    taken: &[super::scheduled::Taken],
) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = taken.iter().map(|t| t.id).collect();
    let kinds: Vec<&str> = taken.iter().map(|t| t.kind.as_str()).collect();
    let created: Vec<DateTime<Utc>> = taken.iter().map(|t| t.created_at).collect();
    let batch_ids: Vec<Option<Uuid>> = taken.iter().map(|t| t.batch_id).collect();
    let batch_indexes: Vec<Option<i32>> = taken.iter().map(|t| t.batch_index).collect();
    sqlx::query(
        "INSERT INTO commands (id, tenant, type, status, attempts, submitted_at, completed_at, batch_id, batch_index)
         SELECT u.id, $1, u.type, 'cancelled', 0, u.created, now(), u.batch_id, u.batch_index
           FROM unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::uuid[], $6::int[])
             AS u(id, type, created, batch_id, batch_index)
         ON CONFLICT (tenant, id) DO UPDATE SET status = 'cancelled', updated_at = now(), completed_at = now()
          WHERE commands.status IN ('retrying', 'dead')",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&kinds)
    .bind(&created)
    .bind(&batch_ids)
    .bind(&batch_indexes)
    .execute(tx)
    .await?;
    Ok(())
}

/// A batch a cancel marked.
#[derive(Debug, sqlx::FromRow)]
pub struct MarkedBatch {
    pub tenant: String,
    pub total: i32,
    pub finished: bool,
}

/// Marks a batch cancelled (its row locked until the caller commits, so workers applying its
/// commands wait, or finished first). `None` when `tenant` (`None`: any) has no such batch.
pub async fn mark_batch(
    tx: &mut PgConnection,
    tenant: Option<&str>,
    id: Uuid,
) -> Result<Option<MarkedBatch>, StoreError> {
    Ok(sqlx::query_as::<_, MarkedBatch>(
        "UPDATE batches SET cancelled_at = coalesce(cancelled_at, now())
          WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)
         RETURNING tenant, total, finished_at IS NOT NULL AS finished",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(tx)
    .await?)
}

/// Cancels every command of a batch that has a row and is retrying or dead; how many.
pub async fn cancel_batch_rows(tx: &mut PgConnection, batch_id: Uuid) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE commands SET status = 'cancelled', updated_at = now(), completed_at = now()
          WHERE batch_id = $1 AND status IN ('retrying', 'dead')",
    )
    .bind(batch_id)
    .execute(tx)
    .await?;
    Ok(done.rows_affected())
}

/// How a batch's rows stand: `(status, count)` pairs.
pub async fn batch_statuses(tx: &mut PgConnection, batch_id: Uuid) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as::<_, (String, i64)>("SELECT status, count(*) FROM commands WHERE batch_id = $1 GROUP BY status")
        .bind(batch_id)
        .fetch_all(tx)
        .await?)
}

/// Closes the open dead letters of a cancelled command, or of every cancelled command of a
/// batch (they could only be replayed into nothing now), releasing the ordering keys they
/// halted; how many.
pub async fn close_dead_letters(
    tx: &mut PgConnection,
    tenant: &str,
    command: Option<Uuid>,
    batch: Option<Uuid>,
) -> Result<u64, StoreError> {
    let done: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE dead_letters SET state = 'discarded', discarded_at = now()
          WHERE state = 'open' AND tenant = $3
            AND (command_id = $1
                 OR command_id IN (SELECT id FROM commands WHERE batch_id = $2 AND status = 'cancelled'))
         RETURNING id",
    )
    .bind(command)
    .bind(batch)
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    super::ordering::release_dead_letters(tx, &done).await?;
    Ok(done.len() as u64)
}

/// Which of `batch_ids` are cancelled, read under `FOR SHARE` so that a cancel of any of them
/// waits for the caller's commit (or the caller sees it).
pub async fn cancelled_batches(tx: &mut PgConnection, batch_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
    let rows: Vec<(Uuid, bool)> =
        sqlx::query_as("SELECT id, cancelled_at IS NOT NULL FROM batches WHERE id = ANY($1) ORDER BY id FOR SHARE")
            .bind(batch_ids)
            .fetch_all(tx)
            .await?;
    Ok(rows.into_iter().filter_map(|(id, c)| c.then_some(id)).collect())
}
