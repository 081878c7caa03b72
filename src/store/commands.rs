//! The `commands` table: inbox and status of every command a worker has taken.

use super::StoreError;
use crate::command::Envelope;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Where a command stands, as producers read it. Only `processing` to `cancelled` are stored
/// here: a command waiting for its `run_at` reads as `scheduled` (from `scheduled_commands`),
/// one without a row as `pending` (no worker has taken it yet) or, once its id is older than
/// the retention period, `pruned`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    #[default]
    Pending,
    Pruned,
    Scheduled,
    Processing,
    Succeeded,
    Rejected,
    Retrying,
    Dead,
    Cancelled,
}

impl CommandStatus {
    /// The states a command's row can hold, in the order the dashboard lists them.
    pub const STORED: [Self; 6] =
        [Self::Succeeded, Self::Rejected, Self::Retrying, Self::Dead, Self::Cancelled, Self::Processing];

    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Pruned => "pruned",
            Self::Scheduled => "scheduled",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Rejected => "rejected",
            Self::Retrying => "retrying",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or shown word.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Pruned, Self::Scheduled].into_iter().chain(Self::STORED).find(|x| x.as_str() == s)
    }
}

impl TryFrom<String> for CommandStatus {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown command status {s:?}"))
    }
}

impl std::fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a command ended, as recorded in its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    Succeeded,
    Rejected,
}

impl FinalStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Rejected => "rejected",
        }
    }
}

/// A command's status as producers read it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CommandRow {
    pub id: Uuid,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: String,
    #[sqlx(try_from = "String")]
    pub status: CommandStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub result: Option<Value>,
    pub submitted_at: DateTime<Utc>,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Every failed attempt: `{"attempt", "error", "at"}`, oldest first.
    pub errors: Value,
}

/// Records the final outcome; this insert is the inbox. Returns false when the command was
/// already completed (a redelivery or a duplicate publish): the caller must roll back so the
/// business writes made in this transaction do not happen a second time.
pub async fn record_outcome(
    tx: &mut PgConnection,
    cmd: &Envelope,
    attempt: u32,
    status: FinalStatus,
    result: Option<&Value>,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "INSERT INTO commands
                (id, tenant, type, status, attempts, last_error, result, submitted_at, completed_at, batch_id, batch_index)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp(), $9, $10)
         ON CONFLICT (tenant, id) DO UPDATE
            SET status = EXCLUDED.status, attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error,
                result = EXCLUDED.result, updated_at = clock_timestamp(), completed_at = clock_timestamp()
          WHERE commands.status NOT IN ('succeeded', 'rejected', 'cancelled')
         RETURNING id",
    )
    .bind(cmd.id)
    .bind(&cmd.tenant)
    .bind(&cmd.kind)
    .bind(status.as_str())
    .bind(attempt_i32(attempt))
    .bind(error)
    .bind(result)
    .bind(cmd.submitted_at)
    .bind(cmd.batch.map(|b| b.id))
    .bind(cmd.batch.map(|b| batch_index(b.index)))
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.is_some())
}

/// Outcomes to record in one statement, column by column.
#[derive(Debug, Default)]
pub struct Outcomes {
    ids: Vec<Uuid>,
    tenants: Vec<String>,
    kinds: Vec<String>,
    statuses: Vec<&'static str>,
    attempts: Vec<i32>,
    errors: Vec<Option<String>>,
    results: Vec<Option<Value>>,
    submitted: Vec<DateTime<Utc>>,
    batch_ids: Vec<Option<Uuid>>,
    batch_indexes: Vec<Option<i32>>,
}

impl Outcomes {
    /// Adds one command's outcome.
    pub fn push(
        &mut self,
        cmd: &Envelope,
        attempt: u32,
        status: FinalStatus,
        result: Option<Value>,
        error: Option<String>,
    ) {
        self.ids.push(cmd.id);
        self.tenants.push(cmd.tenant.clone());
        self.kinds.push(cmd.kind.clone());
        self.statuses.push(status.as_str());
        self.attempts.push(attempt_i32(attempt));
        self.errors.push(error);
        self.results.push(result);
        self.submitted.push(cmd.submitted_at);
        self.batch_ids.push(cmd.batch.map(|b| b.id));
        self.batch_indexes.push(cmd.batch.map(|b| batch_index(b.index)));
    }

