//! Single publishes grouped into bursts (`broker.publish_bursts`): every request still gets
//! its own confirm, and each command is applied once, with bursts on and off.

use crate::helpers::{eventually, spawn_app_with, Probe, TestApp, DEADLINE};
use serde_json::json;

/// Submits `n` events at once and waits until every one is recorded, asserting each exactly once.
async fn submit_concurrently_and_count(app: &TestApp, n: i64) {
    let answers = futures_util::future::join_all(
        (0..n).map(|i| app.submit("event.record", json!({"name": "burst", "data": {"i": i}}))),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 202), "every request was confirmed: {statuses:?}");
    let recorded = eventually(DEADLINE, || async {
        let (rows, distinct): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT (data->>'i')) FROM events WHERE name = 'burst'")
                .fetch_one(&app.pool)
                .await
                .expect("count events");
        (rows >= n).then_some((rows, distinct))
    })
    .await;
    assert_eq!(recorded, (n, n), "each command applied once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_commands_share_bursts_and_each_is_applied_once() {
    let app = spawn_app_with(|s| s.broker.publish_bursts = 1, &Probe::default()).await;
    submit_concurrently_and_count(&app, 300).await;
    let messages = app.metric("sluice_publish_burst_messages_sum").await;
    let bursts = app.metric("sluice_publish_burst_messages_count").await;
    eprintln!("{messages} single publishes in {bursts} bursts");
    assert!(messages >= 300.0, "every single publish went through a burst: {messages}");
    // 300 requests at once cannot each find no burst awaiting its confirm.
    assert!(bursts < messages, "publishes that arrived during a burst's round trip shared the next one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bursts_off_each_single_publish_goes_alone_and_each_is_applied_once() {
    let app = spawn_app_with(|s| s.broker.publish_bursts = 0, &Probe::default()).await;
    submit_concurrently_and_count(&app, 300).await;
    assert_eq!(app.metric("sluice_publish_burst_messages_count").await, 0.0, "no bursts were formed");
}
