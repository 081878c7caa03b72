//! The `api_keys` table: hashed keys with their tenant and scopes.

use super::StoreError;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A stored key (never the key itself, only its hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKey {
    pub key_id: String,
    pub tenant: String,
    pub key_hash: Vec<u8>,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Stores a new key.
pub async fn insert(
    pool: &PgPool,
    key_id: &str,
    tenant: &str,
    hash: &[u8],
    scopes: &[String],
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO api_keys (key_id, tenant, key_hash, scopes) VALUES ($1, $2, $3, $4)")
        .bind(key_id)
        .bind(tenant)
        .bind(hash)
        .bind(scopes)
        .execute(pool)
        .await?;
    Ok(())
}

/// The key with this public id, revoked or not.
pub async fn find(pool: &PgPool, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
    Ok(sqlx::query_as::<_, StoredKey>(
        "SELECT key_id, tenant, key_hash, scopes, created_at, revoked_at FROM api_keys WHERE key_id = $1",
    )
    .bind(key_id)
    .fetch_optional(pool)
    .await?)
}

/// Every key, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<StoredKey>, StoreError> {
    Ok(sqlx::query_as::<_, StoredKey>(
        "SELECT key_id, tenant, key_hash, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at DESC",
    )
    .fetch_all(pool)
    .await?)
}

/// Revokes a key; false if there is no such unrevoked key.
pub async fn revoke(pool: &PgPool, key_id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL")
        .bind(key_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}
