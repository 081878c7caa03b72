//! The `dead_letters` table: parked poison messages, ready for inspection and replay.

use super::StoreError;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// A dead letter as it is recorded.
#[derive(Debug, Clone)]
pub struct NewDeadLetter<'a> {
    pub id: Uuid,
    pub command_id: Option<Uuid>,
    pub tenant: Option<&'a str>,
    pub command_type: Option<&'a str>,
    pub body: &'a [u8],
    pub headers: Value,
    pub error_kind: &'a str,
    pub error: &'a str,
    pub attempts: i32,
}

/// Records a dead letter; a redelivered dead-letter message (same id) is ignored.
pub async fn insert(tx: &mut PgConnection, d: &NewDeadLetter<'_>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO dead_letters (id, command_id, tenant, command_type, body, headers, error_kind, error, attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(d.id)
    .bind(d.command_id)
    .bind(d.tenant)
    .bind(d.command_type)
    .bind(d.body)
    .bind(&d.headers)
    .bind(d.error_kind)
    .bind(d.error)
    .bind(d.attempts)
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
