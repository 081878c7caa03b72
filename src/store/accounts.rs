//! The `accounts` and `ledger_entries` tables: balances and their double-entry history.

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// An account as its owner reads it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Account {
    pub id: String,
    pub balance_cents: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Opens an account; false if the tenant already has one with this id.
pub async fn open(
    tx: &mut PgConnection,
    tenant: &str,
    id: &str,
    initial_cents: i64,
    command_id: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO accounts (tenant, id, balance_cents, opened_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant, id) DO NOTHING",
    )
    .bind(tenant)
    .bind(id)
    .bind(initial_cents)
    .bind(command_id)
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Locks the named accounts in id order (so concurrent transfers cannot deadlock) and
/// returns their balances.
pub async fn lock_balances(
    tx: &mut PgConnection,
    tenant: &str,
    ids: &[&str],
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as::<_, (String, i64)>(
        "SELECT id, balance_cents FROM accounts WHERE tenant = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(tx)
    .await?)
}

/// Moves `amount` from one locked account to another and writes both ledger entries.
pub async fn move_funds(
    tx: &mut PgConnection,
    tenant: &str,
    from: &str,
    to: &str,
    amount: i64,
    command_id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH moved AS (
            UPDATE accounts SET balance_cents = balance_cents + CASE WHEN id = $2 THEN -$4::bigint ELSE $4::bigint END,
                                updated_at = now()
             WHERE tenant = $1 AND id IN ($2, $3)
         )
         INSERT INTO ledger_entries (tenant, command_id, account_id, amount_cents)
         VALUES ($1, $5, $2, -$4::bigint), ($1, $5, $3, $4::bigint)",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .bind(amount)
    .bind(command_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// One account of one tenant.
pub async fn find(pool: &PgPool, tenant: &str, id: &str) -> Result<Option<Account>, StoreError> {
    Ok(sqlx::query_as::<_, Account>(
        "SELECT id, balance_cents, created_at, updated_at FROM accounts WHERE tenant = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await?)
}
