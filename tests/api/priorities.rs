//! Priorities on RabbitMQ 3.10 quorum queues, which have none: a work queue per priority, and
//! workers that share their transaction slots 8 : 4 : 1 between the queues that have work.

use crate::helpers::{create_database, eventually, spawn_on, test_settings, Probe, TestApp, DEADLINE};
use crate::scheduling::post;
use serde_json::{json, Value};
use sluice::app::Roles;
use sluice::config::Settings;
use uuid::Uuid;

async fn api_and_settings(tweak: impl FnOnce(&mut Settings)) -> (TestApp, Settings, String) {
    let (mut settings, db) = test_settings();
    tweak(&mut settings);
    create_database(&db).await;
    let api = spawn_on(settings.clone(), db.clone(), Roles::Api, &Probe::default()).await;
    (api, settings, db)
}

async fn worker(settings: Settings, db: String) -> TestApp {
    let mut w = spawn_on(settings, db, Roles::Worker, &Probe::default()).await;
    w.owns_resources = false;
    w
}

/// Submits `n` events named `name` in batches of 1000 with `priority`.
async fn queue_events(app: &TestApp, name: &str, n: usize, priority: &str) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"type": "event.record", "payload": {"name": name, "data": {"i": i}}}))
            .collect();
        let (status, body) =
            post(app, &app.key, "/v1/batches", &json!({"commands": items, "priority": priority})).await;
        assert_eq!(status, 202, "{body}");
    }
}

async fn events_named(app: &TestApp, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE name = $1").bind(name).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_command_overtakes_a_backlog_of_low_ones() {
    let (api, settings, db) = api_and_settings(|s| s.worker.batch_size = 64).await;
    queue_events(&api, "backlog", 4000, "low").await;
    let body = json!({"type": "event.record", "payload": {"name": "urgent", "data": {}}, "priority": "high"});
    let (status, accepted) = post(&api, &api.key, "/v1/commands", &body).await;
    assert_eq!(status, 202, "{accepted}");
    let id: Uuid = accepted["id"].as_str().unwrap().parse().unwrap();
    let w = worker(settings, db).await;
    assert_eq!(api.settled(id).await["status"], "succeeded");
    let low_done = events_named(&api, "backlog").await;
    eprintln!("low commands applied before the high one: {low_done} of 4000");
    assert!(low_done < 4000, "the high command waited for the whole low backlog");
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_work_progresses_while_high_work_keeps_the_worker_busy() {
    let (api, settings, db) = api_and_settings(|s| {
        s.worker.batch_size = 16;
        s.worker.concurrency = 2;
    })
    .await;
    queue_events(&api, "busy", 3000, "high").await;
    queue_events(&api, "trickle", 100, "low").await;
    let w = worker(settings, db).await;
    eventually(DEADLINE, || async { (events_named(&api, "trickle").await == 100).then_some(()) }).await;
    let high_done = events_named(&api, "busy").await;
    eprintln!("high commands applied by the time the 100 low ones were: {high_done} of 3000");
    assert!(high_done < 3000, "low work waited for the whole high backlog");
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_high_command_comes_back_to_the_high_queue_and_succeeds() {
    let probe = Probe::default();
    let app = crate::helpers::spawn_app_with(|s| s.worker.retry_tiers_ms = vec![200], &probe).await;
    let body = json!({"type": "test.flaky", "payload": {"fail_times": 1}, "priority": "high"});
    let (status, accepted) = post(&app, &app.key, "/v1/commands", &body).await;
    assert_eq!(status, 202, "{accepted}");
    let id: Uuid = accepted["id"].as_str().unwrap().parse().unwrap();
    let done = app.settled(id).await;
    assert_eq!((done["status"].as_str(), done["attempts"].as_i64()), (Some("succeeded"), Some(2)), "{done}");
    assert_eq!(probe.calls_of(id).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_priority_is_refused_naming_the_field() {
    let (api, _, _) = api_and_settings(|_| {}).await;
    let body = json!({"type": "event.record", "payload": {"name": "x", "data": {}}, "priority": "urgent"});
    let (status, answer) = post(&api, &api.key, "/v1/commands", &body).await;
    assert_eq!((status, answer["error"]["violations"][0]["path"].as_str()), (422, Some("/priority")), "{answer}");
    let batch = json!({"commands": [{"type": "event.record", "payload": {"name": "x", "data": {}}}], "priority": 3});
    let (status, answer) = post(&api, &api.key, "/v1/batches", &batch).await;
    assert_eq!(status, 400, "{answer}");
}
