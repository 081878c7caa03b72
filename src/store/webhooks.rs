//! The `webhook_sources` and `webhook_deliveries` tables.

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// A configured sender of webhooks. `Debug` shows how many secrets, never them.
#[derive(Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Source {
    pub name: String,
    pub tenant: String,
    /// `standard`, `github`, `stripe` or `hmac`.
    pub scheme: String,
    #[serde(skip_serializing)]
    #[schema(ignore)]
    pub secrets: Vec<String>,
    pub tolerance_secs: i32,
    pub command_type: String,
    pub signature_header: Option<String>,
    pub id_header: Option<String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("scheme", &self.scheme)
            .field("secrets", &format_args!("[{} redacted]", self.secrets.len()))
            .field("command_type", &self.command_type)
            .finish_non_exhaustive()
    }
}

/// Creates or replaces a source.
pub async fn upsert(tx: &mut sqlx::PgConnection, s: &Source) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_sources
                (name, tenant, scheme, secrets, tolerance_secs, command_type, signature_header, id_header)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (name) DO UPDATE
            SET tenant = EXCLUDED.tenant, scheme = EXCLUDED.scheme, secrets = EXCLUDED.secrets,
                tolerance_secs = EXCLUDED.tolerance_secs, command_type = EXCLUDED.command_type,
                signature_header = EXCLUDED.signature_header, id_header = EXCLUDED.id_header, updated_at = now()",
    )
    .bind(&s.name)
    .bind(&s.tenant)
    .bind(&s.scheme)
    .bind(&s.secrets)
    .bind(s.tolerance_secs)
    .bind(&s.command_type)
    .bind(&s.signature_header)
    .bind(&s.id_header)
    .execute(tx)
    .await?;
    Ok(())
}

/// One source.
pub async fn get(pool: &PgPool, name: &str) -> Result<Option<Source>, StoreError> {
    Ok(sqlx::query_as::<_, Source>(
        "SELECT name, tenant, scheme, secrets, tolerance_secs, command_type, signature_header, id_header
           FROM webhook_sources WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?)
}

/// Every source (of `tenant`, when given), by name.
pub async fn list(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<Source>, StoreError> {
    Ok(sqlx::query_as::<_, Source>(
        "SELECT name, tenant, scheme, secrets, tolerance_secs, command_type, signature_header, id_header
           FROM webhook_sources WHERE ($1::text IS NULL OR tenant = $1) ORDER BY name",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// Every source's stored (sealed) secrets, by name.
pub async fn stored_secrets(pool: &PgPool) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    Ok(sqlx::query_as("SELECT name, secrets FROM webhook_sources ORDER BY name").fetch_all(pool).await?)
}

/// Replaces a source's stored secrets if they are still `was`; false if they changed meanwhile.
pub async fn swap_secrets(pool: &PgPool, name: &str, was: &[String], now: &[String]) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE webhook_sources SET secrets = $3, updated_at = now() WHERE name = $1 AND secrets = $2")
            .bind(name)
            .bind(was)
            .bind(now)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The tenant a source belongs to, locked for the rest of the transaction.
pub async fn owner_for_update(tx: &mut sqlx::PgConnection, name: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT tenant FROM webhook_sources WHERE name = $1 FOR UPDATE")
        .bind(name)
        .fetch_optional(tx)
        .await?)
}

/// Removes a source (of `tenant`, when given); false if there was none.
pub async fn delete(tx: &mut sqlx::PgConnection, name: &str, tenant: Option<&str>) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM webhook_sources WHERE name = $1 AND ($2::text IS NULL OR tenant = $2)")
        .bind(name)
        .bind(tenant)
        .execute(tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A delivery as it is recorded.
pub struct NewDelivery<'a> {
    pub id: Uuid,
    pub source: &'a str,
    pub delivery_id: Option<&'a str>,
    pub verified: bool,
    pub error: Option<&'a str>,
    pub headers: Value,
    pub body: Option<&'a [u8]>,
    pub command_id: Option<Uuid>,
}

/// Records a delivery; false if this one (same id) was recorded before.
pub async fn record(pool: &PgPool, d: &NewDelivery<'_>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (id, source, delivery_id, verified, error, headers, body, command_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
    )
    .bind(d.id)
    .bind(d.source)
    .bind(d.delivery_id)
    .bind(d.verified)
    .bind(d.error)
    .bind(&d.headers)
    .bind(d.body)
    .bind(d.command_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the refused deliveries of `source` beyond the newest `keep` (ids are UUIDv7, so in
/// time order); returns how many went.
pub async fn trim_refused(pool: &PgPool, source: &str, keep: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM webhook_deliveries
          WHERE source = $1 AND NOT verified
            AND id < (SELECT id FROM webhook_deliveries WHERE source = $1 AND NOT verified
                       ORDER BY id DESC OFFSET $2 - 1 LIMIT 1)",
    )
    .bind(source)
    .bind(keep.max(1))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Marks a delivery that was recorded with a problem as accepted after all (a re-delivery
/// after the source was fixed).
pub async fn mark_accepted(pool: &PgPool, id: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE webhook_deliveries SET error = NULL, command_id = id WHERE id = $1 AND command_id IS NULL")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// A delivery as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    pub delivery_id: Option<String>,
    pub verified: bool,
    pub error: Option<String>,
    pub headers: Value,
    pub body_bytes: Option<i32>,
    pub command_id: Option<Uuid>,
    pub received_at: DateTime<Utc>,
}

/// A source's deliveries, newest first, after the keyset cursor `before`.
pub async fn deliveries(
    pool: &PgPool,
    source: &str,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let (at, id) = before.unzip();
    Ok(sqlx::query_as::<_, Delivery>(
        "SELECT id, delivery_id, verified, error, headers, octet_length(body) AS body_bytes, command_id, received_at
           FROM webhook_deliveries
          WHERE source = $1 AND ($2::timestamptz IS NULL OR (received_at, id) < ($2, $3))
          ORDER BY received_at DESC, id DESC LIMIT $4",
    )
    .bind(source)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
