//! Declared types whose handler is an HTTP endpoint: signed calls, what each answer means,
//! retries with the same `webhook-id`, Retry-After, dead letters replayed, the in-flight bound
//! and the circuit breaker.

use crate::endpoint::Endpoint;
use crate::helpers::{commands_dir, declare, eventually, spawn_app_with, Probe, TestApp, DEADLINE};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// An app with `order.place` posting to a fresh endpoint; `extra` adds to its `[http]` table.
async fn app_with_endpoint(extra: &str) -> (TestApp, Endpoint) {
    let endpoint = Endpoint::start().await;
    let dir = commands_dir();
    declare(&dir, "order.place", &format!("[http]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n{extra}", endpoint.url));
    let app = spawn_app_with(|s| s.commands.dir = dir, &Probe::default()).await;
    (app, endpoint)
}

/// The Standard Webhooks check, written out from the specification: HMAC-SHA256 keyed with
/// the secret's base64 bytes over `id.timestamp.body`, base64, after `v1,`.
fn signature_is_valid(seen: &crate::endpoint::Seen) -> bool {
    let key = base64::engine::general_purpose::STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", seen.header("webhook-id"), seen.header("webhook-timestamp")).as_bytes());
    mac.update(&seen.body);
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    seen.header("webhook-signature").split(' ').any(|s| s == expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_http_type_posts_a_signed_command_and_takes_the_answer_as_its_result() {
    let (app, endpoint) = app_with_endpoint("").await;
    let id = app.accept("order.place", json!({"note": "two lamps"})).await;
    let status = app.status_becomes(id, "succeeded").await;
    assert_eq!(status["result"], json!({"received": 1, "echo": "two lamps"}));
    let calls = endpoint.calls_of(id);
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert!(signature_is_valid(call), "signature {:?}", call.header("webhook-signature"));
    assert_eq!(call.header("webhook-id"), id.to_string());
    let ts: i64 = call.header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    assert!(call.header("traceparent").starts_with("00-"), "the trace goes along");
    let body = &call.json;
    assert_eq!(
        (body["id"].as_str(), body["type"].as_str(), body["tenant"].as_str()),
        (Some(&*id.to_string()), Some("order.place"), Some("acme"))
    );
    assert_eq!((body["payload"]["note"].as_str(), body["attempt"].as_u64()), (Some("two lamps"), Some(1)));
    assert!(body["submitted_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_answer_rejects_the_command_with_the_endpoints_message() {
    let (app, endpoint) = app_with_endpoint("").await;
    let id = app.accept("order.place", json!({"respond": [422], "message": "no stock for sku 7"})).await;
    let status = app.status_becomes(id, "rejected").await;
    assert_eq!(status["last_error"], "no stock for sku 7", "{status}");
    assert_eq!(status["result"]["reason"], "http_422");
    assert_eq!(endpoint.calls_of(id).len(), 1, "a refusal is final");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried_with_growing_delays_and_the_same_webhook_id_until_it_succeeds() {
    let (app, endpoint) = app_with_endpoint("").await;
    let id = app.accept("order.place", json!({"respond": [503, 500, 502, 200]})).await;
    let status = app.status_becomes(id, "succeeded").await;
    assert_eq!(status["attempts"], 4);
    let calls = endpoint.calls_of(id);
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|c| c.header("webhook-id") == id.to_string()), "one id across attempts");
    let attempts: Vec<u64> = calls.iter().map(|c| c.json["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, vec![1, 2, 3, 4]);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, tier_ms) in gaps.iter().zip([100u64, 200, 400]) {
        assert!(*gap >= Duration::from_millis(tier_ms), "gaps {gaps:?}");
    }
    assert!(gaps[0] < gaps[1] && gaps[1] < gaps[2], "gaps {gaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_up_to_the_longest_retry_tier() {
    let (app, endpoint) = app_with_endpoint("").await;
    // The test tiers end at 800 ms: a Retry-After of 30 s waits that long, not 100 ms.
    let id = app.accept("order.place", json!({"respond": [429, 200], "retry_after": 30})).await;
    app.status_becomes(id, "succeeded").await;
    let calls = endpoint.calls_of(id);
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at - calls[0].at;
    assert!(gap >= Duration::from_millis(800), "waited {gap:?}, the first tier is 100 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_http_command_is_dead_lettered_then_edited_replayed_and_succeeds() {
    let (app, endpoint) = app_with_endpoint("").await;
    let id = app.accept("order.place", json!({"respond": [503], "note": "first"})).await;
    let status = app.status_becomes(id, "dead").await;
    assert_eq!(status["attempts"], 4);
    let dead = eventually(DEADLINE, || async {
        let list = app.get_json("/v1/dead-letters?limit=500").await;
        list["dead_letters"].as_array()?.iter().find(|d| d["command_id"] == json!(id)).cloned()
    })
    .await;
    assert_eq!(dead["error_kind"], "retries_exhausted", "{dead}");
    let dl = dead["id"].as_str().unwrap();
    let r = app
        .http
        .post(format!("{}/v1/dead-letters/{dl}/replay", app.base))
        .bearer_auth(&app.key)
        .json(&json!({"payload": {"respond": [200], "note": "fixed"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let status = app.status_becomes(id, "succeeded").await;
    assert_eq!(status["result"]["echo"], "fixed");
    let calls = endpoint.calls_of(id);
    assert_eq!(calls.len(), 5);
    assert_eq!(calls[4].header("webhook-id"), id.to_string(), "a replay keeps the webhook-id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_is_held_to_max_in_flight_and_does_not_slow_other_types() {
    let (app, endpoint) = app_with_endpoint("max_in_flight = 2").await;
    let slow: Vec<Uuid> = {
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(app.accept("order.place", json!({"sleep_ms": 5000})).await);
        }
        ids
    };
    eventually(DEADLINE, || async { (endpoint.shared.calls.lock().unwrap().len() >= 2).then_some(()) }).await;
    let started = Instant::now();
    let mut events = Vec::new();
    for i in 0..50 {
        events.push(app.accept("event.record", json!({"name": "beside", "data": i})).await);
    }
    for id in &events {
        assert_eq!(app.settled(*id).await["status"], "succeeded");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "50 event.record took {took:?} beside 5 s calls");
    assert!(endpoint.shared.most_in_flight.load(Ordering::SeqCst) <= 2, "max_in_flight held");
    for id in &slow {
        let status = app.get_json(&format!("/v1/commands/{id}")).await;
        assert_ne!(status["status"], "succeeded", "the slow calls were still running meanwhile");
    }
    for id in slow {
        let status = app.status_becomes(id, "succeeded").await;
        assert_eq!(status["attempts"], 1, "waiting for a slot is not an attempt");
    }
    assert!(endpoint.shared.most_in_flight.load(Ordering::SeqCst) <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_keeps_failing_opens_its_circuit_and_commands_wait_instead_of_burning_attempts() {
    let (app, endpoint) = app_with_endpoint("circuit_failures = 3\ncircuit_open_ms = 1000").await;
    endpoint.shared.down.store(true, Ordering::SeqCst);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(app.accept("order.place", json!({"note": i})).await);
    }
    app.metric_reaches("sluice_circuit_opened_total{type=\"order.place\"}", 1.0).await;
    app.metric_reaches("sluice_remote_deferred_total{type=\"order.place\",reason=\"circuit_open\"}", 1.0).await;
    let open: Value = eventually(DEADLINE, || async {
        let rows: Vec<(Value,)> = sqlx::query_as("SELECT circuits FROM processes").fetch_all(&app.pool).await.ok()?;
        rows.into_iter().map(|r| r.0).find(|c| c["order.place"].is_string())
    })
    .await;
    assert!(matches!(open["order.place"].as_str(), Some("open" | "half_open")), "{open}");
    // Open, the circuit lets one probe through at a time: far fewer calls than 20 commands ×
    // 4 attempts would make at full speed.
    let calls_while_down = endpoint.shared.calls.lock().unwrap().len();
    endpoint.shared.down.store(false, Ordering::SeqCst);
    for id in &ids {
        assert_eq!(app.settled(*id).await["status"], "succeeded", "the endpoint is back: {id}");
    }
    assert!(calls_while_down < 40, "{calls_while_down} calls while the endpoint was down");
    app.metric_reaches("sluice_circuit_state{type=\"order.place\"}", 0.0).await;
}

/// `sluice serve` as a process of its own with `settings` and `commands.dir` = `dir`.
fn serve_process(settings: &sluice::config::Settings, dir: &std::path::Path, port: u16) -> tokio::process::Child {
    crate::helpers::serve_command(settings, port).env("SLUICE__COMMANDS__DIR", dir).spawn().expect("sluice starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_the_endpoint_answered_calls_again_with_the_same_webhook_id() {
    let endpoint = Endpoint::start().await;
    let dir = commands_dir();
    declare(&dir, "order.place", &format!("[http]\nurl = \"{}\"\nsecret = \"{SECRET}\"", endpoint.url));
    let (settings, _) = crate::helpers::test_settings();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let ready = || async {
        eventually(DEADLINE, || async {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await
    };
    let mut first = serve_process(&settings, &dir, port);
    ready().await;
    // The endpoint does the work, then the process that called it dies before its answer can
    // be committed: SIGKILL, as in a crash or an OOM kill.
    let pid = first.id().unwrap();
    *endpoint.shared.on_call.lock().unwrap() = Some(Box::new(move |_| {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }));
    let r = http
        .post(format!("{base}/v1/commands"))
        .bearer_auth(settings.auth.bootstrap_key.expose())
        .json(&json!({"type": "order.place", "payload": {"note": "once"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = Uuid::parse_str(r.json::<Value>().await.unwrap()["id"].as_str().unwrap()).unwrap();
    first.wait().await.unwrap();
    *endpoint.shared.on_call.lock().unwrap() = None;
    let mut second = serve_process(&settings, &dir, port);
    ready().await;
    let status: Value = eventually(DEADLINE, || async {
        let r = http
            .get(format!("{base}/v1/commands/{id}"))
            .bearer_auth(settings.auth.bootstrap_key.expose())
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        (v["status"] == "succeeded").then_some(v)
    })
    .await;
    let calls = endpoint.calls_of(id);
    assert_eq!(calls.len(), 2, "at least once: called again after the crash");
    assert!(calls.iter().all(|c| c.header("webhook-id") == id.to_string()), "the receiver can deduplicate");
    assert_eq!(status["result"]["received"], 2);
    let _ = second.start_kill();
    let _ = second.wait().await;
    crate::helpers::remove_test_resources(&settings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_types_own_max_attempts_replaces_the_workers() {
    let endpoint = Endpoint::start().await;
    let dir = commands_dir();
    std::fs::write(
        dir.join("order.place.toml"),
        format!("type = \"order.place\"\nschema = \"any.schema.json\"\n[retry]\nmax_attempts = 2\n[http]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n", endpoint.url),
    )
    .unwrap();
    let app = spawn_app_with(|s| s.commands.dir = dir, &Probe::default()).await;
    let id = app.accept("order.place", json!({"respond": [500]})).await;
    let status = app.status_becomes(id, "dead").await;
    assert_eq!(status["attempts"], 2, "the test profile's [worker] allows 4");
    assert_eq!(endpoint.calls_of(id).len(), 2);
}
