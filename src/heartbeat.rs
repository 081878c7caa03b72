//! What this process tells the others through Postgres, every couple of seconds: a heartbeat
//! row (roles, concurrency, in-flight, totals, how long the latest delivery had waited), the
//! outcome counts behind the dashboard's charts, and — read back — which queues operators
//! paused.

use crate::store::outcome_counts::{self, Counts};
use crate::store::processes::{self, Heartbeat};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often the heartbeat runs.
const EVERY: Duration = Duration::from_secs(2);

/// How a command ended, for the dashboard's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    Rejected,
    Retried,
    Dead,
}

/// One process's reporter; shared by its API and worker parts.
pub struct Reporter {
    id: Uuid,
    roles: String,
    host: String,
    concurrency: i32,
    prefetch: i32,
    in_flight: AtomicI64,
    processed: AtomicI64,
    accepted: AtomicI64,
    /// Milliseconds the latest delivery had waited since it was accepted; -1 = none yet.
    queue_wait_ms: AtomicI64,
    consuming: AtomicBool,
    /// Per command type, per 10-second bucket (looked up by `&str`: no allocation per command).
    counts: Mutex<HashMap<String, HashMap<DateTime<Utc>, Counts>>>,
    paused: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Remote types whose circuit is not closed: type → `open` or `half_open`.
    circuits: Mutex<std::collections::BTreeMap<String, &'static str>>,
}

impl Reporter {
    /// A reporter for a process with these roles and worker sizes.
    pub fn new(roles: &str, concurrency: usize, prefetch: u16) -> Self {
        Self {
            id: Uuid::now_v7(),
            roles: roles.to_owned(),
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into()),
            concurrency: i32::try_from(concurrency).unwrap_or(i32::MAX),
            prefetch: i32::from(prefetch),
            in_flight: AtomicI64::new(0),
            processed: AtomicI64::new(0),
            accepted: AtomicI64::new(0),
            queue_wait_ms: AtomicI64::new(-1),
            consuming: AtomicBool::new(false),
            counts: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
            circuits: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// This process's id (its row in `processes`).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The API accepted a command.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries started (`n > 0`) or finished (`n < 0`).
    pub fn in_flight(&self, n: i64) {
        self.in_flight.fetch_add(n, Ordering::Relaxed);
    }

    /// A delivery of a command accepted at `submitted_at` arrived.
    pub fn delivered(&self, submitted_at: DateTime<Utc>) {
        let waited = (Utc::now() - submitted_at).num_milliseconds().max(0);
        self.queue_wait_ms.store(waited, Ordering::Relaxed);
    }

    /// Whether this process is consuming the work queue (false while paused or disconnected).
    pub fn consuming(&self, yes: bool) {
        self.consuming.store(yes, Ordering::Relaxed);
    }

    /// Commands of type `kind` ended `how` (for now), each with when its end-to-end latency
    /// counts from, if it does: one lock and one metrics lookup for a worker batch's commands.
    pub fn ended_many(&self, kind: &str, how: Ended, submitted: &[Option<DateTime<Utc>>]) {
        if submitted.is_empty() {
            return;
        }
        let now = Utc::now();
        let bucket = now.duration_trunc(TimeDelta::seconds(10)).unwrap_or(now);
        let finished = matches!(how, Ended::Succeeded | Ended::Rejected);
        let latencies = || {
            submitted.iter().filter_map(move |t| t.filter(|_| finished).map(|t| (now - t).num_milliseconds().max(0)))
        };
        if finished {
            self.processed.fetch_add(submitted.len() as i64, Ordering::Relaxed);
            let e2e = metrics::histogram!("sluice_e2e_seconds", "type" => kind.to_owned());
            for ms in latencies() {
                e2e.record(ms as f64 / 1000.0);
            }
        }
        let Ok(mut counts) = self.counts.lock() else { return };
        let per_bucket = match counts.get_mut(kind) {
            Some(b) => b,
            None => counts.entry(kind.to_owned()).or_default(),
        };
        let c = per_bucket.entry(bucket).or_default();
        let n = submitted.len() as i64;
        match how {
            Ended::Succeeded => c.succeeded += n,
            Ended::Rejected => c.rejected += n,
            Ended::Retried => c.retried += n,
            Ended::Dead => c.dead += n,
        }
        for ms in latencies() {
            c.observe_latency(ms);
        }
    }

    /// The circuit of remote type `kind` is now `state` (`closed`, `open`, `half_open`).
    pub fn circuit(&self, kind: &str, state: &'static str) {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        if state == "closed" {
            circuits.remove(kind);
        } else {
            circuits.insert(kind.to_owned(), state);
        }
    }

