//! The `batches` and `batch_callbacks` tables. A batch's progress is counted from its
//! commands' rows (indexed by batch and status), so workers never contend on a counter row.

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// A batch as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Batch {
    pub id: Uuid,
    pub total: i32,
    pub rejected_at_ingest: i32,
    pub callback_url: Option<String>,
    #[serde(skip)]
    pub callback_secret: Option<crate::config::Secret>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When it was cancelled, if it was.
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// A new batch.
pub struct NewBatch<'a> {
    pub id: Uuid,
    pub tenant: &'a str,
    pub total: i32,
    pub rejected_at_ingest: i32,
    pub callback_url: Option<&'a str>,
    pub callback_secret: Option<&'a str>,
}

/// Records a batch; false if one with this id exists (a resubmission).
pub async fn create(pool: &PgPool, b: &NewBatch<'_>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO batches (id, tenant, total, rejected_at_ingest, callback_url, callback_secret)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(b.id)
    .bind(b.tenant)
    .bind(b.total)
    .bind(b.rejected_at_ingest)
    .bind(b.callback_url)
    .bind(b.callback_secret)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets a batch's total to what was actually published: on its first submission exactly
/// that; on a resubmission (same ids) never lower than a previous submission got through.
pub async fn settle_total(pool: &PgPool, id: Uuid, published: i32, fresh: bool) -> Result<(), StoreError> {
    // A resubmission that raises the total reopens a batch that had finished early.
    sqlx::query(
        "UPDATE batches
            SET total = CASE WHEN $3 THEN $2 ELSE greatest(total, $2) END,
                finished_at = CASE WHEN NOT $3 AND $2 > total THEN NULL ELSE finished_at END
          WHERE id = $1",
    )
    .bind(id)
    .bind(published)
    .bind(fresh)
    .execute(pool)
    .await?;
    Ok(())
}

/// One batch of a tenant.
pub async fn get(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<Batch>, StoreError> {
    Ok(sqlx::query_as::<_, Batch>(
        "SELECT id, total, rejected_at_ingest, callback_url, callback_secret, created_at, finished_at, cancelled_at
           FROM batches WHERE id = $1 AND tenant = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?)
}

/// A batch as operators list it, with its progress.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Recent {
    pub id: Uuid,
    pub tenant: String,
    pub total: i32,
    pub rejected_at_ingest: i32,
    pub succeeded: i64,
    pub rejected: i64,
    pub dead: i64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The latest batches of every tenant, with counts from their commands (indexed).
pub async fn recent(pool: &PgPool, limit: i64) -> Result<Vec<Recent>, StoreError> {
    Ok(sqlx::query_as::<_, Recent>(
        "SELECT b.id, b.tenant, b.total, b.rejected_at_ingest,
                (SELECT count(*) FROM commands c WHERE c.batch_id = b.id AND c.status = 'succeeded') AS succeeded,
                (SELECT count(*) FROM commands c WHERE c.batch_id = b.id AND c.status = 'rejected') AS rejected,
                (SELECT count(*) FROM commands c WHERE c.batch_id = b.id AND c.status = 'dead') AS dead,
                b.created_at, b.finished_at
           FROM batches b ORDER BY b.created_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A batch's commands that have a row, counted by status, and when the first was taken.
pub async fn progress(pool: &PgPool, id: Uuid) -> Result<(Vec<(String, i64)>, Option<DateTime<Utc>>), StoreError> {
    let counts =
        sqlx::query_as::<_, (String, i64)>("SELECT status, count(*) FROM commands WHERE batch_id = $1 GROUP BY status")
            .bind(id)
            .fetch_all(pool)
            .await?;
    let started =
        sqlx::query_scalar::<_, Option<DateTime<Utc>>>("SELECT min(first_seen_at) FROM commands WHERE batch_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    Ok((counts, started))
}

/// An item of a batch that failed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FailedItem {
    pub index: Option<i32>,
    pub id: Uuid,
    #[sqlx(try_from = "String")]
    pub status: super::commands::CommandStatus,
    pub error: Option<String>,
}

/// Rejected and dead items, in batch order.
pub async fn failed_items(pool: &PgPool, id: Uuid, limit: i64) -> Result<Vec<FailedItem>, StoreError> {
    Ok(sqlx::query_as::<_, FailedItem>(
        "SELECT batch_index AS index, id, status, last_error AS error FROM commands
          WHERE batch_id = $1 AND status IN ('rejected', 'dead') ORDER BY batch_index LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Marks finished those of `ids` whose every command is final, and queues their callbacks.
/// A batch's `finished_at` is when its last command ended, not when this noticed. Only the
/// call that finishes a batch returns it (concurrent calls wait on the row and skip it).
pub async fn finish_if_done(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar::<_, Uuid>(
        "WITH ended AS (
            SELECT c.batch_id, count(*) AS n
              FROM commands c
             WHERE c.batch_id = ANY($1) AND c.status IN ('succeeded', 'rejected', 'dead', 'cancelled')
             GROUP BY c.batch_id
         ), due AS (
            -- Locked in id order, so settlers in two processes finishing overlapping sets of
            -- batches cannot deadlock; one that waited finds finished_at set and skips the row.
            SELECT b.id
              FROM batches b JOIN ended ON ended.batch_id = b.id
             WHERE b.finished_at IS NULL AND ended.n >= b.total
             ORDER BY b.id
               FOR UPDATE OF b
         ), finished AS (
            UPDATE batches b
               SET finished_at = (SELECT max(coalesce(c.completed_at, c.updated_at))
                                    FROM commands c WHERE c.batch_id = b.id)
              FROM due
             WHERE b.id = due.id
            RETURNING b.id, b.callback_url
         ), queued AS (
            INSERT INTO batch_callbacks (batch_id, url)
            SELECT id, callback_url FROM finished WHERE callback_url IS NOT NULL
            -- A batch reopened by a resubmission and finished again calls back again, with
            -- the final counts.
            ON CONFLICT (batch_id) DO UPDATE
               SET attempts = 0, next_attempt_at = now(), delivered_at = NULL, last_error = NULL
         )
         SELECT id FROM finished",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// Where a sweep of unfinished batches is: the `(created_at, id)` of the last one it saw.
pub type SweepCursor = Option<(DateTime<Utc>, Uuid)>;

/// The next `limit` unfinished batches after `after`, oldest first, with the cursor past them
/// (`None` once the end is reached, so the next sweep starts over).
pub async fn unfinished_after(
    pool: &PgPool,
    after: SweepCursor,
    limit: i64,
) -> Result<(Vec<Uuid>, SweepCursor), StoreError> {
    let (after_at, after_id) = after.unzip();
    let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, created_at FROM batches
          WHERE finished_at IS NULL AND ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2))
          ORDER BY created_at, id
          LIMIT $3",
    )
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let next = if i64::try_from(rows.len()).unwrap_or(i64::MAX) < limit {
        None
    } else {
        rows.last().map(|(id, at)| (*at, *id))
    };
    Ok((rows.into_iter().map(|(id, _)| id).collect(), next))
}

/// A callback due for (another) delivery attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueCallback {
    pub batch_id: Uuid,
    pub tenant: String,
    pub url: String,
    /// As stored (sealed).
    pub secret: Option<crate::config::Secret>,
    pub attempts: i32,
}

/// Leases up to `limit` due callbacks for `lease_secs`: their next attempt moves past the
/// lease, so another worker takes one only if this one died sending it.
pub async fn lease_callbacks(
    pool: &PgPool,
    limit: i64,
    max_attempts: i32,
    lease_secs: i64,
) -> Result<Vec<DueCallback>, StoreError> {
    Ok(sqlx::query_as::<_, DueCallback>(
        "WITH due AS (
            SELECT batch_id FROM batch_callbacks
             WHERE delivered_at IS NULL AND attempts < $2 AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT $1
             FOR UPDATE SKIP LOCKED
         ), leased AS (
            UPDATE batch_callbacks c SET next_attempt_at = now() + make_interval(secs => $3)
              FROM due WHERE c.batch_id = due.batch_id
            RETURNING c.batch_id, c.url, c.attempts
         )
         SELECT l.batch_id, b.tenant, l.url, b.callback_secret AS secret, l.attempts
           FROM leased l JOIN batches b ON b.id = l.batch_id",
    )
    .bind(limit)
    .bind(max_attempts)
    .bind(lease_secs as f64)
    .fetch_all(pool)
    .await?)
}

/// Records a callback attempt: delivered, or failed with when to try again.
pub async fn callback_attempted(
    pool: &PgPool,
    batch_id: Uuid,
    leased_attempts: i32,
    error: Option<&str>,
    retry_in_secs: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE batch_callbacks
            SET attempts = attempts + 1, last_error = $2,
                delivered_at = CASE WHEN $2 IS NULL THEN now() END,
                next_attempt_at = now() + make_interval(secs => $3)
          -- Only the attempt this lease was for: a worker whose lease ran out must not undo
          -- another's delivery.
          WHERE batch_id = $1 AND delivered_at IS NULL AND attempts = $4",
    )
    .bind(batch_id)
    .bind(error)
    .bind(retry_in_secs as f64)
    .bind(leased_attempts)
    .execute(pool)
    .await?;
    Ok(())
}

/// Where a batch's callback stands, for its status.
pub async fn callback_state(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<(i32, Option<DateTime<Utc>>, Option<String>)>, StoreError> {
    Ok(sqlx::query_as("SELECT attempts, delivered_at, last_error FROM batch_callbacks WHERE batch_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// Every batch's stored (sealed) callback secret.
pub async fn stored_callback_secrets(pool: &PgPool) -> Result<Vec<(Uuid, String)>, StoreError> {
    Ok(sqlx::query_as("SELECT id, callback_secret FROM batches WHERE callback_secret IS NOT NULL")
        .fetch_all(pool)
        .await?)
}

/// Replaces a batch's stored callback secret if it is still `was`.
pub async fn swap_callback_secret(pool: &PgPool, id: Uuid, was: &str, now: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE batches SET callback_secret = $3 WHERE id = $1 AND callback_secret = $2")
        .bind(id)
        .bind(was)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}
