//! The `outcome_counts` table: how many commands ended how, and how fast, per 10-second
//! bucket. Each process writes only its own rows, so workers never wait on each other here.

use super::StoreError;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Upper bounds (ms) of the end-to-end latency slots; one more slot counts the rest.
pub const LATENCY_BOUNDS_MS: [i64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// Counts of one bucket, process and command type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub succeeded: i64,
    pub rejected: i64,
    pub retried: i64,
    pub dead: i64,
    pub latency: [i64; 12],
}

impl Counts {
    /// Counts one end-to-end latency.
    pub fn observe_latency(&mut self, ms: i64) {
        let slot = LATENCY_BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BOUNDS_MS.len());
        self.latency[slot] += 1;
    }
}

/// Adds counts to this process's rows.
pub async fn add(pool: &PgPool, process: Uuid, rows: &[(DateTime<Utc>, String, Counts)]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let buckets: Vec<DateTime<Utc>> = rows.iter().map(|r| r.0).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let col = |f: fn(&Counts) -> i64| rows.iter().map(|r| f(&r.2)).collect::<Vec<i64>>();
    // Postgres arrays of arrays must be rectangular; the latency slots travel as one flat
    // array and are cut back into rows of 12.
    let latency: Vec<i64> = rows.iter().flat_map(|r| r.2.latency).collect();
    sqlx::query(
        "INSERT INTO outcome_counts AS o (bucket, process, type, succeeded, rejected, retried, dead, latency_buckets)
         SELECT u.bucket, $1, u.type, u.succeeded, u.rejected, u.retried, u.dead,
                ($8::bigint[])[(u.n - 1) * 12 + 1 : u.n * 12]
           FROM unnest($2::timestamptz[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
                WITH ORDINALITY AS u(bucket, type, succeeded, rejected, retried, dead, n)
         ON CONFLICT (bucket, process, type) DO UPDATE
            SET succeeded = o.succeeded + EXCLUDED.succeeded, rejected = o.rejected + EXCLUDED.rejected,
                retried = o.retried + EXCLUDED.retried, dead = o.dead + EXCLUDED.dead,
                latency_buckets = ARRAY(SELECT a + b FROM unnest(o.latency_buckets, EXCLUDED.latency_buckets) AS x(a, b))",
    )
    .bind(process)
    .bind(&buckets)
    .bind(&kinds)
    .bind(col(|c| c.succeeded))
    .bind(col(|c| c.rejected))
    .bind(col(|c| c.retried))
    .bind(col(|c| c.dead))
    .bind(&latency)
    .execute(pool)
    .await?;
    Ok(())
}

/// One bucket of the recent past, summed over processes and types.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Bucket {
    pub bucket: DateTime<Utc>,
    pub succeeded: i64,
    pub rejected: i64,
    pub retried: i64,
    pub dead: i64,
    pub latency_buckets: Vec<i64>,
}

/// Buckets of the last `minutes`, oldest first (missing buckets had nothing).
pub async fn recent(pool: &PgPool, minutes: i32) -> Result<Vec<Bucket>, StoreError> {
    Ok(sqlx::query_as::<_, Bucket>(
        "SELECT bucket, sum(succeeded)::bigint AS succeeded, sum(rejected)::bigint AS rejected,
                sum(retried)::bigint AS retried, sum(dead)::bigint AS dead,
                ARRAY(SELECT sum(x)::bigint FROM unnest(array_agg(latency_buckets)) WITH ORDINALITY AS t(x, i)
                      GROUP BY (i - 1) % 12 ORDER BY (i - 1) % 12) AS latency_buckets
           FROM outcome_counts
          WHERE bucket > now() - make_interval(mins => $1)
          GROUP BY bucket ORDER BY bucket",
    )
    .bind(minutes)
    .fetch_all(pool)
    .await?)
}

/// Totals per command type over the last `minutes`.
pub async fn by_type(pool: &PgPool, minutes: i32) -> Result<Vec<(String, i64, i64, i64, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT type, sum(succeeded)::bigint, sum(rejected)::bigint, sum(retried)::bigint, sum(dead)::bigint
           FROM outcome_counts WHERE bucket > now() - make_interval(mins => $1)
          GROUP BY type ORDER BY type",
    )
    .bind(minutes)
    .fetch_all(pool)
    .await?)
}

/// Drops buckets older than a day.
pub async fn prune(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM outcome_counts WHERE bucket < now() - interval '1 day'").execute(pool).await?;
    Ok(())
}
