//! After a scenario: drain, then a total-queue check in the manner of RabbitMQ's Jepsen
//! suite — every command answered 202 has exactly one outcome (lost? duplicated?), commands
//! whose answer was lost have zero or one, nothing appears that was never sent, and the
//! ledger balances. Prints one row of the report table.

use crate::cluster::{until, Cluster};
use crate::load::{Kind, Sent, OPENING};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;
use uuid::Uuid;

/// When a fault was in force.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Runs `f` as one fault window; returns when the fault ended.
pub async fn window<F: std::future::Future<Output = ()>>(windows: &mut Vec<Window>, f: F) -> DateTime<Utc> {
    let from = Utc::now();
    f.await;
    let to = Utc::now();
    windows.push(Window { from, to });
    to
}

/// One scenario's figures.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: usize,
    pub accepted: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub unexpected: usize,
    pub refused: usize,
    pub refused_applied: usize,
    pub unknown: usize,
    pub unknown_applied: usize,
    pub retries: f64,
    pub redeliveries: f64,
    pub absorbed: f64,
    pub reconnects: f64,
    pub recovery: Option<Duration>,
}

/// Waits until every accepted command is final and the cluster's queues are empty (so a
/// command whose answer was lost but which was published has been processed too). Quorum
/// queues report their counts on a statistics tick of about 5 s, so empty must be seen for
/// longer than that.
pub async fn drain(c: &Cluster, sent: &[Sent]) {
    let ids: Vec<Uuid> = sent.iter().filter(|s| s.accepted).map(|s| s.id).collect();
    until(Duration::from_secs(180), "every accepted command is final", || async {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM commands WHERE id = ANY($1) AND status IN ('succeeded', 'rejected', 'dead')",
        )
        .bind(&ids)
        .fetch_one(&c.pool)
        .await
        .unwrap_or(0);
        done == ids.len() as i64
    })
    .await;
    until(Duration::from_secs(60), "no scheduled command is left waiting", || async {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM scheduled_commands").fetch_one(&c.pool).await.unwrap_or(-1);
        waiting == 0
    })
    .await;
    drain_queues(c).await;
}

/// Waits until the cluster's queues are empty and stay so for longer than a statistics tick.
pub async fn drain_queues(c: &Cluster) {
    let mut empty_since: Option<std::time::Instant> = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if queued(c).await == Some(0) {
            if empty_since.get_or_insert_with(std::time::Instant::now).elapsed() > Duration::from_secs(7) {
                return;
            }
        } else {
            empty_since = None;
        }
        assert!(std::time::Instant::now() < deadline, "{}: the queues did not stay empty", c.name);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Replays, as an operator would, the commands RabbitMQ dead-lettered for its delivery limit
/// until none is left (a replayed one can be parked again while workers keep crashing), waits
/// until each is final, and returns how many replays that took.
///
/// On RabbitMQ 3.x a quorum queue counts a delivery against its limit whenever a consumer's
/// channel closes with it unacked, so when workers crash again and again, commands prefetched
/// beside the ones being applied come back each time and can reach the limit without ever
/// having run: parked as dead letters, not lost, and applied once by a replay.
pub async fn replay_delivery_limit_casualties(c: &Cluster) -> usize {
    let mut replays = 0;
    for _ in 0..10 {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT command_id FROM dead_letters WHERE error_kind = 'delivery_limit' AND state = 'open'",
        )
        .fetch_all(&c.pool)
        .await
        .expect("dead letters");
        if ids.is_empty() {
            return replays;
        }
        let body =
            serde_json::json!({"filter": {"error_kind": "delivery_limit"}, "limit": 10000, "rate_per_second": 1000});
        let r = c.http.post(format!("{}/v1/dead-letters/replay", c.base)).bearer_auth(&c.key).json(&body).send().await;
        let replayed: serde_json::Value = r.expect("replay answers").json().await.expect("replay body");
        assert_eq!(replayed["replayed"].as_u64(), Some(ids.len() as u64), "{}: every casualty replayed", c.name);
        replays += ids.len();
        // Final again: applied, or parked once more by a crash in the meantime.
        until(Duration::from_secs(120), "replayed casualties are final", || async {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM commands c WHERE c.id = ANY($1) AND c.status NOT IN ('succeeded', 'rejected')
                    AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.command_id = c.id AND d.state = 'open')",
            )
            .bind(&ids)
            .fetch_one(&c.pool)
            .await
            .unwrap_or(i64::MAX);
            pending == 0
        })
        .await;
    }
    panic!("{}: commands were parked by the delivery limit ten times over", c.name)
}

