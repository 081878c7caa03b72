//! The orders service end to end: over HTTP, through RabbitMQ, into its own tables.

use serde_json::{json, Value};
use sluice::testkit::{isolated_settings, TestSluice, TENANT};
use sluice::AfterCommit;
use std::sync::{Arc, Mutex};

async fn stock_of(app: &TestSluice, sku: &str) -> i32 {
    sqlx::query_scalar("SELECT stock FROM shop.products WHERE tenant = $1 AND sku = $2")
        .bind(TENANT)
        .bind(sku)
        .fetch_one(&app.pool)
        .await
        .expect("product row")
}

async fn add_product(app: &TestSluice, sku: &str, price_cents: i64, stock: i32) {
    let id = app.accept("product.add", json!({"sku": sku, "price_cents": price_cents, "stock": stock})).await;
    assert_eq!(app.settled(id).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_redelivered_after_its_commit_is_applied_exactly_once() {
    // The order's id follows from its idempotency key, so the hook can single it out: the
    // first commit of that command is handed back to the broker unacked, as if the worker had
    // died between commit and ack, and RabbitMQ delivers it a second time.
    let order = sluice::command::command_id_for_key(TENANT, "order-1");
    let handed_back = Arc::new(Mutex::new(Vec::new()));
    let seen = handed_back.clone();
    let app = sluice_example_orders::app(isolated_settings()).after_commit(move |ids| {
        let mut seen = seen.lock().expect("hook state");
        if ids.contains(&order) && !seen.contains(&order) {
            seen.push(order);
            return AfterCommit::Redeliver;
        }
        AfterCommit::Ack
    });
    let app = TestSluice::start(app).await;
    add_product(&app, "kettle", 2_500, 5).await;

    let r =
        app.submit("order.place", json!({"order_id": "o-1", "sku": "kettle", "quantity": 2}), Some("order-1")).await;
    assert_eq!(r.status(), 202);
    let done = app.settled(order).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["total_cents"], 5_000);

    // The second delivery reached the worker and found the command already applied.
    sluice::testkit::eventually(sluice::testkit::DEADLINE, || async {
        let dup = app.metric("sluice_commands_processed_total", &[r#"type="order.place""#, r#"outcome="duplicate""#]);
        (dup.await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(*handed_back.lock().unwrap(), vec![order], "the commit was handed back once");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM shop.orders WHERE command_id = $1")
        .bind(order)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(orders, 1, "one order row");
    assert_eq!(stock_of(&app, "kettle").await, 3, "stock taken once, not twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_for_an_unknown_product_is_rejected_and_writes_nothing() {
    let app = TestSluice::start(sluice_example_orders::app(isolated_settings())).await;
    let id = app.accept("order.place", json!({"order_id": "o-2", "sku": "unicorn", "quantity": 1})).await;
    let done = app.settled(id).await;
    assert_eq!(done["status"], "rejected", "{done}");
    assert_eq!(done["result"]["reason"], "unknown_product");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM shop.orders").fetch_one(&app.pool).await.unwrap();
    assert_eq!(orders, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_validates_orders_against_the_derived_schema_and_documents_them() {
    let app = TestSluice::start(sluice_example_orders::app(isolated_settings())).await;
    let r = app.submit("order.place", json!({"order_id": "o-3", "sku": "kettle", "quantity": 0}), None).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("/payload/quantity"), "{body}");

    let doc = app.get_json("/openapi.json").await;
    assert!(doc.to_string().contains("order.place"), "the API document lists order.place");
    // Only the application's types: this service carries no ledger.
    let r = app.submit("ledger.transfer", json!({"from": "a", "to": "b", "amount_cents": 1}), None).await;
    assert_eq!(r.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_keeps_its_migration_history_apart_from_sluices() {
    let app = TestSluice::start(sluice_example_orders::app(isolated_settings())).await;
    let shop: Vec<String> = sqlx::query_scalar("SELECT description FROM shop._sqlx_migrations ORDER BY version")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(shop, vec!["shop"]);
    let sluice_own: i64 = sqlx::query_scalar("SELECT count(*) FROM public._sqlx_migrations WHERE description = 'shop'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sluice_own, 0, "sluice's history does not hold the shop's migration");
}
