//! The fault suite on a three-node RabbitMQ cluster (`scripts/rabbit-cluster`): nodes killed,
//! cut off and restarted one at a time under load, with the same check as the single-node
//! scenarios (nothing answered 202 lost, nothing applied twice, the books balance) and a bound
//! on how long ingest stays away after the fault began.
//!
//! Every process lists all three nodes (`broker.urls`): the API's list starts with node 1,
//! each worker's with the next node in turn. The topology is declared through one node before
//! any process starts, so that node leads every queue and a scenario can choose whether the
//! node it breaks is the API's, the queues' leader, or both.

use chrono::{DateTime, Utc};
use sluice_harness::check::{self, drain, verify, window, Window};
use sluice_harness::cluster::{Cluster, Layout, Options};
use sluice_harness::load::{drive, drive_ordered, open_accounts, Kind, Mix, Sent};
use sluice_harness::proxy::Proxy;
use sluice_harness::rabbit::{RabbitCluster, NODES};
use sluice_harness::scenario::{progress, scale, under_load};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The sluice binary with the fault hooks, built beside this test.
fn node() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sluice-fault-node"))
}

/// Longest a node's crash or graceful stop may keep ingest away: the API's socket closes at
/// once, so this is a reconnect to the next node plus a quorum queue's leader election.
const NODE_LOSS_BOUND: Duration = Duration::from_secs(15);

/// Longest a node cut off without a closed socket may keep ingest away: two missed heartbeats
/// (5 s each here) to notice, then a reconnect to the next node.
const CUT_OFF_BOUND: Duration = Duration::from_secs(20);

/// The fault suite's mix with every command immediate: a scheduled command is answered from
/// Postgres, and its 202 would hide a broker outage from the gap measured.
fn immediate() -> Mix {
    Mix { scheduled_pct: 0, ..Mix::default() }
}

/// Starts the cluster (or finds it up), then the sluice processes on it with the mix's
/// accounts opened, and checks every queue is replicated on all three nodes.
async fn on_cluster(rabbit: &RabbitCluster, name: &str, layout: Layout, mix: &Mix) -> Arc<Cluster> {
    on_cluster_with(rabbit, name, Options { workers: 3, on_cluster: Some(layout), ..Options::default() }, mix).await
}

/// [`on_cluster`] with the processes of `opts`.
async fn on_cluster_with(rabbit: &RabbitCluster, name: &str, opts: Options, mix: &Mix) -> Arc<Cluster> {
    let layout = opts.on_cluster.clone().expect("a layout on the RabbitMQ cluster");
    let c = Cluster::start(node(), name, opts).await;
    open_accounts(&c, mix.accounts).await;
    let work = format!("{}.work", c.settings.broker.prefix);
    assert_eq!(
        rabbit.leader_of(&work).await,
        Some((layout.leaders_on, NODES)),
        "node {} leads the work queue, which has a replica on every node",
        layout.leaders_on
    );
    rabbit.settled(&c.settings.broker.prefix).await;
    Arc::new(c)
}

/// The longest time without a 202 for an immediate command, from a fault's start until 30 s
/// after its end or until the load stopped (its last answer of any kind), if sooner: how long
/// ingest was away (at the load's 400 requests a second the gaps are otherwise a few ms).
/// Scheduled commands are left out: they are answered from Postgres without the broker.
fn longest_gap(sent: &[Sent], w: &Window) -> Duration {
    let stopped = sent.iter().map(|s| s.answered_at).max().unwrap_or(w.to);
    let until = (w.to + chrono::Duration::seconds(30)).min(stopped).max(w.from);
    let mut answers: Vec<DateTime<Utc>> = sent
        .iter()
        .filter(|s| s.accepted && s.answered_at >= w.from && s.answered_at <= until)
        .map(|s| s.answered_at)
        .collect();
    answers.sort();
    let mut worst = Duration::ZERO;
    let mut last = w.from;
    for a in answers.into_iter().chain(std::iter::once(until)) {
        worst = worst.max((a - last).to_std().unwrap_or_default());
        last = a;
    }
    worst
}

/// The longest [`longest_gap`] over the faults, asserted within `bound`.
fn ingest_away(name: &str, sent: &[Sent], windows: &[Window], bound: Duration) -> Duration {
    let worst = windows.iter().map(|w| longest_gap(sent, w)).max().unwrap_or_default();
    assert!(worst <= bound, "{name}: no command was accepted for {worst:?} (bound {bound:?})");
    worst
}

