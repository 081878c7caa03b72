//! Transient failures retry through delay tiers; permanent ones and exhausted retries become
//! dead letters; redeliveries apply nothing twice.

use crate::helpers::{eventually, spawn_app, spawn_app_with, Probe, AMQP, DEADLINE};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use sluice::command::Envelope;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_with_growing_delays_then_succeeds() {
    let probe = Probe::default();
    let app = spawn_app_with(|_| {}, &probe).await; // tiers 100, 200, 400, 800 ms; 4 attempts
    let id = app.accept("test.flaky", json!({"fail_times": 3})).await;
    let status = app.status_becomes(id, "succeeded").await;
    assert_eq!(status["attempts"], 4);
    let calls = probe.calls_of(id);
    assert_eq!(calls.len(), 4);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    // Each delay is at least its tier (the TTL), so the floor doubles each time. A busy broker
    // may hold a delay past its TTL by a tick or so: adjacent gaps can come out even, so only
    // the first and the last, two doublings apart, are compared.
    for (gap, tier_ms) in gaps.iter().zip([100u64, 200, 400]) {
        assert!(*gap >= Duration::from_millis(tier_ms), "gaps {gaps:?}");
    }
    assert!(gaps[0] < gaps[2], "gaps {gaps:?}");
    assert!(app.dead_letters_of(id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_retries_run_out_is_dead_lettered_with_its_last_error() {
    let probe = Probe::default();
    let app = spawn_app_with(|_| {}, &probe).await;
    let id = app.accept("test.flaky", json!({"fail_times": 100})).await;
    let status = app.status_becomes(id, "dead").await;
    assert_eq!(status["attempts"], 4);
    assert_eq!(probe.calls_of(id).len(), 4, "exactly max_attempts attempts");
    let dead = eventually(DEADLINE, || async { Some(app.dead_letters_of(id).await).filter(|d| !d.is_empty()) }).await;
    assert_eq!(dead.len(), 1);
    let (kind, error, attempts) = &dead[0];
    assert_eq!((kind.as_str(), *attempts), ("retries_exhausted", 4));
    assert!(error.contains("flaky failure 4"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_dead_lettered_at_once() {
    let app = spawn_app().await;
    let id = app.accept("test.poison", json!({"anything": true})).await;
    let status = app.status_becomes(id, "dead").await;
    assert_eq!(status["attempts"], 1);
    let dead = eventually(DEADLINE, || async { Some(app.dead_letters_of(id).await).filter(|d| !d.is_empty()) }).await;
    assert_eq!((dead[0].0.as_str(), dead[0].2), ("permanent", 1));
    let (body, headers): (Vec<u8>, serde_json::Value) =
        sqlx::query_as("SELECT body, headers FROM dead_letters WHERE command_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(Envelope::decode(&body).unwrap().id, id, "the original message is kept");
    assert_eq!(headers["x-sluice-error-kind"], "permanent");
}

pub async fn publish_raw(app: &crate::helpers::TestApp, body: &[u8], message_id: &str) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let exchange = format!("{}.work", app.settings.broker.prefix);
    let props = BasicProperties::default().with_delivery_mode(2).with_message_id(message_id.into());
    let confirm = ch
        .basic_publish(exchange.as_str().into(), "work".into(), BasicPublishOptions::default(), body, props)
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_command_is_dead_lettered_not_lost() {
    let app = spawn_app().await;
    publish_raw(&app, b"\x00 definitely not json", "garbage-1").await;
    let (kind, body): (String, Vec<u8>) = eventually(DEADLINE, || async {
        sqlx::query_as("SELECT error_kind, body FROM dead_letters").fetch_optional(&app.pool).await.unwrap()
    })
    .await;
    assert_eq!(kind, "undecodable");
    assert_eq!(body, b"\x00 definitely not json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_transfer_applies_no_second_effect() {
    let app = spawn_app().await;
    app.open_account("a", 1000).await;
    app.open_account("b", 0).await;
    let cmd = Envelope::new("acme", "ledger.transfer", json!({"from": "a", "to": "b", "amount_cents": 300}), None);
    // The same message arriving three times: what a redelivery after a lost ack, or a
    // producer re-publishing, looks like to the worker.
    for _ in 0..3 {
        publish_raw(&app, &cmd.encode(), &cmd.id.to_string()).await;
    }
    app.metric_reaches("sluice_commands_processed_total{type=\"ledger.transfer\",outcome=\"duplicate\"}", 2.0).await;
    assert_eq!(app.settled(cmd.id).await["status"], "succeeded");
    assert_eq!((app.balance("a").await, app.balance("b").await), (700, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_crashes_its_worker_every_time_is_dead_lettered_by_the_delivery_limit() {
    let probe = Probe::default();
    let app = spawn_app_with(|s| s.broker.delivery_limit = 2, &probe).await;
    let id = app.accept("test.panic", json!({})).await;
    let dead = eventually(DEADLINE, || async { Some(app.dead_letters_of(id).await).filter(|d| !d.is_empty()) }).await;
    assert_eq!(dead[0].0, "delivery_limit");
    assert_eq!(probe.calls_of(id).len(), 3, "first delivery + delivery_limit redeliveries");
    assert_eq!(app.status_becomes(id, "dead").await["status"], "dead");
    // The rest of the pipeline is unaffected.
    let ok = app.accept("event.record", json!({"name": "after", "data": 1})).await;
    assert_eq!(app.settled(ok).await["status"], "succeeded");
}
