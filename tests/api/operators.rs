//! Operators' view of the running system: queues (depth, consumers, pause and resume),
//! process heartbeats, outcome counts behind the charts, and the metrics.

use crate::helpers::{eventually, spawn_app, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

/// The work queue as `/v1/queues` reports it.
pub async fn work_queue(app: &TestApp) -> Value {
    let queues = app.get_json("/v1/queues").await;
    let name = format!("{}.work", app.settings.broker.prefix);
    queues["queues"].as_array().unwrap().iter().find(|q| q["name"] == name.as_str()).cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_keeps_its_messages_until_resumed_then_drains() {
    let app = spawn_app().await;
    let queue = format!("{}.work", app.settings.broker.prefix);
    // Subscribed first, so that "no consumers" below means paused, not "not started yet".
    eventually(DEADLINE, || async { (work_queue(&app).await["consumers"] == 1).then_some(()) }).await;
    assert_eq!(app.post_json(&format!("/v1/queues/{queue}/pause"), None).await.status(), 200);
    // Workers see the flag with their heartbeat and cancel their subscription.
    eventually(DEADLINE, || async { (work_queue(&app).await["consumers"] == 0).then_some(()) }).await;
    assert_eq!(work_queue(&app).await["paused"], true);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.accept("event.record", json!({"name": "held", "data": i})).await);
    }
    eventually(DEADLINE, || async { (work_queue(&app).await["messages"] == 5).then_some(()) }).await;
    assert_eq!(app.get_json(&format!("/v1/commands/{}", ids[0])).await["status"], "pending");

    assert_eq!(app.post_json(&format!("/v1/queues/{queue}/resume"), None).await.status(), 200);
    for id in ids {
        assert_eq!(app.settled(id).await["status"], "succeeded");
    }
    let audit = app.get_json("/v1/audit").await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["queue.resume", "queue.pause"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_process_beats_and_counts_outcomes_for_the_dashboard() {
    let app = spawn_app().await;
    let id = app.accept("event.record", json!({"name": "counted", "data": 1})).await;
    app.settled(id).await;
    let (roles, processed): (String, i64) = eventually(DEADLINE, || async {
        sqlx::query_as(
            "SELECT roles, processed FROM processes WHERE last_seen > now() - interval '10 seconds' AND processed > 0",
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap()
    })
    .await;
    assert_eq!((roles.as_str(), processed), ("api+worker", 1));
    let (succeeded, slots): (i64, Vec<i64>) = eventually(DEADLINE, || async {
        sqlx::query_as("SELECT succeeded, latency_buckets FROM outcome_counts WHERE type = 'event.record'")
            .fetch_optional(&app.pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(succeeded, 1);
    assert_eq!(slots.iter().sum::<i64>(), 1, "one latency observed: {slots:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_ingest_processing_latency_queues_and_dead_letters() {
    let app = spawn_app().await;
    let id = app.accept("event.record", json!({"name": "m", "data": 1})).await;
    app.settled(id).await;
    app.dead_event(9).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    let prefix = &app.settings.broker.prefix;
    for series in [
        "sluice_ingest_accepted_total{type=\"event.record\"}",
        "sluice_published_total",
        "sluice_commands_processed_total{type=\"event.record\",outcome=\"succeeded\"}",
        "sluice_commands_processed_total{type=\"event.record\",outcome=\"dead\"}",
        "sluice_e2e_seconds_bucket{type=\"event.record\",le=\"0.5\"}",
        "sluice_ingest_seconds_bucket{le=\"0.5\"}",
        &format!("sluice_queue_depth{{queue=\"{prefix}.work\"}}"),
        &format!("sluice_queue_consumers{{queue=\"{prefix}.work\"}}"),
        "sluice_dead_letters_parked",
        "sluice_broker_connected{role=\"api\"} 1",
        "sluice_broker_connected{role=\"worker\"} 1",
        "sluice_worker_in_flight",
    ] {
        assert!(text.lines().any(|l| l.starts_with(series)), "{series} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_lets_the_commands_already_held_finish_and_nothing_is_left_unacked() {
    let probe = crate::helpers::Probe::default();
    let app = crate::helpers::spawn_app_with(|_| {}, &probe).await;
    let queue = format!("{}.work", app.settings.broker.prefix);
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(app.accept("test.slow", json!({"millis": 1500})).await);
    }
    // Some are running (concurrency 4 in the test profile or less), the rest prefetched.
    eventually(DEADLINE, || async { (!probe.calls.lock().unwrap().is_empty()).then_some(()) }).await;
    assert_eq!(app.post_json(&format!("/v1/queues/{queue}/pause"), None).await.status(), 200);
    for id in &held {
        assert_eq!(app.settled(*id).await["status"], "succeeded", "what a worker held is finished and acked");
    }
    eventually(DEADLINE, || async { (work_queue(&app).await["consumers"] == 0).then_some(()) }).await;
    let later = app.accept("event.record", json!({"name": "after-pause", "data": 1})).await;
    eventually(DEADLINE, || async { (work_queue(&app).await["messages"] == 1).then_some(()) }).await;
    assert_eq!(app.post_json(&format!("/v1/queues/{queue}/resume"), None).await.status(), 200);
    assert_eq!(app.settled(later).await["status"], "succeeded");
    assert_eq!(work_queue(&app).await["messages"], 0);
}