    /// How many outcomes are held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// [`record_outcome`] for many commands in one statement (ids must be distinct). Returns how
/// many were fresh; fewer than `len()` means some had already completed.
pub async fn record_outcomes(tx: &mut PgConnection, o: &Outcomes) -> Result<usize, StoreError> {
    let done = sqlx::query(
        "INSERT INTO commands
                (id, tenant, type, status, attempts, last_error, result, submitted_at, completed_at, batch_id, batch_index)
         SELECT id, tenant, type, status, attempts, last_error, result, submitted_at, clock_timestamp(), batch_id, batch_index
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::jsonb[],
                       $8::timestamptz[], $9::uuid[], $10::int[])
             AS u(id, tenant, type, status, attempts, last_error, result, submitted_at, batch_id, batch_index)
         ON CONFLICT (tenant, id) DO UPDATE
            SET status = EXCLUDED.status, attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error,
                result = EXCLUDED.result, updated_at = clock_timestamp(), completed_at = clock_timestamp()
          WHERE commands.status NOT IN ('succeeded', 'rejected', 'cancelled')",
    )
    .bind(&o.ids)
    .bind(&o.tenants)
    .bind(&o.kinds)
    .bind(&o.statuses)
    .bind(&o.attempts)
    .bind(&o.errors)
    .bind(&o.results)
    .bind(&o.submitted)
    .bind(&o.batch_ids)
    .bind(&o.batch_indexes)
    .execute(tx)
    .await?;
    Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
}

/// Marks a command as waiting for a retry (unless it already completed).
pub async fn mark_retrying(pool: &PgPool, cmd: &Envelope, attempt: u32, error: &str) -> Result<(), StoreError> {
    upsert_unfinished(pool, cmd, "retrying", attempt, error).await
}

/// Marks a command as dead-lettered (unless it already completed).
pub async fn mark_dead(tx: &mut PgConnection, cmd: &Envelope, attempt: u32, error: &str) -> Result<(), StoreError> {
    upsert_unfinished(&mut *tx, cmd, "dead", attempt, error).await
}

/// `last_error` (which the tenant reads) gets the public form of `error`; the attempt's entry in
/// `errors` (the operators' dead-letter view) keeps it whole.
async fn upsert_unfinished<'e>(
    db: impl sqlx::PgExecutor<'e>,
    cmd: &Envelope,
    status: &str,
    attempt: u32,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO commands (id, tenant, type, status, attempts, last_error, submitted_at, errors, batch_id, batch_index)
         VALUES ($1, $2, $3, $4, $5, $7, $8,
                 jsonb_build_array(jsonb_build_object('attempt', $5, 'error', $6, 'at', now())), $9, $10)
         ON CONFLICT (tenant, id) DO UPDATE
            SET status = EXCLUDED.status, attempts = EXCLUDED.attempts,
                last_error = EXCLUDED.last_error, updated_at = now(),
                errors = commands.errors || EXCLUDED.errors
          WHERE commands.status NOT IN ('succeeded', 'rejected', 'cancelled')",
    )
    .bind(cmd.id)
    .bind(&cmd.tenant)
    .bind(&cmd.kind)
    .bind(status)
    .bind(attempt_i32(attempt))
    .bind(error)
    .bind(super::public_error(error).as_ref())
    .bind(cmd.submitted_at)
    .bind(cmd.batch.map(|b| b.id))
    .bind(cmd.batch.map(|b| batch_index(b.index)))
    .execute(db)
    .await?;
    Ok(())
}

