//! sluice itself, over HTTP: a `sluice serve` child process, or `sluice api` and `sluice worker`
//! processes (so client and server do not share a runtime), C clients posting N commands, then
//! waiting until all are committed.

use super::client::{Poster, Target};
use super::components::{Broker, Cpu, PerCommand};
use super::machine::{CpuClock, MachineUsage};
use super::rate;
use super::raw::RawFigures;
use super::stats::Percentiles;
use super::BenchArgs;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sluice::config::Settings;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long a quiet batch run waits for the previous batch to be committed.
const QUIET_WAIT: Duration = Duration::from_secs(60);

/// Accounts the ledger.transfer load spreads over.
const ACCOUNTS: usize = 100;

/// One sluice run's load.
#[derive(Debug, Clone)]
pub struct Load {
    pub kind: String,
    pub commands: usize,
    pub concurrency: usize,
    /// Commands per POST (0 = single-command POSTs to /v1/commands).
    pub per_request: usize,
    /// Requests per second over all clients (None = as fast as they go).
    pub rate: Option<f64>,
    /// Commands already in the work queue before sluice starts.
    pub prefill: usize,
    /// The work queue they are in.
    pub prefill_priority: sluice::command::Priority,
    /// Batch runs with one client: it waits until everything it had accepted is committed
    /// (succeeded or rejected) before its next POST, so a batch is accepted on a quiet system,
    /// not while its predecessors are being processed.
    pub quiet: bool,
    /// `commands.dir` of the sluice under test (declared types), if any.
    pub commands_dir: Option<std::path::PathBuf>,
    /// Which RabbitMQ the run's CPU figures count.
    pub broker: Broker,
    /// `sluice api` and `sluice worker` processes to run instead of one `sluice serve`
    /// (None = one `serve`); the clients are spread over the APIs.
    pub processes: Option<(usize, usize)>,
}

impl Load {
    /// Single-command POSTs as fast as `concurrency` clients go.
    pub fn singles(args: &BenchArgs, concurrency: usize) -> Self {
        Self {
            kind: args.kind.clone(),
            commands: args.commands,
            concurrency,
            per_request: 0,
            rate: None,
            prefill: 0,
            prefill_priority: sluice::command::Priority::Normal,
            quiet: false,
            commands_dir: None,
            broker: Broker::Local,
            processes: None,
        }
    }

    /// A short name for the summary.
    pub fn describe(&self) -> String {
        let what = self.what();
        match self.processes {
            Some((a, w)) => format!("{what} on {a} APIs + {w} workers"),
            None => what,
        }
    }

    fn what(&self) -> String {
        match (self.per_request, self.rate, self.prefill) {
            (_, _, p) if p > 0 => format!("singles over {p} queued"),
            (0, Some(r), _) => format!("singles paced at {r:.0}/s"),
            (0, None, _) => format!("singles, {} clients", self.concurrency),
            (b, _, _) if self.quiet => format!("batches of {b}, one at a time"),
            (b, _, _) => format!("batches of {b}, {} clients", self.concurrency),
        }
    }
}

/// What sluice achieved.
pub struct SluiceFigures {
    pub load: Load,
    refused: usize,
    pub ingest_rate: f64,
    pub ingest: Percentiles,
    pub e2e_rate: f64,
    e2e: Percentiles,
    pub peak_rss_mib: f64,
    /// Worker transactions and the mean commands in each, from sluice's own metrics.
    batches: Option<(f64, f64)>,
    /// Publish bursts of single commands and the mean messages in each.
    bursts: Option<(f64, f64)>,
    /// The share of ingest requests that sluice itself timed over 10 ms (from accepting the
    /// request to the confirm), to tell its own latency from the client's and the machine's.
    server_over_10ms: Option<f64>,
    /// The whole machine from the first request to the last commit.
    pub machine: Option<MachineUsage>,
    /// CPU per command of each component, from the first request to the last commit.
    pub cpu: Option<PerCommand>,
}