/// Whether the API process connected to a node other than the one at `port` (its first).
async fn api_moved_off(c: &Cluster, port: u16) -> bool {
    let elsewhere = c.process_counter("api-1", "sluice_broker_connects_total").await
        - c.process_counter("api-1", &format!("sluice_broker_connects_total{{node=\"127.0.0.1:{port}\"}}")).await;
    elsewhere >= 1.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_that_leads_the_work_queue_loses_nothing_and_ingest_goes_on() {
    let rabbit = RabbitCluster::up().await;
    let mix = immediate();
    let c = on_cluster(&rabbit, "13 cluster: leader node killed", Layout::direct(3), &mix).await;
    let work = format!("{}.work", c.settings.broker.prefix);
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        for _ in 0..scale() {
            let (leader, _) = rabbit.leader_of(&work).await.expect("the work queue has a leader");
            let ended = window(&mut windows, rabbit.kill(leader)).await;
            progress(&c, ended, 200).await;
            let (now, _) = rabbit.leader_of(&work).await.expect("a new leader was elected");
            assert_ne!(now, leader, "another node leads the work queue");
            let ended = window(&mut windows, rabbit.start(leader)).await;
            progress(&c, ended, 100).await;
            rabbit.settled(&c.settings.broker.prefix).await;
        }
        windows
    })
    .await;
    drain(&c, &sent).await;
    let away = ingest_away(&c.name, &sent, &windows, NODE_LOSS_BOUND);
    let notes = format!(
        "SIGKILL of the leader's node ×{}, then it rejoins; longest without an immediate 202: {:.1} s",
        scale(),
        away.as_secs_f64()
    );
    verify(&c, &sent, &windows, mix.accounts, &notes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_the_api_is_connected_to_moves_ingest_to_the_others_within_seconds() {
    let rabbit = RabbitCluster::up().await;
    let mix = immediate();
    // The API lists node 1 first; the queues are led from node 2, so only connections move.
    let layout = Layout { api_node: 1, ..Layout::direct(2) };
    let c = on_cluster(&rabbit, "14 cluster: API's node killed", layout, &mix).await;
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        for _ in 0..scale() {
            let ended = window(&mut windows, rabbit.kill(1)).await;
            progress(&c, ended, 200).await;
            let ended = window(&mut windows, rabbit.start(1)).await;
            progress(&c, ended, 100).await;
            rabbit.settled(&c.settings.broker.prefix).await;
        }
        windows
    })
    .await;
    drain(&c, &sent).await;
    let away = ingest_away(&c.name, &sent, &windows, NODE_LOSS_BOUND);
    let notes = format!(
        "SIGKILL of node 1 (listed first to the API) ×{}; longest without an immediate 202: {:.1} s",
        scale(),
        away.as_secs_f64()
    );
    verify(&c, &sent, &windows, mix.accounts, &notes).await;
    assert!(api_moved_off(&c, RabbitCluster::port(1)).await, "the API's own connection moved to another node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_without_closing_sockets_is_left_for_the_others_by_heartbeat() {
    let rabbit = RabbitCluster::up().await;
    let mix = immediate();
    // A proxy in front of every node; stalling one leaves its sockets open and silent, as a
    // partition or a dead host does. The node itself stays in the cluster.
    let mut proxies = Vec::new();
    for n in 1..=NODES {
        proxies.push(Proxy::start(format!("127.0.0.1:{}", RabbitCluster::port(n)).parse().expect("addr")).await);
    }
    let layout = Layout { ports: proxies.iter().map(|p| p.port).collect(), api_node: 1, leaders_on: 2 };
    let c = on_cluster(&rabbit, "15 cluster: node cut off", layout, &mix).await;
    let cut = &proxies[0];
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        for _ in 0..scale() {
            let ended = window(&mut windows, async {
                cut.stall();
                // How long the node stays cut off: the fault itself, longer than the bound,
                // so recovery must come from moving to another node, not from the cut healing.
                tokio::time::sleep(CUT_OFF_BOUND + Duration::from_secs(5)).await;
                cut.restore();
            })
            .await;
            progress(&c, ended, 100).await;
        }
        windows
    })
    .await;
    drain(&c, &sent).await;
    let away = ingest_away(&c.name, &sent, &windows, CUT_OFF_BOUND);
    let notes = format!(
        "node 1's proxy stalled {}× for 25 s (heartbeat 5 s); longest without an immediate 202: {:.1} s",
        scale(),
        away.as_secs_f64()
    );
    verify(&c, &sent, &windows, mix.accounts, &notes).await;
    assert!(api_moved_off(&c, proxies[0].port).await, "the API's own connection left the silent node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_all_three_nodes_under_load_loses_nothing() {
    let rabbit = RabbitCluster::up().await;
    let mix = immediate();
    let c = on_cluster(&rabbit, "16 cluster: rolling restart", Layout::direct(1), &mix).await;
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        for _ in 0..scale() {
            for n in 1..=NODES {
                let ended = window(&mut windows, async {
                    rabbit.stop(n).await;
                    rabbit.start(n).await;
                })
                .await;
                progress(&c, ended, 100).await;
                // The next node goes only once this one's replicas are back, as an operator's
                // rolling restart waits for the cluster to be whole again.
                rabbit.settled(&c.settings.broker.prefix).await;
            }
        }
        windows
    })
    .await;
    drain(&c, &sent).await;
    let away = ingest_away(&c.name, &sent, &windows, NODE_LOSS_BOUND);
    let notes = format!(
        "each node stopped and started in turn ×{}; longest without an immediate 202: {:.1} s",
        scale(),
        away.as_secs_f64()
    );
    verify(&c, &sent, &windows, mix.accounts, &notes).await;
}