/// Messages (ready and unacked) in the cluster's queues, from `rabbitmqctl`.
async fn queued(c: &Cluster) -> Option<u64> {
    queue_figure(c, "messages", "").await
}

/// A `rabbitmqctl list_queues` column summed over the cluster's queues whose names end with
/// `suffix` ("" for all).
pub async fn queue_figure(c: &Cluster, column: &str, suffix: &str) -> Option<u64> {
    let args = ["-q", "list_queues", "--no-table-headers", "name", column];
    let text = if c.on_rabbit_cluster() {
        crate::rabbit::RabbitCluster::ctl_any(&args).await?
    } else {
        let out = tokio::process::Command::new("rabbitmqctl").args(args).output().await.ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let prefix = format!("{}.", c.settings.broker.prefix);
    Some(
        text.lines()
            .filter_map(|l| l.split_once(char::is_whitespace))
            .filter(|(name, _)| name.starts_with(&prefix) && name.ends_with(suffix))
            .filter_map(|(_, n)| n.trim().parse::<u64>().ok())
            .sum(),
    )
}

/// Outcomes recorded per command: how many times its effect exists.
struct Effects {
    events: HashMap<u64, i64>,
    /// Command id → (status, ledger entries, dead letters).
    commands: HashMap<Uuid, (String, i64, i64)>,
    /// Command id → fresh commits of it, from the workers' commit log.
    commits: HashMap<Uuid, i64>,
    /// Command id → rows `fault.apply`'s function wrote for it.
    applied: HashMap<Uuid, i64>,
}

async fn effects(c: &Cluster) -> Effects {
    let events: Vec<(i64, i64)> =
        sqlx::query_as("SELECT (data->>'seq')::bigint, count(*) FROM events WHERE name = 'fault.load' GROUP BY 1")
            .fetch_all(&c.pool)
            .await
            .expect("events");
    let commands: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT c.id, c.status,
                (SELECT count(*) FROM ledger_entries e WHERE e.command_id = c.id),
                (SELECT count(*) FROM dead_letters d WHERE d.command_id = c.id)
           FROM commands c WHERE c.type <> 'account.open'",
    )
    .fetch_all(&c.pool)
    .await
    .expect("commands");
    let applied: Vec<(Uuid, i64)> = sqlx::query_as("SELECT command_id, count(*) FROM fault.applied GROUP BY 1")
        .fetch_all(&c.pool)
        .await
        .expect("fault.applied");
    let mut commits = HashMap::new();
    let log = std::fs::read_to_string(crate::cluster::commits_log(&c.settings.broker.prefix)).unwrap_or_default();
    for id in log.lines().filter_map(|l| Uuid::parse_str(l.trim()).ok()) {
        *commits.entry(id).or_insert(0) += 1;
    }
    Effects {
        events: events.into_iter().map(|(s, n)| (s as u64, n)).collect(),
        commands: commands.into_iter().map(|(id, st, e, d)| (id, (st, e, d))).collect(),
        commits,
        applied: applied.into_iter().collect(),
    }
}

impl Effects {
    /// How many times `s` took effect: 0, 1, or more (a duplicate). The larger of what the
    /// tables hold and how often a worker committed it fresh.
    fn count(&self, s: &Sent) -> i64 {
        let row = self.commands.get(&s.id);
        let stored = match s.kind {
            Kind::Event => self.events.get(&s.seq).copied().unwrap_or(0),
            Kind::Transfer => match row {
                // A transfer's effect is a debit and a credit; a rejection is a recorded outcome.
                Some((st, 0, _)) if st == "rejected" => 1,
                Some((_, entries, _)) => (entries + 1) / 2,
                None => 0,
            },
            Kind::Poison => row.map_or(0, |(st, _, dead)| if st == "dead" { *dead } else { 0 }),
            Kind::Slow => row.map_or(0, |(st, _, _)| i64::from(st == "succeeded")),
            Kind::Sql => self.applied.get(&s.id).copied().unwrap_or(0),
        };
        stored.max(self.commits.get(&s.id).copied().unwrap_or(0))
    }

