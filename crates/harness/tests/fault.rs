//! The fault-injection suite: sluice runs as separate processes (one API, several workers) of
//! the fault node binary while a load of transfers and events goes through its HTTP API and a
//! fault is injected; then everything drains and a total-queue check runs (see `check`). Each
//! scenario prints a row of a table, also appended to `target/fault-report.md`.
//!
//! These tests stop and break the shared RabbitMQ and PostgreSQL, so scripts/test runs them
//! one at a time after the others; each restores what it touched, even when it fails.
//! `SLUICE_FAULT_SCALE=10` makes every load and fault count ten times larger.

use chrono::Utc;
use sluice_harness::check::{self, drain, verify, window, Window};
use sluice_harness::cluster::{self, until, Cluster, Options};
use sluice_harness::load::{drive, drive_ordered, open_accounts, Kind, Mix, Sent};
use sluice_harness::proxy::Proxy;
use sluice_harness::scenario::{progress, scale, under_load};
use sluice_harness::services::{self, must, BrokerGuard, PostgresGuard};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The sluice binary with the fault hooks, built beside this test.
fn node() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sluice-fault-node"))
}

/// Starts a cluster with the mix's accounts opened.
async fn cluster(name: &str, opts: Options, accounts: usize) -> Arc<Cluster> {
    let c = Cluster::start(node(), name, opts).await;
    if accounts > 0 {
        open_accounts(&c, accounts).await;
    }
    Arc::new(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_every_accepted_command_takes_effect_exactly_once() {
    let mix = Mix::default();
    let c = cluster("1 baseline", Options::default(), mix.accounts).await;
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        progress(&c, Utc::now(), 2000 * scale() as i64).await;
        Vec::new()
    })
    .await;
    drain(&c, &sent).await;
    let r = verify(&c, &sent, &windows, mix.accounts, "no fault").await;
    assert_eq!((r.unknown, r.refused), (0, 0), "without faults every command is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_every_broker_connection_repeatedly_loses_nothing_and_applies_nothing_twice() {
    let mix = Mix::default();
    let c = cluster("2 connections closed", Options::default(), mix.accounts).await;
    let times = 6 * scale();
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        for _ in 0..times {
            let ended = window(&mut windows, must("rabbitmqctl", &["-q", "close_all_connections", "fault test"])).await;
            progress(&c, ended, 100).await;
        }
        windows
    })
    .await;
    drain(&c, &sent).await;
    let r = verify(&c, &sent, &windows, mix.accounts, &format!("closed {times}×")).await;
    assert!(r.reconnects >= times as f64, "every closure made the processes reconnect ({} reconnects)", r.reconnects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_killing_the_broker_mid_stream_loses_no_accepted_command() {
    let _guard = BrokerGuard;
    let mix = Mix::default();
    let c = cluster("3 broker stopped, killed", Options::default(), mix.accounts).await;
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        for _ in 0..scale() {
            let ended = window(&mut windows, async {
                must("rabbitmqctl", &["-q", "stop_app"]).await;
                // How long the broker stays down: the fault itself, not a synchronization.
                tokio::time::sleep(Duration::from_secs(2)).await;
                must("rabbitmqctl", &["-q", "start_app"]).await;
                must("timeout", &["120", "rabbitmqctl", "-q", "await_startup"]).await;
            })
            .await;
            progress(&c, ended, 100).await;
            let ended = window(&mut windows, services::kill_broker_hard()).await;
            progress(&c, ended, 100).await;
        }
        windows
    })
    .await;
    drain(&c, &sent).await;
    let r = verify(&c, &sent, &windows, mix.accounts, "stop_app/start_app, then kill -9").await;
    assert!(r.reconnects >= 2.0, "the processes reconnected after each outage ({})", r.reconnects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_repeatedly_even_between_commit_and_ack_apply_each_command_once() {
    let mix = Mix::default();
    // Each worker process aborts right after a commit, before its ack, at a random point.
    let opts = Options {
        workers: 2,
        worker_env: Some(Box::new(|| {
            vec![("SLUICE_FAULT_ABORT_AFTER_COMMITS", (20 + rand::random::<u64>() % 200).to_string())]
        })),
        ..Options::default()
    };
    let c = cluster("4 workers killed", opts, mix.accounts).await;
    let stop = CancellationToken::new();
    // Plays the orchestrator: a worker that died on its own is started again.
    let crashed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let supervisor = {
        let (c, stop, crashed) = (c.clone(), stop.clone(), crashed.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                crashed.fetch_add(c.respawn_exited(), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let kills = 6 * scale();
    let aborts = crashed.clone();
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        for i in 0..kills {
            let ended = window(&mut windows, c.kill_worker(i as usize % c.worker_count())).await;
            progress(&c, ended, 100).await;
        }
        // The load goes on until the crash hook has fired too.
        until(Duration::from_secs(60), "a worker crashed between commit and ack", || async {
            aborts.load(std::sync::atomic::Ordering::SeqCst) > 0
        })
        .await;
        windows
    })
    .await;
    drain(&c, &sent).await;
    // Replayed while the supervisor still restarts the workers that keep aborting.
    let replays = check::replay_delivery_limit_casualties(&c).await;
    stop.cancel();
    supervisor.await.expect("supervisor");
    let crashes = crashed.load(std::sync::atomic::Ordering::SeqCst);
    let notes = format!("{kills} SIGKILLs, {crashes} aborts after commit; {replays} replays of parked commands");
    let r = verify(&c, &sent, &windows, mix.accounts, &notes).await;
    assert!(crashes > 0, "the commit-to-ack crash hook fired");
    assert!(r.redeliveries > 0.0, "killed workers' messages were redelivered");
    assert!(r.absorbed > 0.0, "commands committed before a crash came back and were absorbed by the inbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_and_killed_backends_lose_nothing_and_apply_nothing_twice() {
    let _guard = PostgresGuard;
    let mix = Mix::default();
    let c = cluster("5 postgres restarted", Options::default(), mix.accounts).await;
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        for _ in 0..scale() {
            let ended = window(&mut windows, services::restart_postgres()).await;
            progress(&c, ended, 100).await;
            let ended = window(&mut windows, async {
                // Twenty sweeps over a second, not one: a single sweep can fall between worker
                // transactions (a worker lingers up to 10 ms for a fuller batch) and then only
                // kills idle connections, which the pool replaces unseen, so the fault never bit.
                let mut killed = 0i64;
                for _ in 0..20 {
                    killed += sqlx::query_scalar::<_, i64>(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                          WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    )
                    .fetch_one(&c.pool)
                    .await
                    .expect("terminate backends");
                    // The pace of the fault, not a wait for a condition.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert!(killed > 0, "sluice's connections were terminated");
            })
            .await;
            progress(&c, ended, 100).await;
        }
        windows
    })
    .await;
    drain(&c, &sent).await;
    let held = c.counter("sluice_db_unavailable_total").await;
    let notes = format!("restart -m fast, then pg_terminate_backend ×20; workers held commands {} times", held as u64);
    let r = verify(&c, &sent, &windows, mix.accounts, &notes).await;
    assert!(held + r.retries > 0.0, "workers noticed the outage ({held} holds, {} retries)", r.retries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_commands_survive_killed_workers_and_a_postgres_restart_while_they_wait() {
    let _guard = PostgresGuard;
    // Every command waits 0.2-3 s in Postgres; the dispatchers run in the workers being killed.
    let mix = Mix { scheduled_pct: 100, ..Mix::default() };
    let opts = Options { workers: 2, ..Options::default() };
    let c = cluster("11 scheduled, workers killed, postgres restarted", opts, mix.accounts).await;
    let kills = 4 * scale();
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        for i in 0..kills {
            let ended = window(&mut windows, c.kill_worker(i as usize % c.worker_count())).await;
            progress(&c, ended, 100).await;
        }
        let ended = window(&mut windows, services::restart_postgres()).await;
        progress(&c, ended, 100).await;
        windows
    })
    .await;
    drain(&c, &sent).await;
    let dispatched = c.counter("sluice_scheduled_dispatched_total").await;
    let notes = format!("{kills} worker SIGKILLs and a Postgres restart; {} dispatched", dispatched as u64);
    let r = verify(&c, &sent, &windows, mix.accounts, &notes).await;
    assert!(r.accepted > 0, "commands were scheduled and applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_keys_keep_their_order_through_cut_connections_and_killed_workers() {
    // Two workers, each also aborting right after some commit, before its ack.
    let opts = Options {
        workers: 2,
        worker_env: Some(Box::new(|| {
            vec![("SLUICE_FAULT_ABORT_AFTER_COMMITS", (500 + rand::random::<u64>() % 2000).to_string())]
        })),
        ..Options::default()
    };
    let c = cluster("12 ordered keys, connections cut, workers killed", opts, 0).await;
    let stop = CancellationToken::new();
    let supervisor = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut crashed = 0;
            while !stop.is_cancelled() {
                crashed += c.respawn_exited();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            crashed
        })
    };
    let (keys, per_key) = (50, 200 * scale());
    let started = Utc::now();
    let load = tokio::spawn(drive_ordered(c.clone(), keys, per_key, 0));
    progress(&c, started, 200).await;
    let mut windows = Vec::new();
    for i in 0..2 * scale() {
        let ended = window(&mut windows, must("rabbitmqctl", &["-q", "close_all_connections", "fault test"])).await;
        progress(&c, ended, 100).await;
        let ended = window(&mut windows, c.kill_worker(i as usize % c.worker_count())).await;
        progress(&c, ended, 100).await;
    }
    let sent = load.await.expect("ordered load");
    drain(&c, &sent).await;
    stop.cancel();
    let crashes = supervisor.await.expect("supervisor");
    let (unordered, examples) = check::out_of_order(&c).await;
    let held = c.counter("sluice_ordered_held_total").await;
    let notes = format!(
        "{keys} keys × {per_key}; {} connection closures, {} SIGKILLs, {crashes} aborts after commit; \
         {unordered} keys out of order; {} held",
        2 * scale(),
        2 * scale(),
        held as u64
    );
    let r = verify(&c, &sent, &windows, 0, &notes).await;
    assert_eq!(unordered, 0, "keys applied out of order: {examples:?}");
    assert_eq!(r.accepted, (keys * per_key) as usize, "every command was accepted in the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_account_contention_is_waited_out_and_nothing_is_dead_lettered() {
    let mix = Mix { accounts: 2, transfer_pct: 100, rate: 0, concurrency: 32, ..Mix::default() };
    let c = cluster("6 hot accounts", Options { workers: 3, ..Options::default() }, mix.accounts).await;
    let stop = CancellationToken::new();
    // Samples lock waits in this database: proof that the workers really contended.
    let sampler = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut most = 0i64;
            while !stop.is_cancelled() {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                      WHERE NOT l.granted AND d.datname = current_database()",
                )
                .fetch_one(&c.pool)
                .await
                .unwrap_or(0);
                most = most.max(waiting);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        })
    };
    let sent = drive(c.clone(), mix.clone(), 3000 * scale(), CancellationToken::new()).await;
    drain(&c, &sent).await;
    stop.cancel();
    let most_waiting = sampler.await.expect("sampler");
    let conflicts = c.counter("sluice_tx_conflicts_total").await;
    let r = verify(
        &c,
        &sent,
        &[],
        mix.accounts,
        &format!(
            "2 accounts, 32 clients, 3 workers; up to {most_waiting} lock waits seen, {} conflicts retried",
            conflicts as u64
        ),
    )
    .await;
    assert!(most_waiting > 0 || conflicts > 0.0, "the workers contended for the accounts");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&c.pool).await.expect("dead");
    assert_eq!(dead, 0, "contention is retried, never dead-lettered");
    assert_eq!((r.unknown, r.refused), (0, 0), "contention refuses nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_silently_stops_answering_is_detected_by_heartbeats_and_everything_recovers() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().expect("addr")).await;
    let mix = Mix::default();
    let heartbeat = 2;
    let opts = Options { broker_port: proxy.port, heartbeat_secs: heartbeat, ..Options::default() };
    let c = cluster("7 broker unreachable", opts, mix.accounts).await;
    // The proxy must outlive the fault schedule: the drain still goes through it.
    let proxy = Arc::new(proxy);
    let gate = proxy.clone();
    let stall = Duration::from_secs(4 * heartbeat + 2);
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let proxy = gate;
        let mut windows = Vec::new();
        for _ in 0..scale() {
            let ended = window(&mut windows, async {
                proxy.stall();
                // The partition's length: long enough for heartbeats to declare the peer dead.
                tokio::time::sleep(stall).await;
                proxy.restore();
            })
            .await;
            progress(&c, ended, 100).await;
        }
        windows
    })
    .await;
    drain(&c, &sent).await;
    let slowest = slowest_answer_in(&sent, &windows);
    let r = verify(
        &c,
        &sent,
        &windows,
        mix.accounts,
        &format!(
            "{}s silent partition, heartbeat {heartbeat}s; slowest answer {:.1}s",
            stall.as_secs(),
            slowest.as_secs_f64()
        ),
    )
    .await;
    assert!(r.reconnects >= 1.0, "heartbeats noticed the dead peer and the processes reconnected");
    // Durations are the row's figures; what is asserted is that nothing hung: every request
    // sent during the partition got an answer before the client's own timeout.
    assert!(unanswered_in(&sent, &windows) == 0, "ingest answered every request during the partition");
    assert!(r.recovery.is_some(), "commands were accepted and committed again after the partition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_memory_alarm_ingest_refuses_quickly_instead_of_hanging_and_drains_after() {
    let _guard = BrokerGuard;
    let mix = Mix::default();
    let c = cluster("8 memory alarm", Options::default(), mix.accounts).await;
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        for _ in 0..scale() {
            let ended = window(&mut windows, async {
                must("rabbitmqctl", &["-q", "set_vm_memory_high_watermark", "0"]).await;
                // How long the alarm lasts: the fault itself.
                tokio::time::sleep(Duration::from_secs(6)).await;
                must("rabbitmqctl", &["-q", "set_vm_memory_high_watermark", "0.4"]).await;
            })
            .await;
            progress(&c, ended, 100).await;
        }
        windows
    })
    .await;
    drain(&c, &sent).await;
    let refused =
        sent.iter().filter(|s| matches!(s.status, Some(503 | 429)) && windows.iter().any(|w| s.overlaps(w))).count();
    let slowest = slowest_answer_in(&sent, &windows);
    let notes =
        format!("watermark 0 for 6 s; {refused} refused with 503/429; slowest answer {:.1}s", slowest.as_secs_f64());
    verify(&c, &sent, &windows, mix.accounts, &notes).await;
    assert!(refused > 0, "ingest said it could not accept");
    // Refusing quickly means refusing while the alarm still held, not after it.
    let refused_during = sent
        .iter()
        .filter(|s| matches!(s.status, Some(503 | 429)))
        .any(|s| windows.iter().any(|w| s.answered_at < w.to && s.answered_at >= w.from));
    assert!(refused_during, "a request was refused while the alarm held, not kept waiting for its end");
    assert!(unanswered_in(&sent, &windows) == 0, "no request hung until the client gave up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_commands_reach_the_dead_letters_on_schedule_without_slowing_the_rest() {
    let calls = std::env::temp_dir().join(format!("sluice-poison-{}.log", uuid::Uuid::new_v4()));
    let opts = Options { env: vec![("SLUICE_FAULT_CALLS_LOG", calls.display().to_string())], ..Options::default() };
    // Latencies compared here must not include a delay asked for.
    let clean = Mix { scheduled_pct: 0, ..Mix::default() };
    let c = cluster("9 1% poison", opts, clean.accounts).await;
    let n = 1500 * scale();
    let before = drive(c.clone(), clean.clone(), n, CancellationToken::new()).await;
    let poisoned = Mix { poison_per_10k: 100, first_seq: 1_000_000, ..clean.clone() };
    let after = drive(c.clone(), poisoned, n, CancellationToken::new()).await;
    let sent: Vec<Sent> = before.iter().chain(&after).cloned().collect();
    drain(&c, &sent).await;
    let (p99_before, p99_after) = (p99_latency(&c, &before).await, p99_latency(&c, &after).await);
    let poison: Vec<&Sent> = after.iter().filter(|s| s.kind == Kind::Poison && s.accepted).collect();
    let notes = format!(
        "{} poison; others' p99 {:.0} ms before, {:.0} ms with poison",
        poison.len(),
        p99_before.as_secs_f64() * 1e3,
        p99_after.as_secs_f64() * 1e3
    );
    verify(&c, &sent, &[], clean.accounts, &notes).await;
    assert!(!poison.is_empty());
    let policy = sluice::worker::retry::RetryPolicy::new(&c.settings.worker);
    let max = c.settings.worker.max_attempts;
    let log = std::fs::read_to_string(&calls).expect("calls log");
    let _ = std::fs::remove_file(&calls);
    for p in &poison {
        let (status, attempts): (String, i32) = sqlx::query_as("SELECT status, attempts FROM commands WHERE id = $1")
            .bind(p.id)
            .fetch_one(&c.pool)
            .await
            .expect("poison row");
        assert_eq!((status.as_str(), attempts), ("dead", max as i32), "{} died after exactly {max} attempts", p.id);
        let parked: i32 = sqlx::query_scalar("SELECT attempts FROM dead_letters WHERE command_id = $1")
            .bind(p.id)
            .fetch_one(&c.pool)
            .await
            .expect("dead letter");
        assert_eq!(parked, max as i32);
        let tried = attempt_times(&log, p.id);
        assert_eq!(tried.len(), max as usize, "{} was tried {max} times: {tried:?}", p.id);
        for (k, pair) in tried.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let planned = policy.delay_ms(k as u32 + 1, 0.5) as i64 * 1000;
            assert!(
                gap >= planned * 9 / 10 && gap <= planned + 2_000_000,
                "retry {} of {} came after {} ms; the schedule says {} ms",
                k + 1,
                p.id,
                gap / 1000,
                planned / 1000
            );
        }
    }
    // The others were not held behind the poison's backoff: while each poison command waited
    // between its first and last attempt, commands submitted after its first attempt were
    // committed. (The p99 figures above are the scenario's printed row, not a bound: a latency
    // comparison on a shared 2-core machine measures the machine.)
    let clean: Vec<uuid::Uuid> = after.iter().filter(|s| s.accepted && s.kind != Kind::Poison).map(|s| s.id).collect();
    let done: Vec<(i64, i64, i32)> = sqlx::query_as(
        "SELECT (extract(epoch FROM submitted_at) * 1e6)::int8, (extract(epoch FROM completed_at) * 1e6)::int8, attempts
           FROM commands WHERE id = ANY($1)",
    )
    .bind(&clean)
    .fetch_all(&c.pool)
    .await
    .expect("clean commands");
    assert!(done.iter().all(|d| d.2 == 1), "no clean command was retried because of the poison");
    let mut checked = 0;
    for p in &poison {
        let tried = attempt_times(&log, p.id);
        let (first, last) = (tried[0], tried[tried.len() - 1]);
        // A poison command among the load's last requests has too few successors to judge by.
        if done.iter().filter(|(sub, _, _)| *sub > first).count() < 50 {
            continue;
        }
        checked += 1;
        let overtook = done.iter().filter(|(sub, fin, _)| *sub > first && *fin < last).count();
        assert!(overtook > 0, "commands submitted after {}'s first attempt were committed before its last", p.id);
    }
    assert!(checked > 0, "some poison command had later commands to compare with");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_under_a_deep_backlog_keeps_in_flight_within_the_prefetch_bound() {
    let prefetch: u64 = 16;
    let opts = Options {
        env: vec![("SLUICE__WORKER__PREFETCH", prefetch.to_string()), ("SLUICE__WORKER__CONCURRENCY", "4".into())],
        scrape: false,
        ..Options::default()
    };
    let c = cluster("10 slow handler, deep backlog", opts, 0).await;
    let mix = Mix { slow_millis: 5, rate: 0, concurrency: 32, scheduled_pct: 0, ..Mix::default() };
    let n = 3000 * scale();
    let stop = CancellationToken::new();
    // In flight as the broker sees it (unacked deliveries), and the workers' RSS from /proc;
    // nothing scrapes the workers' /metrics here, so memory is measured as production has it.
    let sampler = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples: Vec<(u64, u64)> = Vec::new(); // (unacked in the work queue, largest worker RSS KiB)
            while !stop.is_cancelled() {
                let unacked = check::queue_figure(&c, "messages_unacknowledged", ".work").await.unwrap_or(0);
                let rss = c.worker_pids().into_iter().filter_map(cluster::rss_kib).max().unwrap_or(0);
                samples.push((unacked, rss));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };
    let sent = drive(c.clone(), mix.clone(), n, CancellationToken::new()).await;
    let backlog_at_end_of_ingest = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM commands")
        .fetch_one(&c.pool)
        .await
        .map(|done| n as i64 - done)
        .unwrap_or(0);
    drain(&c, &sent).await;
    stop.cancel();
    let samples = sampler.await.expect("sampler");
    let most_in_flight = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let bound = prefetch * c.worker_count() as u64;
    let settled = samples.len() / 5; // after the first fifth, the worker has warmed up
    let rss_warm = samples.get(settled).map_or(0, |s| s.1);
    let rss_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let notes = format!(
        "backlog {backlog_at_end_of_ingest} after ingest; unacked ≤ {most_in_flight} (2 workers × prefetch {prefetch}); \
         worker RSS {:.1} → max {:.1} MiB",
        rss_warm as f64 / 1024.0,
        rss_max as f64 / 1024.0
    );
    verify(&c, &sent, &[], 0, &notes).await;
    assert!(backlog_at_end_of_ingest > 500, "a deep backlog built up ({backlog_at_end_of_ingest})");
    assert!(most_in_flight >= 1 && most_in_flight <= bound, "in flight stayed within the prefetch ({most_in_flight})");
    // The worker's RSS is the row's figure: what bounds its memory is the prefetch, asserted
    // above, and the rise from one sample to another depends on when the samples were taken.
}

