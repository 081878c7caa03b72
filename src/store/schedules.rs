//! The `schedules` and `schedule_fires` tables: recurring schedules and the ticks they fired.

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Ticks kept per schedule in `schedule_fires`.
const FIRES_KEPT: i64 = 50;

/// A schedule as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Schedule {
    pub tenant: String,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub command_type: String,
    pub payload: Value,
    pub priority: String,
    pub catch_up: String,
    pub paused: bool,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A schedule to create or replace.
#[derive(Debug)]
pub struct NewSchedule<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
    pub cron: &'a str,
    pub timezone: &'a str,
    pub command_type: &'a str,
    pub payload: &'a Value,
    pub priority: &'a str,
    pub catch_up: &'a str,
    pub paused: bool,
    pub next_fire_at: Option<DateTime<Utc>>,
}

/// The columns of [`Schedule`], spliced into the queries at compile time.
macro_rules! columns {
    () => {
        "tenant, name, cron, timezone, command_type, payload, priority, catch_up, paused, next_fire_at, created_at, \
         updated_at"
    };
}

/// Creates or replaces a schedule; the row, and whether it is new.
pub async fn upsert(tx: &mut PgConnection, s: &NewSchedule<'_>) -> Result<(Schedule, bool), StoreError> {
    #[derive(sqlx::FromRow)]
    struct Upserted {
        #[sqlx(flatten)]
        schedule: Schedule,
        created: bool,
    }
    let row = sqlx::query_as::<_, Upserted>(concat!(
        "INSERT INTO schedules (tenant, name, cron, timezone, command_type, payload, priority, catch_up, paused,
                                next_fire_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (tenant, name) DO UPDATE
            SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, command_type = EXCLUDED.command_type,
                payload = EXCLUDED.payload, priority = EXCLUDED.priority, catch_up = EXCLUDED.catch_up,
                paused = EXCLUDED.paused, next_fire_at = EXCLUDED.next_fire_at, updated_at = now()
         RETURNING ",
        columns!(),
        ", (xmax = 0) AS created"
    ))
    .bind(s.tenant)
    .bind(s.name)
    .bind(s.cron)
    .bind(s.timezone)
    .bind(s.command_type)
    .bind(s.payload)
    .bind(s.priority)
    .bind(s.catch_up)
    .bind(s.paused)
    .bind(s.next_fire_at)
    .fetch_one(tx)
    .await?;
    Ok((row.schedule, row.created))
}

/// One tenant's schedule.
pub async fn get(pool: &PgPool, tenant: &str, name: &str) -> Result<Option<Schedule>, StoreError> {
    Ok(sqlx::query_as::<_, Schedule>(concat!("SELECT ", columns!(), " FROM schedules WHERE tenant = $1 AND name = $2"))
        .bind(tenant)
        .bind(name)
        .fetch_optional(pool)
        .await?)
}

/// Schedules of `tenant` (`None`: every tenant's), by tenant and name.
pub async fn list(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<Schedule>, StoreError> {
    Ok(sqlx::query_as::<_, Schedule>(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules WHERE ($1::text IS NULL OR tenant = $1) ORDER BY tenant, name"
    ))
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// Deletes a schedule (and its fires); whether there was one.
pub async fn delete(tx: &mut PgConnection, tenant: &str, name: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM schedules WHERE tenant = $1 AND name = $2")
        .bind(tenant)
        .bind(name)
        .execute(tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Locks up to `limit` due, unpaused schedules, skipping those another process holds.
pub async fn lock_due(tx: &mut PgConnection, limit: i64) -> Result<Vec<Schedule>, StoreError> {
    Ok(sqlx::query_as::<_, Schedule>(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules WHERE NOT paused AND next_fire_at <= now()
          ORDER BY next_fire_at LIMIT $1 FOR UPDATE SKIP LOCKED"
    ))
    .bind(limit)
    .fetch_all(tx)
    .await?)
}

/// Moves a schedule's next tick on.
pub async fn advance(
    tx: &mut PgConnection,
    tenant: &str,
    name: &str,
    next: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE schedules SET next_fire_at = $3 WHERE tenant = $1 AND name = $2")
        .bind(tenant)
        .bind(name)
        .bind(next)
        .execute(tx)
        .await?;
    Ok(())
}

/// Records that `tick` fired `command_id` (standing for `missed` more), keeping the latest few.
pub async fn record_fire(
    tx: &mut PgConnection,
    tenant: &str,
    name: &str,
    tick: DateTime<Utc>,
    command_id: Uuid,
    missed: i32,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO schedule_fires (tenant, name, tick, command_id, missed) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant, name, tick) DO NOTHING",
    )
    .bind(tenant)
    .bind(name)
    .bind(tick)
    .bind(command_id)
    .bind(missed)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM schedule_fires WHERE tenant = $1 AND name = $2 AND tick < (
            SELECT tick FROM schedule_fires WHERE tenant = $1 AND name = $2 ORDER BY tick DESC OFFSET $3 LIMIT 1)",
    )
    .bind(tenant)
    .bind(name)
    .bind(FIRES_KEPT - 1)
    .execute(tx)
    .await?;
    Ok(())
}

/// A tick a schedule fired, with how its command stands.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Fire {
    pub tick: DateTime<Utc>,
    pub command_id: Uuid,
    pub fired_at: DateTime<Utc>,
    /// Ticks missed while nothing ran that this one stood for (catch_up once) or that were
    /// dropped before it (catch_up skip).
    pub missed: i32,
    /// The command's status: `pending` until a worker has taken it.
    pub status: String,
}

/// The latest `limit` ticks of a schedule, newest first.
pub async fn recent_fires(pool: &PgPool, tenant: &str, name: &str, limit: i64) -> Result<Vec<Fire>, StoreError> {
    Ok(sqlx::query_as::<_, Fire>(
        "SELECT f.tick, f.command_id, f.fired_at, f.missed, coalesce(c.status, 'pending') AS status
           FROM schedule_fires f LEFT JOIN commands c ON c.tenant = f.tenant AND c.id = f.command_id
          WHERE f.tenant = $1 AND f.name = $2 ORDER BY f.tick DESC LIMIT $3",
    )
    .bind(tenant)
    .bind(name)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
