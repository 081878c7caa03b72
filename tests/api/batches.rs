//! Batches: commands that are ready together commit together, and anything unusual in a
//! batch (poison, duplicates, rejections) still gets exactly its own treatment.

use crate::helpers::{create_database, spawn_on, test_settings, Probe, TestApp};
use serde_json::json;
use sluice::app::Roles;
use sluice::command::Envelope;
use sluice::handlers::Outcome;

/// An API-only app; commands it accepts wait in the queue until [`worker_for`] starts a worker,
/// which then finds them all ready at once and batches them.
async fn api_only() -> TestApp {
    let (settings, db) = test_settings();
    create_database(&db).await;
    spawn_on(settings, db, Roles::Api, &Probe::default()).await
}

/// A worker-only app on `api`'s database and broker names (cleaned up by `api`).
async fn worker_for(api: &TestApp) -> TestApp {
    let db = api.settings.database.url.expose().rsplit('/').next().unwrap().to_owned();
    let mut w = spawn_on(api.settings.clone(), db, Roles::Worker, &Probe::default()).await;
    w.owns_resources = false;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_command_in_a_batch_is_dead_lettered_while_the_others_commit() {
    let api = api_only().await;
    let mut events = Vec::new();
    for i in 0..30 {
        events.push(api.accept("event.record", json!({"name": "batch", "data": {"i": i}})).await);
    }
    let poison = api.accept("test.poison", json!({})).await;
    let worker = worker_for(&api).await;
    for id in events {
        assert_eq!(api.settled(id).await["status"], "succeeded");
    }
    assert_eq!(api.status_becomes(poison, "dead").await["attempts"], 1);
    // Whether the poison shared a transaction with others (and made it fall back) depends on
    // how many deliveries had arrived when the worker took its first batch: the fallback
    // counter is not asserted, only that the others committed and the poison died once.
    drop(worker);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&api.pool).await.unwrap();
    assert_eq!(n, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_batched_with_duplicates_and_rejections_apply_exactly_once() {
    let api = api_only().await;
    // Accounts first, through a worker of their own, so the transfers find them.
    let mut first = worker_for(&api).await;
    api.open_account("a", 1000).await;
    api.open_account("b", 0).await;
    first.stop().await.unwrap();
    let dup = Envelope::new("acme", "ledger.transfer", json!({"from": "a", "to": "b", "amount_cents": 100}), None);
    let mut ids = vec![dup.id];
    for _ in 0..2 {
        crate::retries::publish_raw(&api, &dup.encode(), &dup.id.to_string()).await;
    }
    for _ in 0..5 {
        ids.push(api.accept("ledger.transfer", json!({"from": "a", "to": "b", "amount_cents": 100})).await);
    }
    let too_much = api.accept("ledger.transfer", json!({"from": "b", "to": "a", "amount_cents": 1_000_000})).await;
    let _worker = worker_for(&api).await;
    for id in ids {
        assert_eq!(api.settled(id).await["status"], "succeeded");
    }
    assert_eq!(api.settled(too_much).await["result"]["reason"], "insufficient_funds");
    assert_eq!(
        (api.balance("a").await, api.balance("b").await),
        (400, 600),
        "six transfers of 100, the duplicate once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_in_one_transaction_see_each_others_effects_in_order() {
    // The handler is driven directly so that the three transfers are one batch for certain.
    let api = api_only().await;
    sqlx::query("INSERT INTO accounts (tenant, id, balance_cents, opened_by) VALUES ('acme', 'a', 100, $1), ('acme', 'b', 0, $1), ('acme', 'c', 0, $1)")
        .bind(uuid::Uuid::now_v7())
        .execute(&api.pool)
        .await
        .unwrap();
    let transfer = |from: &str, to: &str, amount: i64| {
        Envelope::new("acme", "ledger.transfer", json!({"from": from, "to": to, "amount_cents": amount}), None)
    };
    let cmds = [transfer("a", "b", 100), transfer("b", "c", 100), transfer("b", "c", 1)];
    let mut tx = api.pool.begin().await.unwrap();
    let catalog = sluice::app::Catalog::builtin().unwrap();
    let transfer = catalog.handlers.get("ledger.transfer").unwrap();
    let outcomes = transfer.handle_many(&mut tx, &cmds.iter().collect::<Vec<_>>()).await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(outcomes[0], Outcome::Succeeded(_)));
    assert!(matches!(outcomes[1], Outcome::Succeeded(_)), "b's incoming 100 counts within the batch");
    assert!(
        matches!(&outcomes[2], Outcome::Rejected { reason, .. } if reason == "insufficient_funds"),
        "b is empty again"
    );
    assert_eq!((api.balance("a").await, api.balance("b").await, api.balance("c").await), (0, 0, 100));
    let entries: Vec<(String, i64)> = sqlx::query_as("SELECT account_id, amount_cents FROM ledger_entries ORDER BY id")
        .fetch_all(&api.pool)
        .await
        .unwrap();
    let expected = [("a", -100), ("b", 100), ("b", -100), ("c", 100)].map(|(a, n)| (a.to_owned(), n));
    assert_eq!(entries, expected, "two entries per applied transfer, none for the refused one");
}
