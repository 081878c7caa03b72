//! Nothing grows for ever: finished commands and batches, resolved dead letters, webhook
//! deliveries and expired dashboard sessions are pruned by age (`[retention]`, per table; the
//! event log is the tenants' data and is never pruned). One process at a time prunes, the one
//! holding a Postgres advisory lock; it deletes in bounded batches with a pause between them,
//! so ingest and workers are never held up for long.

use crate::config::RetentionSettings;
use crate::store::retention::{self, Table};
use crate::store::StoreError;
use chrono::Utc;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The session advisory lock key that elects the pruner (any fixed 64-bit number; "sluice-prune").
const LOCK_KEY: i64 = 0x736c_7569_6365_7072;

/// Rows pruned in one pass, per table.
pub type Pruned = Vec<(Table, u64)>;

/// Prunes every `interval_secs` until `cancel`, when this process holds the lock.
pub async fn run(pool: PgPool, settings: RetentionSettings, cancel: CancellationToken) {
    if !settings.enabled {
        return;
    }
    let interval = Duration::from_secs(settings.interval_secs.max(1));
    loop {
        match prune_once(&pool, &settings, &cancel).await {
            Ok(Some(pruned)) if pruned.iter().any(|(_, n)| *n > 0) => {
                let counts: Vec<String> = pruned.iter().map(|(t, n)| format!("{}={n}", t.as_str())).collect();
                tracing::info!(pruned = %counts.join(" "), "retention pass");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed; trying again next interval"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// One pass over every table with a retention, or `None` if another process holds the lock.
pub async fn prune_once(
    pool: &PgPool,
    settings: &RetentionSettings,
    cancel: &CancellationToken,
) -> Result<Option<Pruned>, StoreError> {
    let mut lock = pool.acquire().await?;
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LOCK_KEY).fetch_one(&mut *lock).await?;
    if !held {
        return Ok(None);
    }
    let result = prune_tables(pool, settings, cancel).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_KEY).execute(&mut *lock).await;
    result.map(Some)
}

async fn prune_tables(pool: &PgPool, s: &RetentionSettings, cancel: &CancellationToken) -> Result<Pruned, StoreError> {
    let batch = i64::try_from(s.batch_size.max(1)).unwrap_or(i64::MAX);
    let pause = Duration::from_millis(s.pause_ms);
    let mut pruned = Vec::new();
    for table in Table::ALL {
        let Some(age) = age_of(s, table) else { continue };
        let cutoff = Utc::now() - age;
        let mut total = 0;
        loop {
            let n = retention::prune(pool, table, cutoff, batch).await?;
            total += n;
            metrics::counter!("sluice_pruned_rows_total", "table" => table.as_str()).increment(n);
            if n < batch as u64 || cancel.is_cancelled() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        pruned.push((table, total));
    }
    Ok(pruned)
}

/// How old a row of `table` must be to go (`None`: kept for ever).
fn age_of(s: &RetentionSettings, table: Table) -> Option<chrono::Duration> {
    let days = match table {
        Table::Commands | Table::Batches => s.commands_days,
        Table::DeadLetters => s.dead_letters_days,
        Table::WebhookDeliveries => s.webhook_deliveries_days,
        Table::RefusedDeliveries => s.refused_deliveries_days,
        // An expired session is of no use to anyone.
        Table::Sessions => return Some(chrono::Duration::zero()),
    };
    (days > 0).then(|| chrono::Duration::days(i64::from(days)))
}

/// Whether the record of command `id` would have been pruned by now: its UUIDv7 time is older
/// than `commands_days`. (A UUIDv5 from an idempotency key carries no time: unknown.)
pub fn pruned_by_age(id: uuid::Uuid, s: &RetentionSettings) -> bool {
    if !s.enabled || s.commands_days == 0 {
        return false;
    }
    let Some(ts) = id.get_timestamp() else { return false };
    let (secs, _) = ts.to_unix();
    let born = chrono::DateTime::<Utc>::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0);
    born.is_some_and(|t| t < Utc::now() - chrono::Duration::days(i64::from(s.commands_days)))
}
