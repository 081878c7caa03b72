//! A retry that falls in a memory alarm: RabbitMQ blocks the worker's connection when it
//! publishes the retry, and reads the publish only once the alarm ends. The worker waits for
//! that confirm, holding the delivery, instead of timing out and handing the message back,
//! which would run it twice (once from the queue, once from the retry) or, with publishers
//! known to be blocked, again and again with no backoff, toward the queue's delivery limit.

use crate::helpers::{eventually, spawn_app_with, Probe, DEADLINE};
use crate::operators::work_queue;
use serde_json::json;
use sluice_harness::services::{must, BrokerGuard};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_during_a_memory_alarm_is_held_and_retried_with_backoff_after_it() {
    let _guard = BrokerGuard;
    let probe = Probe::default();
    let app = spawn_app_with(|_| {}, &probe).await;
    let queue = format!("{}.work", app.settings.broker.prefix);
    // The command must first reach a worker during the alarm, which also blocks the API's
    // publishing: it is queued while the queue is paused, and the queue resumed in the alarm.
    eventually(DEADLINE, || async { (work_queue(&app).await["consumers"] == 1).then_some(()) }).await;
    assert_eq!(app.post_json(&format!("/v1/queues/{queue}/pause"), None).await.status(), 200);
    eventually(DEADLINE, || async { (work_queue(&app).await["consumers"] == 0).then_some(()) }).await;
    let id = app.accept("test.flaky", json!({"fail_times": 2})).await;

    must("rabbitmqctl", &["-q", "set_vm_memory_high_watermark", "0"]).await;
    assert_eq!(app.post_json(&format!("/v1/queues/{queue}/resume"), None).await.status(), 200);
    eventually(DEADLINE, || async { (!probe.calls_of(id).is_empty()).then_some(()) }).await;
    // RabbitMQ blocks a connection when it publishes in an alarm, and says so then.
    app.metric_reaches("sluice_broker_blocked{role=\"worker\"}", 1.0).await;
    // How long the alarm goes on after the first failure, longer than the 5 s publish timeout:
    // the fault itself. A worker that gave up on the blocked retry and handed the message back
    // would have it run again after the alarm twice, once from the retry RabbitMQ then reads
    // and once from the queue.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(probe.calls_of(id).len(), 1, "the failed delivery is held while publishers are blocked");
    let lifted = Instant::now();
    must("rabbitmqctl", &["-q", "set_vm_memory_high_watermark", "0.4"]).await;

    assert_eq!(app.settled(id).await["status"], "succeeded");
    let calls = probe.calls_of(id);
    assert_eq!(calls.len(), 3, "two failures, then success");
    assert!(calls[1] > lifted, "the second attempt came after the alarm");
    // The test profile's smallest retry tier is 100 ms.
    assert!(calls[2] - calls[1] >= Duration::from_millis(100), "the third attempt waited out its backoff");
    assert_eq!(app.metric("sluice_redeliveries_total").await, 0.0, "nothing went back to the queue");
    assert_eq!(app.metric("sluice_retries_total").await, 2.0);
    assert!(app.dead_letters_of(id).await.is_empty());
}