/// What stops a worker from applying `cmd`: an outcome already recorded (succeeded or
/// rejected), or a cancel. Asked before a remote call and after a failed attempt.
pub async fn settled(pool: &PgPool, cmd: &Envelope) -> Result<Option<CommandStatus>, StoreError> {
    let status = sqlx::query_scalar::<_, String>(
        "SELECT status FROM commands
          WHERE tenant = $2 AND id = $1 AND status IN ('succeeded', 'rejected', 'cancelled')",
    )
    .bind(cmd.id)
    .bind(&cmd.tenant)
    .fetch_optional(pool)
    .await?;
    Ok(status.as_deref().and_then(CommandStatus::parse))
}

/// Marks a remote command `processing` before its endpoint is called, so that a cancel from
/// then on answers 409 instead of winning over a call already under way. `None` when it was
/// claimable; otherwise what stops it (see [`settled`]).
pub async fn claim(pool: &PgPool, cmd: &Envelope, attempt: u32) -> Result<Option<CommandStatus>, StoreError> {
    // The batch row is read under FOR SHARE, so a batch's cancel either came first (and is
    // seen) or waits for this claim, and then counts the command as in flight.
    let claimed = sqlx::query(
        "WITH batch AS (
            SELECT cancelled_at FROM batches WHERE id = $6 FOR SHARE
         )
         INSERT INTO commands (id, tenant, type, status, attempts, submitted_at, batch_id, batch_index)
         SELECT $1, $2, $3, 'processing', $4, $5, $6, $7
          WHERE NOT EXISTS (SELECT 1 FROM batch WHERE cancelled_at IS NOT NULL)
         ON CONFLICT (tenant, id) DO UPDATE
            SET status = 'processing', attempts = EXCLUDED.attempts, updated_at = now(), type = EXCLUDED.type
          WHERE commands.status NOT IN ('succeeded', 'rejected', 'cancelled')
         RETURNING id",
    )
    .bind(cmd.id)
    .bind(&cmd.tenant)
    .bind(&cmd.kind)
    .bind(attempt_i32(attempt))
    .bind(cmd.submitted_at)
    .bind(cmd.batch.map(|b| b.id))
    .bind(cmd.batch.map(|b| batch_index(b.index)))
    .fetch_optional(pool)
    .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    if let Some(status) = settled(pool, cmd).await? {
        if status == CommandStatus::Cancelled {
            name_tombstone(pool, cmd).await?;
        }
        return Ok(Some(status));
    }
    if cmd.batch.is_some() {
        // Its batch was cancelled: record it so, for the batch's progress.
        let mut tx = pool.begin().await?;
        mark_cancelled(&mut tx, cmd, attempt).await?;
        tx.commit().await?;
        return Ok(Some(CommandStatus::Cancelled));
    }
    // The row changed in between; the caller puts the delivery aside and tries again.
    Ok(Some(CommandStatus::Processing))
}

/// Records `cmd` as cancelled because its batch was (the row the batch's progress counts). A
/// row being called (`processing`, a duplicate delivery's) is left to that call's outcome.
pub async fn mark_cancelled(tx: &mut PgConnection, cmd: &Envelope, attempt: u32) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO commands
                (id, tenant, type, status, attempts, submitted_at, completed_at, batch_id, batch_index)
         VALUES ($1, $2, $3, 'cancelled', $4, $5, now(), $6, $7)
         ON CONFLICT (tenant, id) DO UPDATE
            SET status = 'cancelled', updated_at = now(), completed_at = now(), type = EXCLUDED.type
          WHERE commands.status NOT IN ('succeeded', 'rejected', 'cancelled', 'processing')",
    )
    .bind(cmd.id)
    .bind(&cmd.tenant)
    .bind(&cmd.kind)
    .bind(attempt_i32(attempt))
    .bind(cmd.submitted_at)
    .bind(cmd.batch.map(|b| b.id))
    .bind(cmd.batch.map(|b| batch_index(b.index)))
    .execute(tx)
    .await?;
    Ok(())
}

