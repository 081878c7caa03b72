//! The load a scenario drives through the HTTP API while faults happen: transfers between a
//! few accounts and events, each with an idempotency key, so even a request whose answer was
//! lost names the command it would have been.

use crate::cluster::Cluster;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What kind of command a request carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Transfer,
    Event,
    Poison,
    Slow,
    /// `fault.apply`, the declared type whose handler is a SQL function.
    Sql,
}

impl Kind {
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Transfer => "ledger.transfer",
            Kind::Event => "event.record",
            Kind::Poison => "fault.poison",
            Kind::Slow => "fault.slow",
            Kind::Sql => crate::declared::TYPE,
        }
    }
}

/// One request and what came of it.
#[derive(Clone, Debug)]
pub struct Sent {
    pub seq: u64,
    pub id: Uuid,
    pub kind: Kind,
    /// 202: durable, must have exactly one effect.
    pub accepted: bool,
    /// The HTTP status, or None when no answer came (timeout, connection error).
    pub status: Option<u16>,
    /// Refused before anything was published (a 4xx, or a 503 `unavailable`): must have no
    /// effect. Anything else that is not a 202 is unknown: zero or one effect.
    pub refused: bool,
    pub answered_at: DateTime<Utc>,
    pub took: Duration,
}

/// The shape of a load.
#[derive(Clone)]
pub struct Mix {
    /// Accounts transfers move money between (few = contention).
    pub accounts: usize,
    /// Percent of commands that are transfers.
    pub transfer_pct: u64,
    /// Percent of commands that are `fault.apply` (a declared SQL type); the rest are events.
    pub sql_pct: u64,
    /// Commands in 10,000 that are poison.
    pub poison_per_10k: u64,
    /// Requests per second over all clients (0 = as fast as they go).
    pub rate: u64,
    pub concurrency: usize,
    /// Sequence numbers start here (a second load in the same scenario must not reuse keys).
    pub first_seq: u64,
    /// When > 0, every command is `fault.slow` sleeping this long.
    pub slow_millis: u64,
    /// Percent of commands submitted with a `delay_ms` (0.2 to 3 s): they wait in Postgres and
    /// the dispatcher publishes them, through whatever faults happen meanwhile.
    pub scheduled_pct: u64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            accounts: 5,
            transfer_pct: 50,
            sql_pct: 20,
            poison_per_10k: 0,
            rate: 400,
            concurrency: 16,
            first_seq: 0,
            slow_millis: 0,
            scheduled_pct: 10,
        }
    }
}

impl Sent {
    /// When the request was sent.
    pub fn sent_at(&self) -> DateTime<Utc> {
        self.answered_at - chrono::Duration::from_std(self.took).unwrap_or_default()
    }

    /// Whether the request was in flight at some point of `w`.
    pub fn overlaps(&self, w: &crate::check::Window) -> bool {
        self.sent_at() <= w.to && self.answered_at >= w.from
    }
}

/// Opening balance of every account.
pub const OPENING: i64 = 100_000;

/// Opens the mix's accounts and waits until they exist.
pub async fn open_accounts(c: &Cluster, accounts: usize) {
    for i in 0..accounts {
        let r = submit(
            c,
            i as u64,
            "account.open",
            json!({"account_id": account(i), "initial_balance_cents": OPENING}),
            None,
        )
        .await
        .expect("answer");
        assert_eq!(r.status(), 202);
    }
    crate::cluster::until(Duration::from_secs(60), "accounts opened", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts").fetch_one(&c.pool).await.unwrap_or(0);
        n == accounts as i64
    })
    .await;
}

pub fn account(i: usize) -> String {
    format!("acct-{i}")
}

async fn submit(
    c: &Cluster,
    seq: u64,
    kind: &str,
    payload: serde_json::Value,
    key: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut req = c.http.post(format!("{}/v1/commands", c.base_for(seq))).bearer_auth(&c.key);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.json(&json!({"type": kind, "payload": payload})).send().await
}

/// [`submit`] with `delay_ms`.
async fn submit_later(
    c: &Cluster,
    seq: u64,
    kind: &str,
    payload: serde_json::Value,
    key: &str,
    delay_ms: u64,
) -> reqwest::Result<reqwest::Response> {
    let req =
        c.http.post(format!("{}/v1/commands", c.base_for(seq))).bearer_auth(&c.key).header("Idempotency-Key", key);
    req.json(&json!({"type": kind, "payload": payload, "delay_ms": delay_ms})).send().await
}

/// How long command `seq` of `mix` is scheduled for, if it is.
pub fn delay_of(mix: &Mix, seq: u64) -> Option<u64> {
    (seq.wrapping_mul(40_503) % 100 < mix.scheduled_pct).then(|| 200 + seq.wrapping_mul(131) % 2800)
}

