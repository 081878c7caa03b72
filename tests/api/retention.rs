//! Retention: old records are pruned in bounded batches by one process at a time, recent and
//! open ones and the event log are kept, and a pruned command says so instead of "pending".

use crate::helpers::{spawn_app, spawn_app_with, Probe};
use sluice::store::retention::Table;
use tokio_util::sync::CancellationToken;

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_finished_records_are_pruned_in_batches_and_recent_open_and_event_rows_are_kept() {
    // The app's own pruner is off, so the pass below is the only one.
    let app = spawn_app_with(|s| s.retention.enabled = false, &Probe::default()).await;
    let p = &app.pool;
    // Five old and one recent row of each kind, plus what must stay whatever its age.
    for sql in [
        "INSERT INTO commands (id, tenant, type, status, attempts, submitted_at, updated_at)
           SELECT gen_random_uuid(), 'acme', 'event.record', s, 1, now() - interval '60 days', now() - interval '60 days'
             FROM unnest(ARRAY['succeeded','rejected','dead','succeeded','dead']) s",
        "INSERT INTO commands (id, tenant, type, status, attempts, submitted_at, updated_at)
           VALUES (gen_random_uuid(), 'acme', 'event.record', 'succeeded', 1, now(), now()),
                  (gen_random_uuid(), 'acme', 'event.record', 'retrying', 2, now() - interval '60 days',
                   now() - interval '60 days')",
        "INSERT INTO dead_letters (id, tenant, body, headers, error_kind, error, attempts, dead_at, state, fingerprint)
           SELECT gen_random_uuid(), 'acme', '\\x00', '{}', 'permanent', 'e', 1, now() - interval '60 days', s, 'f'
             FROM unnest(ARRAY['replayed','discarded','replayed','discarded','replayed','open']) s",
        "INSERT INTO webhook_deliveries (id, source, verified, headers, received_at)
           SELECT gen_random_uuid(), 'src', v, '{}', now() - interval '60 days'
             FROM unnest(ARRAY[true, true, true, false, false]) v",
        "INSERT INTO dashboard_sessions (token_hash, key_id, actor, csrf_token, expires_at)
           VALUES ('\\x01', 'k', 'a', 'c', now() - interval '1 minute'), ('\\x02', 'k', 'a', 'c', now() + interval '1 hour')",
        "INSERT INTO events (id, tenant, name, data, occurred_at)
           VALUES (gen_random_uuid(), 'acme', 'ancient', '1', now() - interval '3650 days')",
    ] {
        sqlx::query(sql).execute(p).await.unwrap_or_else(|e| panic!("{e}: {sql}"));
    }
    let mut settings = app.settings.retention.clone();
    settings.batch_size = 2; // several statements per table
    let pruned = sluice::retention::prune_once(p, &settings, &CancellationToken::new()).await.unwrap().unwrap();
    let of = |t: Table| pruned.iter().find(|(x, _)| *x == t).map(|(_, n)| *n);
    assert_eq!(of(Table::Commands), Some(5));
    assert_eq!(of(Table::DeadLetters), Some(5));
    assert_eq!(of(Table::WebhookDeliveries), Some(3));
    assert_eq!(of(Table::RefusedDeliveries), Some(2));
    assert_eq!(of(Table::Sessions), Some(1));
    assert_eq!(count(p, "SELECT count(*) FROM commands").await, 2, "the recent and the unfinished command stay");
    assert_eq!(count(p, "SELECT count(*) FROM dead_letters WHERE state = 'open'").await, 1, "open letters stay");
    assert_eq!(count(p, "SELECT count(*) FROM dashboard_sessions").await, 1, "live sessions stay");
    assert_eq!(count(p, "SELECT count(*) FROM events WHERE name = 'ancient'").await, 1, "events are never pruned");
    assert!(app.metric("sluice_pruned_rows_total{table=\"commands\"}").await >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_process_prunes_at_a_time() {
    let app = spawn_app_with(|s| s.retention.enabled = false, &Probe::default()).await;
    let mut holder = app.pool.acquire().await.unwrap();
    let lock_key: i64 = 0x736c_7569_6365_7072;
    sqlx::query("SELECT pg_advisory_lock($1)").bind(lock_key).execute(&mut *holder).await.unwrap();
    let settings = &app.settings.retention;
    let pass = sluice::retention::prune_once(&app.pool, settings, &CancellationToken::new()).await.unwrap();
    assert!(pass.is_none(), "another holder of the lock is pruning: this process does nothing");
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(lock_key).execute(&mut *holder).await.unwrap();
    drop(holder);
    let pass = sluice::retention::prune_once(&app.pool, settings, &CancellationToken::new()).await.unwrap();
    assert!(pass.is_some(), "once it is free, this one prunes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_older_than_its_retention_reads_as_pruned_not_pending() {
    let app = spawn_app().await;
    let old = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, 1_600_000_000, 0));
    let v = app.get_json(&format!("/v1/commands/{old}")).await;
    assert_eq!(v["status"], "pruned", "{v}");
    let fresh = uuid::Uuid::now_v7();
    assert_eq!(app.get_json(&format!("/v1/commands/{fresh}")).await["status"], "pending");
}
