//! The `scheduled_commands` table: commands accepted for a later `run_at`, until the
//! dispatcher publishes them (an outbox; see the migration that creates it).

use super::StoreError;
use crate::command::Envelope;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A command waiting for its time, as stored.
#[derive(Debug, Clone)]
pub struct NewScheduled<'a> {
    pub cmd: &'a Envelope,
    pub run_at: DateTime<Utc>,
    pub traceparent: &'a str,
}

/// Stores commands for later; an id stored already (a retried submission) is left as it was.
/// Returns how many were new.
pub async fn insert_many(pool: &PgPool, rows: &[NewScheduled<'_>]) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.cmd.id).collect();
    let tenants: Vec<&str> = rows.iter().map(|r| r.cmd.tenant.as_str()).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.cmd.kind.as_str()).collect();
    let run_at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.run_at).collect();
    let bodies: Vec<Vec<u8>> = rows.iter().map(|r| r.cmd.encode()).collect();
    let traceparents: Vec<&str> = rows.iter().map(|r| r.traceparent).collect();
    let batch_ids: Vec<Option<Uuid>> = rows.iter().map(|r| r.cmd.batch.map(|b| b.id)).collect();
    let batch_indexes: Vec<Option<i32>> =
        rows.iter().map(|r| r.cmd.batch.map(|b| i32::try_from(b.index).unwrap_or(i32::MAX))).collect();
    let done = sqlx::query(
        "INSERT INTO scheduled_commands (id, tenant, type, run_at, body, traceparent, batch_id, batch_index)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::bytea[], $6::text[],
                              $7::uuid[], $8::int[])
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&kinds)
    .bind(&run_at)
    .bind(&bodies)
    .bind(&traceparents)
    .bind(&batch_ids)
    .bind(&batch_indexes)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// A scheduled command as its tenant reads it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Scheduled {
    pub id: Uuid,
    pub tenant: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub batch_id: Option<Uuid>,
}

/// One tenant's scheduled command (`tenant` `None`: any tenant's).
pub async fn find(pool: &PgPool, tenant: Option<&str>, id: Uuid) -> Result<Option<Scheduled>, StoreError> {
    Ok(sqlx::query_as::<_, Scheduled>(
        "SELECT id, tenant, type, run_at, created_at, batch_id FROM scheduled_commands
          WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?)
}

/// The soonest scheduled commands (any tenant's), for the dashboard.
pub async fn soonest(pool: &PgPool, limit: i64) -> Result<Vec<Scheduled>, StoreError> {
    Ok(sqlx::query_as::<_, Scheduled>(
        "SELECT id, tenant, type, run_at, created_at, batch_id FROM scheduled_commands ORDER BY run_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// How many commands wait for their time, and how many of them are due already.
pub async fn counts(pool: &PgPool) -> Result<(i64, i64), StoreError> {
    Ok(sqlx::query_as::<_, (i64, i64)>(
        "SELECT count(*), count(*) FILTER (WHERE run_at <= now()) FROM scheduled_commands",
    )
    .fetch_one(pool)
    .await?)
}

/// A due command the dispatcher holds locked until it commits.
#[derive(Debug, sqlx::FromRow)]
pub struct Due {
    pub id: Uuid,
    pub run_at: DateTime<Utc>,
    pub body: Vec<u8>,
    pub traceparent: String,
}

/// Locks up to `limit` due commands, soonest first, skipping those another dispatcher holds.
pub async fn lock_due(tx: &mut PgConnection, limit: i64) -> Result<Vec<Due>, StoreError> {
    Ok(sqlx::query_as::<_, Due>(
        "SELECT id, run_at, body, traceparent FROM scheduled_commands
          WHERE run_at <= now() ORDER BY run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(tx)
    .await?)
}

/// Removes dispatched commands.
pub async fn delete(tx: &mut PgConnection, ids: &[Uuid]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM scheduled_commands WHERE id = ANY($1)").bind(ids).execute(tx).await?;
    Ok(())
}

/// The earliest `run_at` waiting, if any (the dispatcher sleeps until it or its poll interval).
pub async fn next_run_at(pool: &PgPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(sqlx::query_scalar::<_, Option<DateTime<Utc>>>("SELECT min(run_at) FROM scheduled_commands")
        .fetch_one(pool)
        .await?)
}

/// A scheduled command taken out by a cancel.
#[derive(Debug, sqlx::FromRow)]
pub struct Taken {
    pub id: Uuid,
    pub tenant: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub batch_id: Option<Uuid>,
    pub batch_index: Option<i32>,
}

/// Deletes one scheduled command of `tenant` (`None`: any tenant's), waiting for a dispatcher
/// that holds it; `None` once it has been published (or never was scheduled).
pub async fn take(tx: &mut PgConnection, tenant: Option<&str>, id: Uuid) -> Result<Option<Taken>, StoreError> {
    Ok(sqlx::query_as::<_, Taken>(
        "DELETE FROM scheduled_commands WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)
         RETURNING id, tenant, type, created_at, batch_id, batch_index",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(tx)
    .await?)
}

/// Deletes every scheduled command of a batch.
pub async fn take_batch(tx: &mut PgConnection, batch_id: Uuid) -> Result<Vec<Taken>, StoreError> {
    Ok(sqlx::query_as::<_, Taken>(
        "DELETE FROM scheduled_commands WHERE batch_id = $1
         RETURNING id, tenant, type, created_at, batch_id, batch_index",
    )
    .bind(batch_id)
    .fetch_all(tx)
    .await?)
}
