//! The `dashboard_sessions` table: logins to the dashboard, stored as token hashes.

use super::StoreError;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A live session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    pub key_id: String,
    pub actor: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Stores a new session under the hash of its token.
pub async fn create(
    pool: &PgPool,
    token_hash: &[u8],
    key_id: &str,
    actor: &str,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    // Expired sessions go whenever someone logs in, so the table stays small without a job.
    sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at < now()").execute(pool).await?;
    sqlx::query(
        "INSERT INTO dashboard_sessions (token_hash, key_id, actor, csrf_token, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(key_id)
    .bind(actor)
        .bind(csrf_token)
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(())
}

/// The unexpired session with this token hash.
pub async fn find(pool: &PgPool, token_hash: &[u8]) -> Result<Option<Session>, StoreError> {
    Ok(sqlx::query_as::<_, Session>(
        "SELECT key_id, actor, csrf_token, expires_at FROM dashboard_sessions WHERE token_hash = $1 AND expires_at > now()",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await?)
}

/// Ends a session.
pub async fn delete(pool: &PgPool, token_hash: &[u8]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = $1").bind(token_hash).execute(pool).await?;
    Ok(())
}
