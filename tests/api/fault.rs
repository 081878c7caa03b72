//! Tests that stop shared services. scripts/test runs them one at a time, after the rest;
//! each restores what it stopped, even when it fails.

use crate::helpers::spawn_app;
use crate::ledger::{check_books, open_accounts, settle_all, transfers};
use std::process::Command;
use std::sync::Arc;

/// Starts RabbitMQ's app again when dropped, so a failing test leaves the broker running.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["start_app"]).output();
        let _ = Command::new("rabbitmqctl").args(["await_startup"]).output();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_no_accepted_command_and_applies_none_twice() {
    let app = Arc::new(spawn_app().await);
    open_accounts(&app).await;
    let stream = {
        let app = app.clone();
        tokio::spawn(async move { transfers(&app, 1500, 16).await })
    };
    // Restart while the stream is running.
    crate::helpers::eventually(crate::helpers::DEADLINE, || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM commands WHERE type = 'ledger.transfer'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (n >= 100).then_some(())
    })
    .await;
    {
        let _guard = RestartGuard;
        rabbitmqctl(&["stop_app"]);
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    }
    let results = stream.await.unwrap();
    let accepted: Vec<uuid::Uuid> = results.iter().flatten().copied().collect();
    eprintln!("{} accepted, {} refused with 503 during the restart", accepted.len(), results.len() - accepted.len());
    // Every 202 is applied exactly once (or rejected); refused ones were never accepted.
    let (ok, rejected) = settle_all(&app, &accepted).await;
    assert_eq!((ok + rejected) as usize, accepted.len());
    check_books(&app).await;
    let reconnects = app.metric("sluice_broker_connects_total").await;
    assert!(reconnects >= 2.0, "sluice reconnected after the restart ({reconnects} connects)");
}

/// Puts RabbitMQ's memory watermark back when dropped.
struct WatermarkGuard;

impl Drop for WatermarkGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["set_vm_memory_high_watermark", "0.4"]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_memory_alarm_ingest_answers_503_quickly_and_recovers_after() {
    let app = spawn_app().await;
    assert_eq!(app.submit("event.record", serde_json::json!({"name": "before", "data": 1})).await.status(), 202);
    let refused = {
        let _guard = WatermarkGuard;
        rabbitmqctl(&["set_vm_memory_high_watermark", "0"]);
        // The broker blocks publishers; sluice must say so fast, never hang.
        crate::helpers::eventually(crate::helpers::DEADLINE, || async {
            let started = std::time::Instant::now();
            let r = app.submit("event.record", serde_json::json!({"name": "during", "data": 1})).await;
            let took = started.elapsed();
            assert!(took < std::time::Duration::from_secs(7), "an answer took {took:?}");
            (r.status() == 503).then_some(r)
        })
        .await
    };
    assert!(refused.headers().contains_key("retry-after"));
    crate::helpers::eventually(crate::helpers::DEADLINE, || async {
        (app.submit("event.record", serde_json::json!({"name": "after", "data": 1})).await.status() == 202)
            .then_some(())
    })
    .await;
}
