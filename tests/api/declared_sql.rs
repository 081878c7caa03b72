//! Declared types whose handler is a Postgres function, called in the worker's transaction:
//! its result, its refusals, timeouts retried, errors dead-lettered and replayed, and its
//! effect exactly once under redeliveries and inside worker batches.

use crate::helpers::{
    commands_dir, create_database, declare, eventually, serve, spawn_on, test_settings, Probe, TestApp, DEADLINE,
};
use serde_json::{json, Value};
use sluice::app::Roles;
use sluice::config::Settings;
use sluice::AfterCommit;
use sqlx::{Connection, PgConnection};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// `billing.apply_invoice`: records an invoice and returns it; a negative amount is refused
/// (RAISE EXCEPTION with a HINT), `slow_calls` makes the first n calls sleep past any statement
/// timeout, `divisor` divides by it (0 fails). Its call count is a sequence, and the first
/// three calls' start times (Unix microseconds) are the sequences `started_<n>`: no rollback
/// undoes a sequence.
const BILLING: &str = r#"
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (command_id uuid PRIMARY KEY, tenant text NOT NULL, amount int NOT NULL);
CREATE SEQUENCE billing.calls;
CREATE SEQUENCE billing.started_1;
CREATE SEQUENCE billing.started_2;
CREATE SEQUENCE billing.started_3;
CREATE FUNCTION billing.apply_invoice(payload jsonb, command_id uuid, tenant text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := nextval('billing.calls');
    amount int := (payload->>'amount')::int;
BEGIN
    IF n <= 3 THEN
        PERFORM setval(format('billing.started_%s', n)::regclass, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    END IF;
    INSERT INTO billing.invoices VALUES (command_id, tenant, amount);
    IF amount < 0 THEN
        RAISE EXCEPTION 'amount % is negative', amount USING HINT = 'negative_amount';
    END IF;
    IF payload ? 'slow_calls' AND n <= (payload->>'slow_calls')::int THEN
        PERFORM pg_sleep(3);
    END IF;
    IF payload ? 'divisor' THEN
        PERFORM 1 / (payload->>'divisor')::int;
    END IF;
    RETURN jsonb_build_object('invoice', command_id, 'amount', amount, 'call', n);
END
$$;
"#;

/// Settings and a database holding `billing.apply_invoice`, declared as `invoice.apply`.
async fn billing_settings(tweak: impl FnOnce(&mut Settings)) -> (Settings, String) {
    let (mut settings, db_name) = test_settings();
    create_database(&db_name).await;
    let mut conn = PgConnection::connect(&format!("postgres://postgres@127.0.0.1:5432/{db_name}")).await.unwrap();
    sqlx::raw_sql(BILLING).execute(&mut conn).await.expect("billing schema");
    let dir = commands_dir();
    declare(&dir, "invoice.apply", "[sql]\nfunction = \"billing.apply_invoice\"");
    settings.commands.dir = dir;
    tweak(&mut settings);
    (settings, db_name)
}

async fn billing_app(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (settings, db_name) = billing_settings(tweak).await;
    spawn_on(settings, db_name, Roles::All, &Probe::default()).await
}

async fn invoices(app: &TestApp, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM billing.invoices WHERE command_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_sql_type_applies_its_function_and_takes_its_jsonb_as_the_result() {
    let app = billing_app(|_| {}).await;
    let id = app.accept("invoice.apply", json!({"amount": 1200})).await;
    let status = app.status_becomes(id, "succeeded").await;
    assert_eq!(status["result"]["amount"], 1200);
    assert_eq!(status["result"]["invoice"], json!(id));
    let tenant: String = sqlx::query_scalar("SELECT tenant FROM billing.invoices WHERE command_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(tenant, "acme", "the function is told the tenant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raise_exception_rejects_the_command_with_its_message_and_writes_nothing() {
    let app = billing_app(|_| {}).await;
    let id = app.accept("invoice.apply", json!({"amount": -5})).await;
    let status = app.status_becomes(id, "rejected").await;
    assert_eq!(status["last_error"], "amount -5 is negative", "{status}");
    assert_eq!(status["result"]["reason"], "negative_amount", "the HINT is the reason");
    assert_eq!(invoices(&app, id).await, 0, "the refused command's insert was rolled back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_is_retried_with_growing_delays_and_then_succeeds() {
    let app = billing_app(|s| s.database.statement_timeout_ms = 1000).await;
    let id = app.accept("invoice.apply", json!({"amount": 7, "slow_calls": 2})).await;
    let status = app.status_becomes(id, "succeeded").await;
    assert_eq!(status["attempts"], 3);
    assert_eq!(status["result"]["call"], 3);
    let errors: Value =
        sqlx::query_scalar("SELECT errors FROM commands WHERE id = $1").bind(id).fetch_one(&app.pool).await.unwrap();
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|e| e["error"].as_str().unwrap().contains("timed out")), "{errors:?}");
    assert_eq!(invoices(&app, id).await, 1, "the timed-out attempts wrote nothing");
    let (s1, s2, s3): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT last_value FROM billing.started_1), (SELECT last_value FROM billing.started_2),
                (SELECT last_value FROM billing.started_3)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let started = [s1, s2, s3];
    // Each failed attempt took the statement timeout (1 s), then waited its tier (100 ms, then
    // 200 ms in the test profile) before the next call started.
    let delays: Vec<i64> = started.windows(2).map(|w| (w[1] - w[0]) / 1000 - 1000).collect();
    assert!(delays[0] >= 100 && delays[1] >= 200, "delays after the timeout {delays:?} ms");
    assert!(delays[0] < delays[1], "delays grow: {delays:?} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_is_dead_lettered_then_edited_replayed_and_applied_once() {
    let app = billing_app(|_| {}).await;
    let id = app.accept("invoice.apply", json!({"amount": 9, "divisor": 0})).await;
    app.status_becomes(id, "dead").await;
    let dead = eventually(DEADLINE, || async {
        let list = app.get_json("/v1/dead-letters?limit=500").await;
        list["dead_letters"].as_array()?.iter().find(|d| d["command_id"] == json!(id)).cloned()
    })
    .await;
    assert_eq!(dead["error_kind"], "database_error", "{dead}");
    assert_eq!(invoices(&app, id).await, 0);
    let r = app
        .http
        .post(format!("{}/v1/dead-letters/{}/replay", app.base, dead["id"].as_str().unwrap()))
        .bearer_auth(&app.key)
        .json(&json!({"payload": {"amount": 9, "divisor": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    app.status_becomes(id, "succeeded").await;
    assert_eq!(invoices(&app, id).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_redeliveries_after_commit_apply_the_function_once() {
    let (settings, db_name) = billing_settings(|_| {}).await;
    // Every command's first commit is followed by a redelivery instead of an ack, as when a
    // worker dies between its commit and its ack.
    let redelivered: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
    let seen = redelivered.clone();
    crate::helpers::install_telemetry(&settings);
    let built = sluice::App::builder(settings.clone())
        .builtin_domain()
        .after_commit(move |ids| {
            let mut seen = seen.lock().unwrap();
            // Every id is inserted (no short circuit): a batch's ids are all seen at once.
            let fresh = ids.iter().filter(|id| seen.insert(**id)).count() > 0;
            if fresh {
                AfterCommit::Redeliver
            } else {
                AfterCommit::Ack
            }
        })
        .build(Roles::All)
        .await
        .expect("app builds");
    let app = serve(built, settings, &db_name).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(app.accept("invoice.apply", json!({"amount": i})).await);
    }
    for id in &ids {
        app.status_becomes(*id, "succeeded").await;
    }
    app.metric_reaches("sluice_commands_processed_total{type=\"invoice.apply\",outcome=\"duplicate\"}", 1.0).await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.invoices").fetch_one(&app.pool).await.unwrap();
    assert_eq!(total, 20, "each invoice once");
    assert_eq!(redelivered.lock().unwrap().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_and_an_error_inside_a_batch_neither_lose_nor_double_the_others() {
    let app = billing_app(|_| {}).await;
    let mut commands: Vec<Value> =
        (0..30).map(|i| json!({"type": "invoice.apply", "payload": {"amount": i + 1}})).collect();
    commands[7] = json!({"type": "invoice.apply", "payload": {"amount": -1}});
    commands[19] = json!({"type": "invoice.apply", "payload": {"amount": 5, "divisor": 0}});
    let r = app
        .http
        .post(format!("{}/v1/batches", app.base))
        .bearer_auth(&app.key)
        .json(&json!({"commands": commands}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let batch: Value = r.json().await.unwrap();
    let batch_id = Uuid::parse_str(batch["id"].as_str().unwrap()).unwrap();
    let counts = eventually(DEADLINE, || async {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM commands WHERE batch_id = $1 AND status IN ('succeeded', 'rejected', 'dead')
              GROUP BY status ORDER BY status",
        )
        .bind(batch_id)
        .fetch_all(&app.pool)
        .await
        .ok()?;
        (rows.iter().map(|r| r.1).sum::<i64>() == 30).then_some(rows)
    })
    .await;
    assert_eq!(counts, vec![("dead".into(), 1), ("rejected".into(), 1), ("succeeded".into(), 28)]);
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.invoices").fetch_one(&app.pool).await.unwrap();
    assert_eq!(written, 28, "one invoice per succeeded command, none for the other two");
}
