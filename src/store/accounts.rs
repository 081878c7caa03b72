//! The `accounts` and `ledger_entries` tables: balances and their double-entry history.

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

/// An account as its owner reads it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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

/// Locks the named accounts (tenant, id) in key order, so concurrent transactions cannot
/// deadlock on them, and returns those that exist with their balances.
pub async fn lock_balances(
    tx: &mut PgConnection,
    accounts: &[(&str, &str)],
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let (tenants, ids): (Vec<&str>, Vec<&str>) = accounts.iter().copied().unzip();
    Ok(sqlx::query_as::<_, (String, String, i64)>(
        "SELECT a.tenant, a.id, a.balance_cents FROM accounts a
         WHERE (a.tenant, a.id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
         ORDER BY a.tenant, a.id FOR UPDATE",
    )
    .bind(&tenants)
    .bind(&ids)
    .fetch_all(tx)
    .await?)
}

/// Ledger entries to write: one row per account a command moved money in or out of.
#[derive(Debug, Default)]
pub struct Movements {
    tenants: Vec<String>,
    command_ids: Vec<Uuid>,
    accounts: Vec<String>,
    amounts: Vec<i64>,
}

impl Movements {
    /// Records `amount` (negative = out of the account) moved by `command_id`.
    pub fn push(&mut self, tenant: &str, command_id: Uuid, account: &str, amount: i64) {
        self.tenants.push(tenant.to_owned());
        self.command_ids.push(command_id);
        self.accounts.push(account.to_owned());
        self.amounts.push(amount);
    }
}

/// Writes the entries and sets each moved account (locked by [`lock_balances`]) to its balance
/// in `balances`, keyed by (tenant, id): two statements whatever the count.
pub async fn apply_movements(
    tx: &mut PgConnection,
    moved: &Movements,
    balances: &HashMap<(String, String), i64>,
) -> Result<(), StoreError> {
    if moved.amounts.is_empty() {
        return Ok(());
    }
    let touched: BTreeSet<(&String, &String)> = moved.tenants.iter().zip(&moved.accounts).collect();
    let mut tenants = Vec::with_capacity(touched.len());
    let mut ids = Vec::with_capacity(touched.len());
    let mut values = Vec::with_capacity(touched.len());
    for (tenant, id) in touched {
        let Some(balance) = balances.get(&(tenant.clone(), id.clone())) else { continue };
        tenants.push(tenant.as_str());
        ids.push(id.as_str());
        values.push(*balance);
    }
    sqlx::query(
        "UPDATE accounts a SET balance_cents = u.balance, updated_at = now()
         FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(tenant, id, balance)
         WHERE a.tenant = u.tenant AND a.id = u.id",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(&values)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO ledger_entries (tenant, command_id, account_id, amount_cents)
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[])",
    )
    .bind(&moved.tenants)
    .bind(&moved.command_ids)
    .bind(&moved.accounts)
    .bind(&moved.amounts)
    .execute(&mut *tx)
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