/// The longest any request in flight while a fault was in force took to be answered; one that
/// got no answer took the client's whole timeout.
fn slowest_answer_in(sent: &[Sent], windows: &[Window]) -> Duration {
    sent.iter().filter(|s| windows.iter().any(|w| s.overlaps(w))).map(|s| s.took).max().unwrap_or_default()
}

/// Requests in flight while a fault was in force that got no answer at all.
fn unanswered_in(sent: &[Sent], windows: &[Window]) -> usize {
    sent.iter().filter(|s| s.status.is_none() && windows.iter().any(|w| s.overlaps(w))).count()
}

/// p99 of submitted → committed for the accepted commands among `sent` that are not poison.
async fn p99_latency(c: &Cluster, sent: &[Sent]) -> Duration {
    let ids: Vec<uuid::Uuid> = sent.iter().filter(|s| s.accepted && s.kind != Kind::Poison).map(|s| s.id).collect();
    let ms: f64 = sqlx::query_scalar(
        "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - submitted_at) * 1000)
           FROM commands WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&c.pool)
    .await
    .expect("latency");
    Duration::from_secs_f64(ms / 1e3)
}

/// When each attempt of `id` ran (µs), from the poison handler's call log (one line per
/// delivery: a worker batch holding poison fails before calling it).
fn attempt_times(log: &str, id: uuid::Uuid) -> Vec<i64> {
    let id = id.to_string();
    let mut times: Vec<i64> = log
        .lines()
        .filter_map(|l| l.split_once(' ').filter(|(i, _)| *i == id).and_then(|(_, t)| t.parse().ok()))
        .collect();
    times.sort_unstable();
    times
}
