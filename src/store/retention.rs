//! Pruning by age: each statement deletes at most `limit` rows older than a cutoff, through an
//! index, so one round holds its locks briefly and ingest and workers go on between rounds.

use super::StoreError;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// What can be pruned, and which rows of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Commands in a final status (succeeded, rejected, dead), by last update.
    Commands,
    /// Finished batches with their callbacks, by when they finished.
    Batches,
    /// Dead letters no longer open (replayed or discarded), by when they died.
    DeadLetters,
    /// Verified webhook deliveries, by when they arrived.
    WebhookDeliveries,
    /// Refused webhook deliveries, by when they arrived.
    RefusedDeliveries,
    /// Dashboard sessions, by when they expired.
    Sessions,
}

impl Table {
    /// Every prunable table, in the order a round takes them.
    pub const ALL: [Table; 6] = [
        Table::Commands,
        Table::Batches,
        Table::DeadLetters,
        Table::WebhookDeliveries,
        Table::RefusedDeliveries,
        Table::Sessions,
    ];

    /// The name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Commands => "commands",
            Table::Batches => "batches",
            Table::DeadLetters => "dead_letters",
            Table::WebhookDeliveries => "webhook_deliveries",
            Table::RefusedDeliveries => "refused_deliveries",
            Table::Sessions => "dashboard_sessions",
        }
    }
}

/// Deletes up to `limit` rows of `table` older than `cutoff`; returns how many went.
pub async fn prune(pool: &PgPool, table: Table, cutoff: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
    let sql = match table {
        Table::Commands => {
            "DELETE FROM commands WHERE (tenant, id) IN (
               SELECT tenant, id FROM commands
                WHERE updated_at < $1 AND status IN ('succeeded', 'rejected', 'dead', 'cancelled')
                ORDER BY updated_at LIMIT $2)"
        }
        Table::Batches => {
            "WITH gone AS (SELECT id FROM batches WHERE finished_at < $1 ORDER BY finished_at LIMIT $2),
                  callbacks AS (DELETE FROM batch_callbacks WHERE batch_id IN (SELECT id FROM gone))
             DELETE FROM batches WHERE id IN (SELECT id FROM gone)"
        }
        Table::DeadLetters => {
            "DELETE FROM dead_letters WHERE id IN (
               SELECT id FROM dead_letters WHERE state IN ('replayed', 'discarded') AND dead_at < $1
                ORDER BY dead_at LIMIT $2)"
        }
        Table::WebhookDeliveries => {
            "DELETE FROM webhook_deliveries WHERE id IN (
               SELECT id FROM webhook_deliveries WHERE received_at < $1 AND verified ORDER BY received_at LIMIT $2)"
        }
        Table::RefusedDeliveries => {
            "DELETE FROM webhook_deliveries WHERE id IN (
               SELECT id FROM webhook_deliveries WHERE received_at < $1 AND NOT verified
                ORDER BY received_at LIMIT $2)"
        }
        Table::Sessions => {
            "DELETE FROM dashboard_sessions WHERE token_hash IN (
               SELECT token_hash FROM dashboard_sessions WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)"
        }
    };
    let done = sqlx::query(sql).bind(cutoff).bind(limit).execute(pool).await?;
    Ok(done.rows_affected())
}