impl SluiceFigures {
    pub fn print(&self, raw: Option<&RawFigures>) {
        let l = &self.load;
        let how = if l.processes.is_some() { "api + worker" } else { "serve" };
        println!("sluice {how} over HTTP, {} commands: {} ({} refused):", l.commands, l.describe(), self.refused);
        println!(
            "  ingest (202 = confirmed)     {:>9.0} cmd/s   per request: {}",
            self.ingest_rate,
            self.ingest.line()
        );
        if l.prefill > 0 {
            println!(
                "  drained {} queued + {} new   {:>9.0} cmd/s   (first → last commit)",
                l.prefill, l.commands, self.e2e_rate
            );
        } else {
            println!("  end to end (202 → committed) {:>9.0} cmd/s   {}", self.e2e_rate, self.e2e.line());
        }
        println!("  sluice process peak RSS      {:>9.1} MiB", self.peak_rss_mib);
        if let Some((count, mean)) = self.batches {
            println!("  worker transactions          {count:>9.0}       mean {mean:.1} commands each");
        }
        if let Some((count, mean)) = self.bursts {
            println!("  publish bursts               {count:>9.0}       mean {mean:.1} messages each");
        }
        if let Some(share) = self.server_over_10ms {
            println!("  over 10 ms in sluice itself  {:>9.2}%      of requests (sluice_ingest_seconds)", 100.0 * share);
        }
        if let Some(m) = self.machine {
            println!("{}", m.line());
        }
        if let Some(cpu) = self.cpu {
            println!("{}", cpu.line(true));
        }
        if let Some(raw) = raw {
            if l.prefill > 0 {
                println!("  ratio to the raw consumer alone: {:.0}%", 100.0 * self.e2e_rate / raw.drain_rate);
            } else {
                println!(
                    "  ratio to the raw pipeline: ingest {:.0}% of raw publish, end to end {:.0}% of raw both-at-once",
                    100.0 * self.ingest_rate / raw.publish_rate,
                    100.0 * self.e2e_rate / raw.pipeline_rate
                );
            }
        }
    }
}

/// One run of `load` against `binary` (`serve`, or `api` and `worker` processes) on `db_url`
/// with broker names under `prefix`.
pub async fn run(
    binary: &Path,
    settings: &Settings,
    load: &Load,
    db_url: &str,
    prefix: &str,
) -> anyhow::Result<SluiceFigures> {
    if load.prefill > 0 {
        super::prefill::fill(settings, prefix, load.prefill, &load.kind, load.prefill_priority).await?;
    }
    let key = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let spec = Spec { binary, settings, db_url, prefix, key: &key, load };
    let mut fleet = Fleet::default();
    let result = match fleet.start(&spec).await {
        Ok(()) => measure(load, db_url, &key, &fleet).await,
        Err(e) => Err(e),
    };
    let result = result.with_context(|| format!("sluice's log: {}", fleet.logs()));
    fleet.stop().await;
    if result.is_ok() {
        fleet.remove_logs();
    }
    result
}

/// The sluice processes of one run, each with its own HTTP port (health and metrics on
/// the workers', the API too on the others').
#[derive(Default)]
struct Fleet {
    children: Vec<Child>,
    /// Where the API is served.
    apis: Vec<u16>,
    /// Every process's port, for readiness and metrics.
    all: Vec<u16>,
    logs: Vec<std::path::PathBuf>,
}

