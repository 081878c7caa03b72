//! Job control under load: (f) how soon a `high` command is applied while a backlog of `low`
//! ones drains, and how fast the low ones go meanwhile; (g) how late scheduled commands are
//! applied after their `run_at` while a steady load of immediate ones runs beside them; (h) the
//! throughput of commands with ordering keys against the same commands without, in one run.

use super::http::{self, Load};
use super::stats::Percentiles;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// High commands submitted during (f), one every [`HIGH_EVERY`].
const HIGHS: usize = 40;
const HIGH_EVERY: Duration = Duration::from_millis(250);

/// What a sluice run gets to work with.
pub struct Running<'a> {
    pub base: &'a str,
    pub key: &'a str,
    pub pool: &'a PgPool,
    pub http: &'a reqwest::Client,
}

async fn submit(r: &Running<'_>, body: &Value) -> anyhow::Result<Value> {
    let answer = r.http.post(format!("{}/v1/commands", r.base)).bearer_auth(r.key).json(body).send().await?;
    anyhow::ensure!(answer.status().as_u16() == 202, "a bench command got {}", answer.status());
    Ok(answer.json().await?)
}

fn id_of(v: &Value) -> anyhow::Result<Uuid> {
    Ok(v["id"].as_str().unwrap_or_default().parse()?)
}

async fn completed(pool: &PgPool, ids: &[Uuid]) -> anyhow::Result<Vec<(Uuid, DateTime<Utc>, DateTime<Utc>)>> {
    Ok(sqlx::query_as(
        "SELECT id, submitted_at, completed_at FROM commands WHERE id = ANY($1) AND completed_at IS NOT NULL",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

async fn wait_all(pool: &PgPool, ids: &[Uuid], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while completed(pool, ids).await?.len() < ids.len() {
        anyhow::ensure!(Instant::now() < deadline, "bench commands were not all applied within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn applied(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM commands").fetch_one(pool).await?)
}

/// (f): with `low` low commands queued, a high one every 250 ms; their latency from 202 to
/// commit, and the low rate over the same seconds.
pub async fn priorities(r: Running<'_>, low: usize) -> anyhow::Result<()> {
    let before = applied(r.pool).await?;
    let started = Instant::now();
    let mut ids = Vec::with_capacity(HIGHS);
    for i in 0..HIGHS {
        let body =
            json!({"type": "event.record", "payload": {"name": "bench.high", "data": {"i": i}}, "priority": "high"});
        ids.push(id_of(&submit(&r, &body).await?)?);
        tokio::time::sleep(HIGH_EVERY).await;
    }
    wait_all(r.pool, &ids, Duration::from_secs(60)).await?;
    let took = started.elapsed();
    let after = applied(r.pool).await?;
    let mut latencies: Vec<Duration> =
        completed(r.pool, &ids).await?.iter().map(|(_, s, c)| (*c - *s).to_std().unwrap_or_default()).collect();
    let low_rate = (after - before - HIGHS as i64) as f64 / took.as_secs_f64();
    println!(
        "(f) {HIGHS} high commands over {low} queued low ones: 202 to commit {}; low meanwhile {low_rate:.0} cmd/s",
        Percentiles::of(&mut latencies).line()
    );
    Ok(())
}

/// (g): `n` commands scheduled over ten seconds from three seconds on, beside immediate ones
/// at `rate`/s; how long after its `run_at` each was committed.
pub async fn scheduled(r: Running<'_>, n: usize, rate: f64) -> anyhow::Result<()> {
    let start = Utc::now() + chrono::Duration::seconds(3);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let at = start + chrono::Duration::milliseconds((i as i64 * 10_000) / n.max(1) as i64);
        let body =
            json!({"type": "event.record", "payload": http::payload("event.record", i), "run_at": at.to_rfc3339()});
        ids.push((id_of(&submit(&r, &body).await?)?, at));
    }
    // The immediate load runs from now until the last run_at has passed.
    let until = Instant::now() + Duration::from_secs(14);
    let every = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut next = Instant::now();
    let mut i = 0usize;
    while Instant::now() < until {
        let body = json!({"type": "event.record", "payload": http::payload("event.record", 1_000_000 + i)});
        let (http, base, key) = (r.http.clone(), r.base.to_owned(), r.key.to_owned());
        tokio::spawn(async move { http.post(format!("{base}/v1/commands")).bearer_auth(key).json(&body).send().await });
        i += 1;
        next += every;
        tokio::time::sleep_until(next.into()).await;
    }
    let only: Vec<Uuid> = ids.iter().map(|(id, _)| *id).collect();
    wait_all(r.pool, &only, Duration::from_secs(60)).await?;
    let done = completed(r.pool, &only).await?;
    let mut lateness: Vec<Duration> = done
        .iter()
        .filter_map(|(id, _, c)| {
            ids.iter().find(|(x, _)| x == id).map(|(_, at)| (*c - *at).to_std().unwrap_or_default())
        })
        .collect();
    println!(
        "(g) {n} scheduled commands beside {i} immediate ones at {rate:.0}/s: run_at to commit {}",
        Percentiles::of(&mut lateness).line()
    );
    Ok(())
}

/// (h): `n` single commands as fast as `concurrency` clients go, first without ordering keys,
/// then spread over `keys` keys; from the first POST to the last commit, each.
pub async fn ordered(r: Running<'_>, n: usize, keys: usize, concurrency: usize) -> anyhow::Result<()> {
    let unordered = through(&r, n, concurrency, None).await?;
    let ordered = through(&r, n, concurrency, Some(keys)).await?;
    println!(
        "(h) {n} commands at concurrency {concurrency}: unordered {unordered:.0} cmd/s, over {keys} ordering keys \
         {ordered:.0} cmd/s = {:.0}% of unordered",
        100.0 * ordered / unordered.max(1e-9)
    );
    Ok(())
}

/// Submits `n` events (over `keys` ordering keys, if given) and waits for all to commit: the rate.
async fn through(r: &Running<'_>, n: usize, concurrency: usize, keys: Option<usize>) -> anyhow::Result<f64> {
    use futures_util::StreamExt;
    let started = Instant::now();
    let name = if keys.is_some() { "bench.ordered" } else { "bench.unordered" };
    let ids: Vec<anyhow::Result<Uuid>> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let mut body = json!({"type": "event.record", "payload": {"name": name, "data": {"i": i}}});
            if let Some(keys) = keys {
                body["ordering_key"] = json!(format!("key-{}", i % keys.max(1)));
            }
            id_of(&submit(r, &body).await?)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let ids: Vec<Uuid> = ids.into_iter().collect::<anyhow::Result<_>>()?;
    wait_all(r.pool, &ids, Duration::from_secs(300)).await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// A load that only starts sluice (and fills its low queue for (f)).
pub fn load(args: &super::BenchArgs, prefill_low: usize) -> Load {
    Load { prefill: prefill_low, prefill_priority: sluice::command::Priority::Low, ..Load::singles(args, 1) }
}
