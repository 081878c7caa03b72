//! sluice itself, over HTTP: a `sluice serve` child process (so client and server do not share
//! a runtime), C clients posting N commands, then waiting until all are committed.

use super::rate;
use super::raw::RawFigures;
use super::stats::Percentiles;
use super::BenchArgs;
use crate::config::Settings;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Accounts the ledger.transfer load spreads over.
const ACCOUNTS: usize = 100;

/// What sluice achieved.
pub struct SluiceFigures {
    n: usize,
    refused: usize,
    ingest_rate: f64,
    ingest: Percentiles,
    e2e_rate: f64,
    e2e: Percentiles,
    peak_rss_mib: f64,
    /// Worker transactions and the mean commands in each, from sluice's own metrics.
    batches: Option<(f64, f64)>,
    /// Commands per POST (0 = single-command POSTs).
    per_request: usize,
}

impl SluiceFigures {
    pub fn print(&self, raw: Option<&RawFigures>) {
        match self.per_request {
            0 => println!("sluice serve over HTTP, {} commands, one per POST ({} refused):", self.n, self.refused),
            b => println!("sluice serve over HTTP, {} commands in batches of {b} ({} refused):", self.n, self.refused),
        }
        println!(
            "  ingest (202 = confirmed)     {:>9.0} cmd/s   per request: {}",
            self.ingest_rate,
            self.ingest.line()
        );
        println!("  end to end (202 → committed) {:>9.0} cmd/s   {}", self.e2e_rate, self.e2e.line());
        println!("  sluice process peak RSS      {:>9.1} MiB", self.peak_rss_mib);
        if let Some((count, mean)) = self.batches {
            println!("  worker transactions          {count:>9.0}       mean {mean:.1} commands each");
        }
        if let Some(raw) = raw {
            println!(
                "  ratio to the raw pipeline: ingest {:.0}% of raw publish, end to end {:.0}% of raw both-at-once",
                100.0 * self.ingest_rate / raw.publish_rate,
                100.0 * self.e2e_rate / raw.pipeline_rate
            );
        }
    }
}