/// Fills in a cancel's tombstone once the command itself arrives: its type, and its batch (so
/// the batch's progress counts it and the batch can finish).
pub async fn name_tombstone(pool: &PgPool, cmd: &Envelope) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE commands SET type = $3, submitted_at = $4, batch_id = $5, batch_index = $6
          WHERE tenant = $2 AND id = $1 AND status = 'cancelled' AND type = ''",
    )
    .bind(cmd.id)
    .bind(&cmd.tenant)
    .bind(&cmd.kind)
    .bind(cmd.submitted_at)
    .bind(cmd.batch.map(|b| b.id))
    .bind(cmd.batch.map(|b| batch_index(b.index)))
    .execute(pool)
    .await?;
    Ok(())
}

/// One command of one tenant.
pub async fn find(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<CommandRow>, StoreError> {
    Ok(sqlx::query_as::<_, CommandRow>(
        "SELECT id, type, status, attempts, last_error, result, submitted_at, first_seen_at, updated_at, completed_at,
                errors
           FROM commands WHERE id = $1 AND tenant = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?)
}

/// Every failed attempt of a command of `tenant`, oldest first; `[]` if it has no row.
pub async fn errors_of(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Value, StoreError> {
    Ok(sqlx::query_scalar::<_, Value>("SELECT errors FROM commands WHERE tenant = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .unwrap_or_else(|| Value::Array(Vec::new())))
}

/// A command as operators see it: any tenant's.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OperatorRow {
    pub tenant: String,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub command: CommandRow,
}

/// What operators search recent commands by; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub id: Option<Uuid>,
    pub kind: Option<String>,
    pub status: Option<CommandStatus>,
}

/// A page of operator rows, and whether more follow it.
#[derive(Debug)]
pub struct SearchPage {
    pub rows: Vec<OperatorRow>,
    /// The page stopped at its row limit or its byte budget, not at the end.
    pub more: bool,
}

#[derive(sqlx::FromRow)]
struct SearchRow {
    #[sqlx(flatten)]
    row: OperatorRow,
    fetched: i64,
}

/// The most recently updated commands matching `search`, newest first, after `before`
/// (a keyset cursor: `(updated_at, id)` of the last row of the previous page). Besides `limit`
/// rows a page stops at `max_bytes` of results and errors (as JSON text), counted by the
/// database; the row that crosses it is kept.
pub async fn search(
    pool: &PgPool,
    search: &Search,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
    max_bytes: i64,
) -> Result<SearchPage, StoreError> {
    let (before_at, before_id) = before.unzip();
    let found = sqlx::query_as::<_, SearchRow>(
        "SELECT tenant, id, type, status, attempts, last_error, result, submitted_at, first_seen_at, updated_at,
                completed_at, errors, fetched FROM (
           SELECT p.*, count(*) OVER () AS fetched,
                  sum(p.size) OVER (ORDER BY updated_at DESC, id DESC) - p.size AS before_bytes
             FROM (SELECT tenant, id, type, status, attempts, last_error, result, submitted_at, first_seen_at,
                          updated_at, completed_at, errors,
                          coalesce(octet_length(result::text), 0) + coalesce(octet_length(errors::text), 0) AS size
                     FROM commands
                    WHERE ($1::uuid IS NULL OR id = $1)
                      AND ($2::text IS NULL OR type = $2)
                      AND ($3::text IS NULL OR status = $3)
                      AND ($4::timestamptz IS NULL OR (updated_at, id) < ($4, $5))
                    ORDER BY updated_at DESC, id DESC
                    LIMIT $6) p
         ) s
         WHERE before_bytes < $7
         ORDER BY updated_at DESC, id DESC",
    )
    // Unnamed statement: planned with the actual filters, so each picks its index.
    .persistent(false)
    .bind(search.id)
    .bind(&search.kind)
    .bind(search.status.map(CommandStatus::as_str))
    .bind(before_at)
    .bind(before_id)
    .bind(limit)
    .bind(max_bytes)
    .fetch_all(pool)
    .await?;
    let fetched = found.first().map_or(0, |r| r.fetched);
    let rows: Vec<OperatorRow> = found.into_iter().map(|r| r.row).collect();
    let more = (rows.len() as i64) < fetched || fetched == limit;
    Ok(SearchPage { rows, more })
}

fn batch_index(index: u32) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

fn attempt_i32(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}