/// Receives batch callbacks: how many deliveries each batch's callback got.
async fn callback_receiver() -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let got: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let g = g.clone();
            async move {
                let event: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let id = event["data"]["id"].as_str().unwrap_or_default().to_owned();
                *g.lock().unwrap().entry(id).or_default() += 1;
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_and_three_workers_keep_every_guarantee_across_processes() {
    let rabbit = RabbitCluster::up().await;
    let mix = Mix::default();
    // The APIs start on nodes 1 and 2, the workers on 1, 2 and 3 in turn.
    let opts = Options { apis: 2, workers: 3, on_cluster: Some(Layout::direct(1)), ..Options::default() };
    let c = on_cluster_with(&rabbit, "19 cluster: 2 APIs, 3 workers", opts, &mix).await;
    let (url, callbacks) = callback_receiver().await;
    let batches = 10 * scale() as usize;
    let per_batch = 50;

    let stop = CancellationToken::new();
    // Transfers among hot accounts, events, declared SQL and scheduled commands, alternating
    // between the APIs; ordered keys whose successive commands alternate too; and batches.
    let bank = tokio::spawn(drive(c.clone(), Mix { scheduled_pct: 20, ..mix.clone() }, 4000 * scale(), stop.clone()));
    let ordered = tokio::spawn(drive_ordered(c.clone(), 8, 40 * scale(), 1_000_000));
    let mut ids = Vec::new();
    for b in 0..batches {
        let commands: Vec<serde_json::Value> = (0..per_batch)
            .map(|i| serde_json::json!({"type": "event.record", "payload": {"name": "batched", "data": {"b": b, "i": i}}}))
            .collect();
        let body = serde_json::json!({"commands": commands, "callback_url": url, "callback_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
        let r =
            c.http.post(format!("{}/v1/batches", c.base_for(b as u64))).bearer_auth(&c.key).json(&body).send().await;
        let r: serde_json::Value = r.expect("batch answered").json().await.expect("batch body");
        ids.push(r["id"].as_str().expect("a batch id").to_owned());
    }
    let mut sent = bank.await.expect("bank load");
    sent.extend(ordered.await.expect("ordered load"));
    stop.cancel();
    drain(&c, &sent).await;

    // Each batch item's event exists exactly once.
    let (events, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (data->>'b', data->>'i')) FROM events WHERE name = 'batched'")
            .fetch_one(&c.pool)
            .await
            .expect("batched events");
    assert_eq!((events, distinct), ((batches * per_batch) as i64, (batches * per_batch) as i64));
    // The batch commands join what was sent, so the check counts each as one final outcome.
    let batch_ids: Vec<uuid::Uuid> = ids.iter().filter_map(|i| uuid::Uuid::parse_str(i).ok()).collect();
    let members: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM commands WHERE batch_id = ANY($1)")
        .bind(&batch_ids)
        .fetch_all(&c.pool)
        .await
        .expect("batch commands");
    sent.extend(members.into_iter().enumerate().map(|(k, id)| Sent {
        seq: 3_000_000 + k as u64,
        id,
        kind: Kind::Slow,
        accepted: true,
        status: Some(202),
        refused: false,
        answered_at: Utc::now(),
        took: Duration::ZERO,
    }));

    // Every batch settles with all of its commands and calls back once, whichever API took it
    // and whichever worker finished it.
    for id in &ids {
        let status = sluice::testkit::eventually(Duration::from_secs(60), || async {
            let r = c.http.get(format!("{}/v1/batches/{id}", c.base_for(1))).bearer_auth(&c.key).send().await.ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            (!v["callback"]["delivered_at"].is_null()).then_some(v)
        })
        .await;
        assert_eq!(status["succeeded"].as_u64(), Some(per_batch as u64), "batch {id}: {status}");
    }
    let got = callbacks.lock().unwrap().clone();
    assert!(ids.iter().all(|id| got.get(id) == Some(&1)), "each batch called back exactly once: {got:?}");
    let (bad, examples) = check::out_of_order(&c).await;
    assert_eq!(bad, 0, "keys applied out of order across processes: {examples:?}");
    let dispatched = c.counter("sluice_scheduled_dispatched_total").await;
    let notes = format!(
        "{} batches of {per_batch} settled and called back once each; 8 ordered keys in order; {} scheduled dispatched",
        ids.len(),
        dispatched as u64
    );
    verify(&c, &sent, &[], mix.accounts, &notes).await;
    assert!(dispatched > 0.0, "scheduled commands were dispatched");
}
