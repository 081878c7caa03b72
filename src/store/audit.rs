//! The `audit_log` table: every operator action, who did it and when.

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// One recorded action.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Entry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: Value,
}

/// Records an action inside the transaction that performs it.
pub async fn record(
    tx: &mut PgConnection,
    actor: &str,
    action: &str,
    target: &str,
    details: &Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_log (actor, action, target, details) VALUES ($1, $2, $3, $4)")
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(details)
        .execute(tx)
        .await?;
    Ok(())
}

/// Records one entry outside a transaction of the caller's.
pub async fn record_one(
    pool: &PgPool,
    actor: &str,
    action: &str,
    target: &str,
    details: &Value,
) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    record(&mut conn, actor, action, target, details).await
}

/// The latest entries, newest first, before entry id `before`.
pub async fn list(pool: &PgPool, before: Option<i64>, limit: i64) -> Result<Vec<Entry>, StoreError> {
    Ok(sqlx::query_as::<_, Entry>(
        "SELECT id, at, actor, action, target, details FROM audit_log
          WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