impl Fleet {
    /// Starts the processes `spec.load` asks for and waits until each is ready. The first
    /// migrates the database alone; the others start once it is ready.
    async fn start(&mut self, spec: &Spec<'_>) -> anyhow::Result<()> {
        let roles: Vec<&str> = match spec.load.processes {
            None => vec!["serve"],
            Some((apis, workers)) => {
                std::iter::repeat_n("api", apis).chain(std::iter::repeat_n("worker", workers)).collect()
            }
        };
        let http = reqwest::Client::new();
        for (i, role) in roles.iter().enumerate() {
            let port = free_port()?;
            let log =
                if roles.len() == 1 { log_path(spec.prefix) } else { log_path(&format!("{}-{role}{i}", spec.prefix)) };
            self.children.push(spawn_sluice(spec, port, role, &log)?);
            if *role != "worker" {
                self.apis.push(port);
            }
            self.all.push(port);
            self.logs.push(log);
            if i == 0 {
                wait_ready(&http, &format!("http://127.0.0.1:{port}")).await?;
            }
        }
        for base in Self::bases(&self.all) {
            wait_ready(&http, &base).await?;
        }
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    fn bases(ports: &[u16]) -> Vec<String> {
        ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect()
    }

    fn logs(&self) -> String {
        self.logs.iter().map(|l| l.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// SIGTERM to every process, then SIGKILL to any still running after 30 s.
    async fn stop(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
        for child in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
            let _ = child.start_kill();
        }
    }

    fn remove_logs(&self) {
        for log in &self.logs {
            let _ = std::fs::remove_file(log);
        }
    }
}

/// A `sluice serve` started for a measurement of its own (see `jobs`).
pub struct Started {
    fleet: Fleet,
    pub base: String,
    pub key: String,
    pub pool: PgPool,
    pub http: reqwest::Client,
}

/// Starts sluice for `load` (filling its queue first) and waits until it is ready.
pub async fn start(
    binary: &Path,
    settings: &Settings,
    load: &Load,
    db_url: &str,
    prefix: &str,
) -> anyhow::Result<Started> {
    if load.prefill > 0 {
        super::prefill::fill(settings, prefix, load.prefill, &load.kind, load.prefill_priority).await?;
    }
    let key = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let spec = Spec { binary, settings, db_url, prefix, key: &key, load };
    let mut fleet = Fleet::default();
    if let Err(e) = fleet.start(&spec).await {
        fleet.stop().await;
        return Err(e.context(format!("sluice's log: {}", fleet.logs())));
    }
    let base = Fleet::bases(&fleet.apis).into_iter().next().context("no process serves the API")?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let pool = PgPool::connect(db_url).await?;
    Ok(Started { fleet, base, key, pool, http })
}

impl Started {
    /// Stops sluice (SIGTERM, then SIGKILL after 30 s); its log is kept when `failed`.
    pub async fn stop(mut self, failed: bool) {
        self.fleet.stop().await;
        self.pool.close().await;
        if !failed {
            self.fleet.remove_logs();
        }
    }
}

/// Where the sluice under test logs.
fn log_path(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sluice-{prefix}.log"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What every sluice process of a run shares.
struct Spec<'a> {
    binary: &'a Path,
    settings: &'a Settings,
    db_url: &'a str,
    prefix: &'a str,
    key: &'a str,
    load: &'a Load,
}

/// Starts `sluice <role>` serving HTTP on `port`, logging to `log`.
fn spawn_sluice(spec: &Spec<'_>, port: u16, role: &str, log: &Path) -> anyhow::Result<Child> {
    let Spec { binary, settings, db_url, prefix, key, load } = *spec;
    let log = std::fs::File::create(log)?;
    let mut cmd = Command::new(binary);
    if let Some(dir) = &load.commands_dir {
        cmd.env("SLUICE__COMMANDS__DIR", dir);
    }
    if load.prefill > 0 {
        // A pre-filled queue of a million would trip the depth bound; this run measures work.
        cmd.env("SLUICE__LIMITS__MAX_QUEUE_DEPTH", "0");
    }
    cmd.arg(role)
        .env("SLUICE__DATABASE__URL", db_url)
        .env("SLUICE__BROKER__URLS", sluice::testkit::joined_urls(&settings.broker))
        .env("SLUICE__BROKER__PREFIX", prefix)
        .env("SLUICE__HTTP__ADDR", format!("127.0.0.1:{port}"))
        .env("SLUICE__LOG__LEVEL", "warn")
        // One key drives the whole load: the per-key rate limit would be what is measured.
        .env("SLUICE__LIMITS__RATE_PER_SECOND", "0")
        .env("SLUICE_BOOTSTRAP_KEY", key)
        // The bench prints figures; sluice's own log goes to a file, named if a run fails.
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting sluice {role}"))
}

async fn measure(load: &Load, db_url: &str, key: &str, fleet: &Fleet) -> anyhow::Result<SluiceFigures> {
    let (apis, every) = (Fleet::bases(&fleet.apis), Arc::new(Fleet::bases(&fleet.all)));
    let http = reqwest::Client::builder().pool_max_idle_per_host(load.concurrency).build()?;
    let ready = Instant::now();
    let pool = PgPool::connect(db_url).await?;
    let kind = load.kind.as_str();
    let targets = fleet
        .apis
        .iter()
        .map(|&port| Target::new(SocketAddr::from(([127, 0, 0, 1], port)), key))
        .collect::<Result<Vec<_>, _>>()?;
    if kind == "ledger.transfer" {
        let mut opener = Poster::new(targets[0].clone());
        for i in 0..ACCOUNTS {
            let payload = json!({"account_id": format!("acct-{i}"), "initial_balance_cents": 1_000_000_000});
            post(&mut opener, "account.open", payload).await?;
        }
        wait_committed(&http, &every, &pool, "account.open", ACCOUNTS, Duration::from_secs(60)).await?;
    }

    let next = Arc::new(AtomicUsize::new(0));
    // Paced runs: request i is due at start + i × interval. Clients take the next index as
    // they come free, so the schedule needs no lock or shared timer.
    let interval = load.rate.map(|r| Duration::from_secs_f64(load.per_request.max(1) as f64 / r.max(1.0)));
    let machine = CpuClock::now();
    let cpu_before = Cpu::now(&fleet.pids(), load.broker);
    let started = Instant::now();
    let clients: Vec<_> = (0..load.concurrency)
        .map(|c| {
            // Client c posts to API c mod n: an even spread, as a load balancer would give.
            let (base, target) = (apis[c % apis.len()].clone(), targets[c % targets.len()].clone());
            let (http, every, key, next, n) =
                (http.clone(), every.clone(), key.to_owned(), next.clone(), load.commands);
            let (mut poster, pool) = (Poster::new(target), pool.clone());
            let (kind, batch, quiet) = (load.kind.clone(), load.per_request, load.quiet);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut accepted, mut refused) = (0usize, 0usize);
                let step = batch.max(1);
                loop {
                    let i = next.fetch_add(step, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    // A paced request's latency counts from when it was due, not from when a
                    // client got to send it: waiting for a free client is latency too (else a
                    // stall would hide itself by delaying the requests that would measure it).
                    let due = interval.map(|every| started + every.mul_f64((i / step) as f64));
                    if let Some(due) = due {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    if batch == 0 {
                        let t = due.unwrap_or_else(Instant::now);
                        match post(&mut poster, &kind, payload(&kind, i)).await {
                            Ok(()) => accepted += 1,
                            Err(_) => refused += 1,
                        }
                        latencies.push(t.elapsed());
                    } else {
                        let end = (i + step).min(n);
                        // The body is made before the clock starts: it is the client's work.
                        let body = batch_body(&kind, i..end);
                        let t = Instant::now();
                        match post_batch(&http, &base, &key, body).await {
                            Ok(a) => {
                                accepted += a;
                                refused += end - i - a;
                            }
                            Err(_) => refused += end - i,
                        }
                        latencies.push(t.elapsed());
                        if quiet {
                            // A run that never settles fails at its final wait, with the count.
                            let _ = wait_committed(&http, &every, &pool, &kind, accepted, QUIET_WAIT).await;
                        }
                    }
                }
                (latencies, accepted, refused)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(load.commands);
    let (mut accepted, mut refused) = (0, 0);
    for c in clients {
        let (l, a, r) = c.await?;
        latencies.extend(l);
        accepted += a;
        refused += r;
    }
    let ingest_time = started.elapsed();
    let total = accepted + load.prefill;
    let budget = Duration::from_secs(120).max(Duration::from_millis(total as u64 * 5));
    wait_committed(&http, &every, &pool, kind, total, budget).await?;
    let cpu = cpu_before.per_command(&Cpu::now(&fleet.pids(), load.broker), total);
    // From the first command row written to the last commit, as the database saw them (the
    // workers start consuming before /readyz answers; the first row lags its take by one commit).
    let (took_first, committed_last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT min(first_seen_at), max(completed_at) FROM commands WHERE type = $1")
            .bind(kind)
            .fetch_one(&pool)
            .await?;
    let drained = match (took_first, committed_last) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
        _ => ready.elapsed(),
    };
    let (first, last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT min(submitted_at), max(completed_at) FROM commands WHERE type = $1 AND submitted_at >= $2",
    )
    .bind(kind)
    .bind(Utc::now() - chrono::Duration::from_std(started.elapsed()).unwrap_or_default())
    .fetch_one(&pool)
    .await?;
    let span = match (first, last) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
        _ => ingest_time,
    };
    let mut e2e: Vec<Duration> = sqlx::query_scalar::<_, f64>(
        "SELECT extract(epoch FROM completed_at - submitted_at)::float8 FROM commands WHERE type = $1",
    )
    .bind(kind)
    .fetch_all(&pool)
    .await?
    .into_iter()
    .map(|s| Duration::from_secs_f64(s.max(0.0)))
    .collect();
    pool.close().await;
    let machine = machine.usage();
    let ServerFigures { batches, bursts, slow: server_over_10ms } = server_figures(&http, &every).await;
    Ok(SluiceFigures {
        load: load.clone(),
        refused,
        ingest_rate: rate(accepted, ingest_time),
        ingest: Percentiles::of(&mut latencies),
        // With a pre-filled queue, the rate is of all the work since sluice was ready.
        e2e_rate: if load.prefill > 0 { rate(total, drained) } else { rate(accepted, span) },
        e2e: Percentiles::of(&mut e2e),
        // The largest process: what one pod's memory limit must hold.
        peak_rss_mib: fleet.pids().into_iter().map(peak_rss_mib).fold(0.0, f64::max),
        batches,
        bursts,
        server_over_10ms,
        machine,
        cpu: Some(cpu),
    })
}

/// The payload of the `i`-th command of the load.
pub(super) fn payload(kind: &str, i: usize) -> Value {
    if kind == "ledger.transfer" {
        let (from, to) = (i % ACCOUNTS, (i * 7 + 1) % ACCOUNTS);
        let to = if to == from { (to + 1) % ACCOUNTS } else { to };
        json!({"from": format!("acct-{from}"), "to": format!("acct-{to}"), "amount_cents": 1 + i % 100})
    } else {
        json!({"name": "bench.event", "data": {"i": i, "text": "lorem ipsum dolor sit amet consectetur"}})
    }
}

/// The body of a batch of commands `range`.
fn batch_body(kind: &str, range: std::ops::Range<usize>) -> Vec<u8> {
    let commands: Vec<Value> = range.map(|i| json!({"type": kind, "payload": payload(kind, i)})).collect();
    serde_json::to_vec(&json!({"commands": commands})).unwrap_or_default()
}

/// Posts a batch body; how many of its commands were accepted.
async fn post_batch(http: &reqwest::Client, base: &str, key: &str, body: Vec<u8>) -> anyhow::Result<usize> {
    let r = http
        .post(format!("{base}/v1/batches"))
        .bearer_auth(key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(r.status() == 202, "answered {}", r.status());
    let body: Value = r.json().await?;
    Ok(body["accepted"].as_u64().unwrap_or(0) as usize)
}

/// Posts one command; Ok only for a 202.
async fn post(poster: &mut Poster, kind: &str, payload: Value) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&json!({"type": kind, "payload": payload}))?;
    let status = poster.post(&body).await?;
    anyhow::ensure!(status == 202, "answered {status}");
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

/// Waits until `n` commands of `kind` are committed. It watches sluice's own outcome counter,
/// which costs sluice one metrics render per poll; counting rows would make Postgres scan the
/// table twenty times a second, on the cores the run is measuring. The database has the last
/// word: the rows are counted once the counter says they are all there.
async fn wait_committed(
    http: &reqwest::Client,
    bases: &[String],
    pool: &PgPool,
    kind: &str,
    n: usize,
    budget: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + budget;
    loop {
        let counted = match committed_by_metrics(http, bases, kind).await {
            Some(c) => c >= n,
            None => true,
        };
        if counted {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM commands WHERE type = $1 AND status IN ('succeeded', 'rejected')",
            )
            .bind(kind)
            .fetch_one(pool)
            .await?;
            if done as usize >= n {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "only {done} of {n} {kind} committed within {budget:?}");
        }
        anyhow::ensure!(Instant::now() < deadline, "sluice did not report {n} {kind} committed within {budget:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The child's `/metrics` text (None if it cannot be read).
async fn metrics_text(http: &reqwest::Client, base: &str) -> Option<String> {
    http.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()
}

/// Commands of `kind` that the sluice processes at `bases` report succeeded or rejected
/// (None if one cannot be read).
async fn committed_by_metrics(http: &reqwest::Client, bases: &[String], kind: &str) -> Option<usize> {
    let of_kind = format!("type=\"{kind}\"");
    let mut total = 0.0;
    for base in bases {
        let text = metrics_text(http, base).await?;
        total += text
            .lines()
            .filter(|l| l.starts_with("sluice_commands_processed_total{") && l.contains(&of_kind))
            .filter(|l| l.contains("outcome=\"succeeded\"") || l.contains("outcome=\"rejected\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    Some(total as usize)
}

/// From the processes' `/metrics`, summed: worker transactions and publish bursts, each with
/// its mean size, and the share of ingest requests over 10 ms.
async fn server_figures(http: &reqwest::Client, bases: &[String]) -> ServerFigures {
    let mut sums = [0.0; 6];
    for base in bases {
        let Some(text) = metrics_text(http, base).await else {
            return ServerFigures::default();
        };
        let value =
            |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok());
        let names = [
            "sluice_batch_size_sum",
            "sluice_batch_size_count",
            "sluice_ingest_seconds_bucket{le=\"0.01\"}",
            "sluice_ingest_seconds_count",
            "sluice_publish_burst_messages_sum",
            "sluice_publish_burst_messages_count",
        ];
        for (sum, name) in sums.iter_mut().zip(names) {
            *sum += value(name).unwrap_or(0.0);
        }
    }
    let [size_sum, size_count, fast, requests, burst_sum, burst_count] = sums;
    ServerFigures {
        batches: (size_count > 0.0).then(|| (size_count, size_sum / size_count)),
        bursts: (burst_count > 0.0).then(|| (burst_count, burst_sum / burst_count)),
        slow: (requests > 0.0).then(|| 1.0 - fast / requests),
    }
}

/// What [`server_figures`] read.
#[derive(Default)]
struct ServerFigures {
    batches: Option<(f64, f64)>,
    bursts: Option<(f64, f64)>,
    slow: Option<f64>,
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