/// Starts sluice on `db_url`, loads it, and measures.
pub async fn run(settings: &Settings, args: &BenchArgs, db_url: &str, prefix: &str) -> anyhow::Result<SluiceFigures> {
    let port = free_port()?;
    let key = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut child = spawn_sluice(settings, db_url, prefix, port, &key)?;
    let result = measure(args, db_url, port, &key, &child).await;
    let _ = Command::new("kill").args(["-TERM", &child.id().unwrap_or(0).to_string()]).status().await;
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let _ = child.start_kill();
    result
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn_sluice(settings: &Settings, db_url: &str, prefix: &str, port: u16, key: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the sluice binary")?;
    Command::new(exe)
        .arg("serve")
        .env("SLUICE__DATABASE__URL", db_url)
        .env("SLUICE__BROKER__URL", settings.broker.url.expose())
        .env("SLUICE__BROKER__PREFIX", prefix)
        .env("SLUICE__HTTP__ADDR", format!("127.0.0.1:{port}"))
        .env("SLUICE__LOG__LEVEL", "warn")
        // One key drives the whole load: the per-key rate limit would be what is measured.
        .env("SLUICE__LIMITS__RATE_PER_SECOND", "0")
        .env("SLUICE_BOOTSTRAP_KEY", key)
        .kill_on_drop(true)
        .spawn()
        .context("starting sluice serve")
}

async fn measure(args: &BenchArgs, db_url: &str, port: u16, key: &str, child: &Child) -> anyhow::Result<SluiceFigures> {
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    wait_ready(&http, &base).await?;
    let pool = PgPool::connect(db_url).await?;
    let transfers = args.kind == "ledger.transfer";
    if transfers {
        for i in 0..ACCOUNTS {
            let payload = json!({"account_id": format!("acct-{i}"), "initial_balance_cents": 1_000_000_000});
            post(&http, &base, key, "account.open", payload).await?;
        }
        wait_committed(&pool, "account.open", ACCOUNTS, Duration::from_secs(60)).await?;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (http, base, key, next, n) = (http.clone(), base.clone(), key.to_owned(), next.clone(), args.commands);
            let (kind, batch) = (args.kind.clone(), args.batch);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut accepted, mut refused) = (0usize, 0usize);
                let step = batch.max(1);
                loop {
                    let i = next.fetch_add(step, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    if batch == 0 {
                        match post(&http, &base, &key, &kind, payload(&kind, i)).await {
                            Ok(()) => accepted += 1,
                            Err(_) => refused += 1,
                        }
                    } else {
                        let end = (i + step).min(n);
                        match post_batch(&http, &base, &key, &kind, i..end).await {
                            Ok(a) => {
                                accepted += a;
                                refused += end - i - a;
                            }
                            Err(_) => refused += end - i,
                        }
                    }
                    latencies.push(t.elapsed());
                }
                (latencies, accepted, refused)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(args.commands);
    let (mut accepted, mut refused) = (0, 0);
    for c in clients {
        let (l, a, r) = c.await?;
        latencies.extend(l);
        accepted += a;
        refused += r;
    }
    let ingest_time = started.elapsed();
    let budget = Duration::from_secs(120).max(Duration::from_millis(args.commands as u64 * 5));
    wait_committed(&pool, &args.kind, accepted, budget).await?;
    let (first, last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT min(submitted_at), max(completed_at) FROM commands WHERE type = $1")
            .bind(&args.kind)
            .fetch_one(&pool)
            .await?;
    let span = match (first, last) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
        _ => ingest_time,
    };
    let mut e2e: Vec<Duration> = sqlx::query_scalar::<_, f64>(
        "SELECT extract(epoch FROM completed_at - submitted_at)::float8 FROM commands WHERE type = $1",
    )
    .bind(&args.kind)
    .fetch_all(&pool)
    .await?
    .into_iter()
    .map(|s| Duration::from_secs_f64(s.max(0.0)))
    .collect();
    pool.close().await;
    let batches = batch_figures(&http, &base).await;
    Ok(SluiceFigures {
        n: args.commands,
        refused,
        ingest_rate: rate(accepted, ingest_time),
        ingest: Percentiles::of(&mut latencies),
        e2e_rate: rate(accepted, span),
        e2e: Percentiles::of(&mut e2e),
        peak_rss_mib: child.id().map_or(0.0, peak_rss_mib),
        batches,
        per_request: args.batch,
    })
}

/// The payload of the `i`-th command of the load.
fn payload(kind: &str, i: usize) -> Value {
    if kind == "ledger.transfer" {
        let (from, to) = (i % ACCOUNTS, (i * 7 + 1) % ACCOUNTS);
        let to = if to == from { (to + 1) % ACCOUNTS } else { to };
        json!({"from": format!("acct-{from}"), "to": format!("acct-{to}"), "amount_cents": 1 + i % 100})
    } else {
        json!({"name": "bench.event", "data": {"i": i, "text": "lorem ipsum dolor sit amet consectetur"}})
    }
}

/// Posts commands `range` as one batch; how many were accepted.
async fn post_batch(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    kind: &str,
    range: std::ops::Range<usize>,
) -> anyhow::Result<usize> {
    let commands: Vec<Value> = range.map(|i| json!({"type": kind, "payload": payload(kind, i)})).collect();
    let r =
        http.post(format!("{base}/v1/batches")).bearer_auth(key).json(&json!({"commands": commands})).send().await?;
    anyhow::ensure!(r.status() == 202, "answered {}", r.status());
    let body: Value = r.json().await?;
    Ok(body["accepted"].as_u64().unwrap_or(0) as usize)
}

async fn post(http: &reqwest::Client, base: &str, key: &str, kind: &str, payload: Value) -> anyhow::Result<()> {
    let r = http
        .post(format!("{base}/v1/commands"))
        .bearer_auth(key)
        .json(&json!({"type": kind, "payload": payload}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 202, "answered {}", r.status());
    Ok(())
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "sluice did not become ready within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_committed(pool: &PgPool, kind: &str, n: usize, budget: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + budget;
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM commands WHERE type = $1 AND status IN ('succeeded', 'rejected')")
                .bind(kind)
                .fetch_one(pool)
                .await?;
        if done as usize >= n {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {done} of {n} {kind} committed within {budget:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sluice_batch_size` count and mean, read from the child's `/metrics`.
async fn batch_figures(http: &reqwest::Client, base: &str) -> Option<(f64, f64)> {
    let text = http.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()?;
    let value =
        |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok());
    let (sum, count) = (value("sluice_batch_size_sum")?, value("sluice_batch_size_count")?);
    (count > 0.0).then(|| (count, sum / count))
}

/// Peak resident memory of a process (Linux), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
