//! Single publishes grouped into bursts (`broker.publish_bursts`): every request still gets
//! its own confirm, each command is applied once, with bursts on and off, and a request that
//! gave up before its burst went is never sent.

use crate::helpers::{eventually, spawn_app_with, Probe, TestApp, DEADLINE};
use serde_json::{json, Value};
use sluice::config::Secret;
use sluice_harness::proxy::Proxy;

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

/// How many `event.record` commands named `name` have been applied.
async fn recorded(app: &TestApp, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE name = $1")
        .bind(name)
        .fetch_one(&app.pool)
        .await
        .expect("count events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_timed_out_waiting_for_its_burst_is_never_sent() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    // Heartbeats far longer than the stall, so the link survives it and only confirms are late.
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=60", proxy.port);
    let app = spawn_app_with(
        |s| {
            s.broker.url = Secret::new(url);
            s.broker.publish_bursts = 1;
            s.broker.publish_timeout_ms = 1000;
        },
        &Probe::default(),
    )
    .await;
    app.accept("event.record", json!({"name": "before", "data": 1})).await;
    let bursts_before = app.metric("sluice_publish_burst_messages_count").await;

    proxy.stall();
    // The first request's burst goes into the stalled socket and awaits its confirm, so the
    // second request's publish has to wait for the next burst.
    let (sent, held) = tokio::join!(app.submit("event.record", json!({"name": "sent", "data": 1})), async {
        eventually(DEADLINE, || async {
            (app.metric("sluice_publish_burst_messages_count").await > bursts_before).then_some(())
        })
        .await;
        app.submit("event.record", json!({"name": "held", "data": 1})).await
    });
    for r in [sent, held] {
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.expect("json body");
        assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    }

    proxy.restore();
    // The first burst's confirm arrives; then the held publish is dropped instead of sent.
    app.metric_reaches("sluice_publish_abandoned_total", 1.0).await;
    app.accept("event.record", json!({"name": "after", "data": 1})).await;
    for name in ["after", "sent"] {
        eventually(DEADLINE, || async { (recorded(&app, name).await == 1).then_some(()) }).await;
    }
    assert_eq!(recorded(&app, "held").await, 0, "the request that gave up before its burst was not sent");
    assert_eq!(app.metric("sluice_publish_abandoned_total").await, 1.0);
}