    /// Commands whose status disagrees with their ledger entries (succeeded with other than
    /// none or a debit and a credit, or not succeeded with any).
    fn inconsistent(&self) -> usize {
        self.commands
            .values()
            .filter(|(st, entries, _)| match st.as_str() {
                "succeeded" => *entries != 0 && *entries != 2,
                _ => *entries != 0,
            })
            .count()
    }
}

/// Makes the checks count only what the database holds, not also what workers logged as
/// committed: after a database failover, a commit a worker saw but the new primary lacks is
/// exactly the loss to detect.
pub fn count_only_the_database(c: &Cluster) {
    let _ = std::fs::remove_file(crate::cluster::commits_log(&c.settings.broker.prefix));
}

/// Checks the invariants, asserts them, and prints (and appends to the report file) the row.
pub async fn verify(c: &Cluster, sent: &[Sent], windows: &[Window], accounts: usize, notes: &str) -> Report {
    let (r, lost_as, inconsistent) = measure(c, sent, windows, notes).await;
    assert_eq!(r.lost, 0, "{}: commands answered 202 were lost, e.g. {lost_as:?}", c.name);
    assert_eq!(r.duplicated, 0, "{}: commands took effect twice", c.name);
    assert_eq!(r.unexpected, 0, "{}: effects of commands never sent", c.name);
    assert_eq!(r.refused_applied, 0, "{}: commands refused before publishing took effect", c.name);
    assert_eq!(inconsistent, 0, "{}: transfers whose status disagrees with their entries", c.name);
    if !windows.is_empty() {
        assert!(r.recovery.is_some(), "{}: after some fault, nothing was accepted and committed again", c.name);
    }
    if accounts > 0 {
        check_books(c, accounts).await;
    }
    r
}

/// Counts what [`verify`] asserts, and prints the row, without asserting: for a scenario that
/// shows a loss on purpose. Also returns the first few lost commands, described, and how many
/// transfers disagree with their entries.
pub async fn measure(c: &Cluster, sent: &[Sent], windows: &[Window], notes: &str) -> (Report, Vec<String>, usize) {
    let fx = effects(c).await;
    let mut r = Report { sent: sent.len(), ..Report::default() };
    // What became of the first few lost commands, for the failure message.
    let mut lost_as = Vec::new();
    for s in sent {
        let n = fx.count(s);
        if s.accepted {
            r.accepted += 1;
            if n == 0 {
                r.lost += 1;
                if lost_as.len() < 5 {
                    let row = fx.commands.get(&s.id).map(|(st, _, dead)| format!("{st}, {dead} dead letters"));
                    lost_as.push(format!("{} ({:?}): {}", s.id, s.kind, row.unwrap_or_else(|| "no row".into())));
                }
            }
        } else if s.refused {
            r.refused += 1;
            if n >= 1 {
                r.refused_applied += 1;
            }
        } else {
            r.unknown += 1;
            if n >= 1 {
                r.unknown_applied += 1;
            }
        }
        if n > 1 {
            r.duplicated += 1;
        }
    }
    let ids: HashSet<Uuid> = sent.iter().map(|s| s.id).collect();
    let seqs: HashSet<u64> = sent.iter().map(|s| s.seq).collect();
    r.unexpected = fx.commands.keys().filter(|id| !ids.contains(id)).count()
        + fx.events.keys().filter(|seq| !seqs.contains(seq)).count()
        + fx.applied.keys().filter(|id| !ids.contains(id)).count();
    r.retries = c.counter("sluice_retries_total").await;
    r.redeliveries = c.counter("sluice_redeliveries_total").await;
    r.absorbed = c.counter_where("sluice_commands_processed_total", "outcome=\"duplicate\"").await;
    r.reconnects = c.counter("sluice_broker_connects_total").await - c.processes_started() as f64;
    r.recovery = recovery(c, sent, windows).await;
    print_row(&c.name, &r, notes);
    (r, lost_as, fx.inconsistent())
}

