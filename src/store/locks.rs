//! Transaction-scoped advisory locks, taken all at once in a global order.

use super::StoreError;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

/// Takes an advisory lock per key for the rest of the transaction, in ascending order, in one
/// statement; every transaction that locks this way is deadlock-free against the others.
pub async fn lock_all(tx: &mut PgConnection, keys: &[String]) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<i64> = keys.iter().map(|k| key_id(k)).collect();
    ids.sort_unstable();
    ids.dedup();
    // The ordered subquery makes the locks be taken in ascending order.
    sqlx::query("SELECT pg_advisory_xact_lock(k) FROM (SELECT k FROM unnest($1::bigint[]) AS k ORDER BY k) s")
        .bind(&ids)
        .execute(tx)
        .await?;
    Ok(())
}

/// A stable 64-bit id for a key (the same in every process and version).
fn key_id(key: &str) -> i64 {
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}
