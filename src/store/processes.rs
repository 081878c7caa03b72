//! The `processes` and `queue_controls` tables: heartbeats of running sluice processes, and
//! which queues operators paused.

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// What a process reports about itself.
#[derive(Debug, Clone)]
pub struct Heartbeat<'a> {
    pub id: Uuid,
    pub roles: &'a str,
    pub host: &'a str,
    pub pid: i32,
    pub concurrency: i32,
    pub prefetch: i32,
    pub in_flight: i32,
    pub processed: i64,
    pub accepted: i64,
    pub queue_wait_ms: Option<i64>,
    pub consuming: bool,
    /// Remote types whose circuit is not closed, `{"type": "open" | "half_open"}`.
    pub circuits: serde_json::Value,
}

/// Inserts or refreshes a process's row.
pub async fn beat(pool: &PgPool, h: &Heartbeat<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO processes
                (id, roles, host, pid, concurrency, prefetch, in_flight, processed, accepted, queue_wait_ms, consuming,
                 circuits)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO UPDATE
            SET in_flight = EXCLUDED.in_flight, processed = EXCLUDED.processed, accepted = EXCLUDED.accepted,
                queue_wait_ms = EXCLUDED.queue_wait_ms, consuming = EXCLUDED.consuming,
                circuits = EXCLUDED.circuits, last_seen = now()",
    )
    .bind(h.id)
    .bind(h.roles)
    .bind(h.host)
    .bind(h.pid)
    .bind(h.concurrency)
    .bind(h.prefetch)
    .bind(h.in_flight)
    .bind(h.processed)
    .bind(h.accepted)
    .bind(h.queue_wait_ms)
    .bind(h.consuming)
    .bind(&h.circuits)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes a process's row when it stops cleanly, and rows silent for a day.
pub async fn forget(pool: &PgPool, id: Uuid) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM processes WHERE id = $1 OR last_seen < now() - interval '1 day'")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// A process as the dashboard shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Process {
    pub id: Uuid,
    pub roles: String,
    pub host: String,
    pub pid: i32,
    pub concurrency: i32,
    pub prefetch: i32,
    pub in_flight: i32,
    pub processed: i64,
    pub accepted: i64,
    pub queue_wait_ms: Option<i64>,
    pub consuming: bool,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Whether it beat within the last 15 seconds.
    pub alive: bool,
}

/// Processes seen in the last hour, most recently seen first.
pub async fn recent(pool: &PgPool) -> Result<Vec<Process>, StoreError> {
    Ok(sqlx::query_as::<_, Process>(
        "SELECT id, roles, host, pid, concurrency, prefetch, in_flight, processed, accepted, queue_wait_ms,
                consuming, started_at, last_seen, last_seen > now() - interval '15 seconds' AS alive
           FROM processes WHERE last_seen > now() - interval '1 hour' ORDER BY last_seen DESC LIMIT 200",
    )
    .fetch_all(pool)
    .await?)
}

/// Per remote type, the live processes whose circuit for it is not closed, and in what state.
pub async fn open_circuits(pool: &PgPool) -> Result<Vec<(String, String, String)>, StoreError> {
    Ok(sqlx::query_as::<_, (String, String, String)>(
        "SELECT c.key, c.value, p.host || ':' || p.pid
           FROM processes p, jsonb_each_text(p.circuits) c
          WHERE p.last_seen > now() - interval '15 seconds' ORDER BY c.key, p.host, p.pid",
    )
    .fetch_all(pool)
    .await?)
}

/// How long the latest delivery had waited, at most over live consuming processes (ms).
pub async fn queue_wait_ms(pool: &PgPool) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar::<_, Option<i64>>(
        "SELECT max(queue_wait_ms) FROM processes WHERE consuming AND last_seen > now() - interval '15 seconds'",
    )
    .fetch_one(pool)
    .await?)
}

/// The queues operators paused (one query, however many queues are asked about).
pub async fn paused_queues(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar::<_, String>("SELECT queue FROM queue_controls WHERE paused").fetch_all(pool).await?)
}

/// Pauses or resumes `queue`, inside the transaction that audits it.
pub async fn set_paused(tx: &mut sqlx::PgConnection, queue: &str, paused: bool, by: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO queue_controls (queue, paused, changed_by) VALUES ($1, $2, $3)
         ON CONFLICT (queue) DO UPDATE SET paused = EXCLUDED.paused, changed_by = EXCLUDED.changed_by,
                                           changed_at = now()",
    )
    .bind(queue)
    .bind(paused)
    .bind(by)
    .execute(tx)
    .await?;
    Ok(())
}

/// How many worker processes beat in the last 15 seconds.
pub async fn live_workers(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM processes WHERE last_seen > now() - interval '15 seconds' AND roles LIKE '%worker%'",
    )
    .fetch_one(pool)
    .await?)
}