/// The longest time, over the fault windows, from a fault's end until ingest answered 202
/// again and a command was committed again.
async fn recovery(c: &Cluster, sent: &[Sent], windows: &[Window]) -> Option<Duration> {
    if windows.is_empty() {
        return None;
    }
    let mut worst = Duration::ZERO;
    for w in windows {
        // Only requests sent after the fault ended show that ingest works again.
        let ingest = sent.iter().filter(|s| s.accepted && s.sent_at() > w.to).map(|s| s.answered_at).min()?;
        let commit: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT min(completed_at) FROM commands WHERE completed_at > $1")
                .bind(w.to)
                .fetch_one(&c.pool)
                .await
                .ok()?;
        let back = ingest.max(commit?);
        worst = worst.max((back - w.to).to_std().unwrap_or_default());
    }
    Some(worst)
}

/// Money is neither created nor destroyed, no balance is negative, and every balance is its
/// opening plus its entries.
pub async fn check_books(c: &Cluster, accounts: usize) {
    let (total, negative, mismatched): (i64, i64, i64) = sqlx::query_as(
        "SELECT sum(a.balance_cents)::bigint,
                count(*) FILTER (WHERE a.balance_cents < 0),
                count(*) FILTER (WHERE a.balance_cents <> $1 + coalesce(e.moved, 0))
           FROM accounts a
           LEFT JOIN (SELECT account_id, sum(amount_cents) AS moved FROM ledger_entries GROUP BY account_id) e
             ON e.account_id = a.id",
    )
    .bind(OPENING)
    .fetch_one(&c.pool)
    .await
    .expect("books");
    assert_eq!(total, OPENING * accounts as i64, "{}: money was created or destroyed", c.name);
    assert_eq!(negative, 0, "{}: a balance went negative", c.name);
    assert_eq!(mismatched, 0, "{}: a balance differs from its opening plus its entries", c.name);
}

const HEADER: &str = "| scenario | sent | 202 | lost | duplicated | unexpected | refused → applied | unknown → applied | retries | redeliveries | duplicates absorbed | reconnects | recovery | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn print_row(name: &str, r: &Report, notes: &str) {
    let recovery = r.recovery.map_or("–".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    let row = format!(
        "| {name} | {} | {} | {} | {} | {} | {} → {} | {} → {} | {} | {} | {} | {} | {recovery} | {notes} |",
        r.sent,
        r.accepted,
        r.lost,
        r.duplicated,
        r.unexpected,
        r.refused,
        r.refused_applied,
        r.unknown,
        r.unknown_applied,
        r.retries as u64,
        r.redeliveries as u64,
        r.absorbed as u64,
        r.reconnects.max(0.0) as u64,
    );
    eprintln!("{HEADER}\n{row}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fault-report.md");
    let fresh = !path.exists();
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{}{row}", if fresh { format!("{HEADER}\n") } else { String::new() });
    }
}

/// Keys of the ordered load whose events were not applied in their submission order (each
/// key's `n` must rise strictly in the order the events were recorded), with the first few
/// offenders described.
pub async fn out_of_order(c: &Cluster) -> (usize, Vec<String>) {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT data->>'key', (data->>'n')::bigint FROM events
          WHERE name = 'fault.load' AND data ? 'key' ORDER BY recorded_at, id",
    )
    .fetch_all(&c.pool)
    .await
    .expect("ordered events");
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut bad: HashMap<String, String> = HashMap::new();
    for (key, n) in rows {
        let before = last.insert(key.clone(), n);
        if before.is_some_and(|b| b >= n) && !bad.contains_key(&key) {
            bad.insert(key.clone(), format!("{key}: {n} after {}", before.unwrap_or_default()));
        }
    }
    (bad.len(), bad.into_values().take(5).collect())
}