/// The command `seq` of a mix: deterministic, so a check can tell what each should have done.
fn command(mix: &Mix, seq: u64) -> (Kind, serde_json::Value) {
    if mix.slow_millis > 0 {
        return (Kind::Slow, json!({"millis": mix.slow_millis, "seq": seq}));
    }
    if mix.poison_per_10k > 0 && seq.wrapping_mul(7919) % 10_000 < mix.poison_per_10k {
        return (Kind::Poison, json!({"seq": seq}));
    }
    let share = seq.wrapping_mul(2_654_435_761) % 100;
    if share < mix.transfer_pct {
        let n = mix.accounts as u64;
        let from = seq % n;
        let to = (from + 1 + (seq / n) % (n - 1)) % n;
        let amount = 1 + (seq * 37) % 3000;
        let payload =
            json!({"from": account(from as usize), "to": account(to as usize), "amount_cents": amount as i64});
        (Kind::Transfer, payload)
    } else if share < mix.transfer_pct + mix.sql_pct {
        (Kind::Sql, json!({"seq": seq}))
    } else {
        (Kind::Event, json!({"name": "fault.load", "data": {"seq": seq}}))
    }
}

/// Sends commands until `stop` (or `max` of them), paced to the mix's rate.
pub async fn drive(c: Arc<Cluster>, mix: Mix, max: u64, stop: CancellationToken) -> Vec<Sent> {
    let pace = (mix.rate > 0).then(|| Duration::from_secs_f64(1.0 / mix.rate as f64));
    let ticker = Arc::new(tokio::sync::Mutex::new(pace.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    })));
    let first = mix.first_seq;
    futures_util::stream::iter(first..first + max)
        .take_until(stop.clone().cancelled_owned())
        .map(|seq| {
            let (c, mix, ticker) = (c.clone(), mix.clone(), ticker.clone());
            async move {
                if let Some(t) = ticker.lock().await.as_mut() {
                    t.tick().await;
                }
                send_one(&c, &mix, seq).await
            }
        })
        .buffer_unordered(mix.concurrency)
        .collect()
        .await
}

/// Submits command `seq`; a request that gets no answer in time is an unknown outcome.
pub async fn send_one(c: &Cluster, mix: &Mix, seq: u64) -> Sent {
    let (kind, payload) = command(mix, seq);
    let key = format!("fault-{seq}");
    let id = sluice::command::command_id_for_key(&c.tenant, &key);
    let started = std::time::Instant::now();
    let answer = match delay_of(mix, seq) {
        Some(ms) => submit_later(c, seq, kind.type_name(), payload, &key, ms).await,
        None => submit(c, seq, kind.type_name(), payload, Some(&key)).await,
    };
    let (status, code) = match answer {
        Ok(r) => {
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (Some(status), body["error"]["code"].as_str().map(str::to_owned))
        }
        Err(_) => (None, None),
    };
    let refused = match status {
        Some(s) if (400..500).contains(&s) => true,
        Some(503) => code.as_deref() == Some("unavailable"),
        _ => false,
    };
    let (answered_at, took) = (Utc::now(), started.elapsed());
    Sent { seq, id, kind, accepted: status == Some(202), status, refused, answered_at, took }
}

/// An ordered load: `keys` producers, each submitting `per_key` events with its own
/// `ordering_key`, one after another, each retried under its idempotency key until it is
/// answered 202 (as a producer that needs order does: the next goes only after the last was
/// accepted). Event `n` of key `k` is seq `first_seq + k * per_key + n`.
pub async fn drive_ordered(c: Arc<Cluster>, keys: u64, per_key: u64, first_seq: u64) -> Vec<Sent> {
    let producers = (0..keys).map(|k| {
        let c = c.clone();
        async move {
            let mut sent = Vec::with_capacity(per_key as usize);
            for n in 0..per_key {
                let seq = first_seq + k * per_key + n;
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                loop {
                    let s = send_ordered(&c, k, n, seq).await;
                    if s.accepted || std::time::Instant::now() > deadline {
                        sent.push(s);
                        break;
                    }
                    // Refused or unanswered: the same command again, a moment later.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            sent
        }
    });
    futures_util::future::join_all(producers).await.into_iter().flatten().collect()
}

/// The ordering key of producer `k`.
pub fn ordering_key(k: u64) -> String {
    format!("key-{k}")
}

async fn send_ordered(c: &Cluster, k: u64, n: u64, seq: u64) -> Sent {
    let key = format!("fault-{seq}");
    let id = sluice::command::command_id_for_key(&c.tenant, &key);
    let body = json!({
        "type": "event.record",
        "payload": {"name": "fault.load", "data": {"seq": seq, "key": ordering_key(k), "n": n}},
        "ordering_key": ordering_key(k),
    });
    let started = std::time::Instant::now();
    // Successive commands of one key may go to different APIs: each waits for the previous
    // one's 202, so their order still holds.
    let req =
        c.http.post(format!("{}/v1/commands", c.base_for(seq))).bearer_auth(&c.key).header("Idempotency-Key", &key);
    let status = req.json(&body).send().await.ok().map(|r| r.status().as_u16());
    let (answered_at, took) = (Utc::now(), started.elapsed());
    // Whatever did not end in a 202 is unknown: it may have been published before the answer
    // was lost, and its retry is the same command.
    Sent { seq, id, kind: Kind::Event, accepted: status == Some(202), status, refused: false, answered_at, took }
}