    /// Follows whether operators paused `queue` (true = paused).
    pub fn pause_signal(&self, queue: &str) -> watch::Receiver<bool> {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        paused.entry(queue.to_owned()).or_insert_with(|| watch::channel(false).0).subscribe()
    }

    /// Beats until `cancel`, then removes this process's row.
    pub async fn run(&self, pool: PgPool, cancel: CancellationToken) {
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = cancel.cancelled() => break,
            }
            if let Err(e) = self.beat(&pool).await {
                tracing::debug!(error = %e, "heartbeat skipped");
            }
            ticks += 1;
            if ticks.is_multiple_of(900) {
                let _ = outcome_counts::prune(&pool).await;
            }
        }
        let _ = self.beat(&pool).await;
        let _ = processes::forget(&pool, self.id).await;
    }

    async fn beat(&self, pool: &PgPool) -> Result<(), crate::store::StoreError> {
        // Pauses first: they must reach this process even if the writes below keep failing.
        let queues: Vec<(String, watch::Sender<bool>)> = {
            let paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
            paused.iter().map(|(q, tx)| (q.clone(), tx.clone())).collect()
        };
        let paused = processes::paused_queues(pool).await?;
        for (queue, tx) in queues {
            let now = paused.contains(&queue);
            tx.send_if_modified(|v| std::mem::replace(v, now) != now);
        }
        let wait = self.queue_wait_ms.load(Ordering::Relaxed);
        let circuits = {
            let c = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
            serde_json::to_value(&*c).unwrap_or_default()
        };
        processes::beat(
            pool,
            &Heartbeat {
                id: self.id,
                roles: &self.roles,
                host: &self.host,
                pid: i32::try_from(std::process::id()).unwrap_or(0),
                concurrency: self.concurrency,
                prefetch: self.prefetch,
                in_flight: i32::try_from(self.in_flight.load(Ordering::Relaxed)).unwrap_or(0),
                processed: self.processed.load(Ordering::Relaxed),
                accepted: self.accepted.load(Ordering::Relaxed),
                queue_wait_ms: (wait >= 0).then_some(wait),
                consuming: self.consuming.load(Ordering::Relaxed),
                circuits,
            },
        )
        .await?;
        let taken: Vec<_> = {
            let Ok(mut counts) = self.counts.lock() else { return Ok(()) };
            counts
                .drain()
                .flat_map(|(kind, buckets)| buckets.into_iter().map(move |(bucket, c)| (bucket, kind.clone(), c)))
                .collect()
        };
        if let Err(e) = outcome_counts::add(pool, self.id, &taken).await {
            // Put them back for the next beat rather than lose them.
            if let Ok(mut counts) = self.counts.lock() {
                for (bucket, kind, c) in taken {
                    let into = counts.entry(kind).or_default().entry(bucket).or_default();
                    into.succeeded += c.succeeded;
                    into.rejected += c.rejected;
                    into.retried += c.retried;
                    into.dead += c.dead;
                    for (a, b) in into.latency.iter_mut().zip(c.latency) {
                        *a += b;
                    }
                }
            }
            return Err(e);
        }
        metrics::gauge!("sluice_db_pool_connections", "state" => "idle").set(pool.num_idle() as f64);
        metrics::gauge!("sluice_db_pool_connections", "state" => "used")
            .set(f64::from(pool.size()) - pool.num_idle() as f64);
        metrics::gauge!("sluice_db_pool_max").set(f64::from(pool.options().get_max_connections()));
        Ok(())
    }
}
