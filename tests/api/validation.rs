//! Bad input: a clear 4xx with a JSON body saying what and where; nothing published.

use crate::helpers::{spawn_app, spawn_app_with, Probe, TestApp};
use serde_json::{json, Value};

async fn post_raw(app: &TestApp, body: impl Into<reqwest::Body>, content_type: &str) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/v1/commands", app.base))
        .bearer_auth(&app.key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.expect("every error has a JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_a_400_that_points_at_the_line_and_column() {
    let app = spawn_app().await;
    let (status, body) = post_raw(&app, "{\"type\": \"account.open\",\n \"payload\": {", "application/json").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "malformed_json");
    assert!(body["error"]["location"].as_str().unwrap().contains("line 2"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_command_type_is_a_422_that_lists_the_known_ones() {
    let app = spawn_app().await;
    let r = app.submit("ledger.teleport", json!({})).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_type");
    assert_eq!(body["error"]["violations"][0]["path"], "/type");
    assert!(body["error"]["message"].as_str().unwrap().contains("ledger.transfer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_breaking_its_schema_is_a_422_naming_every_failing_path() {
    let app = spawn_app().await;
    let r = app.submit("ledger.transfer", json!({"from": "a", "to": 7, "amount_cents": -5})).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_payload");
    let mut paths: Vec<&str> =
        body["error"]["violations"].as_array().unwrap().iter().map(|v| v["path"].as_str().unwrap()).collect();
    paths.sort_unstable();
    assert_eq!(paths, vec!["/payload/amount_cents", "/payload/to"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_without_payload_or_with_extra_fields_is_a_422() {
    let app = spawn_app().await;
    let (status, body) = post_raw(&app, r#"{"type": "account.open"}"#, "application/json").await;
    assert_eq!((status, body["error"]["violations"][0]["path"].as_str()), (422, Some("/payload")));
    let (status, body) =
        post_raw(&app, r#"{"type": "account.open", "payload": {"account_id": "x"}, "oops": 1}"#, "application/json")
            .await;
    assert_eq!((status, body["error"]["violations"][0]["path"].as_str()), (422, Some("/oops")));
    let (status, _) = post_raw(&app, "[1, 2]", "application/json").await;
    assert_eq!(status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_a_413_that_states_the_limit() {
    let app = spawn_app_with(|s| s.http.body_limit_bytes = 1024, &Probe::default()).await;
    let big = json!({"type": "event.record", "payload": {"name": "n", "data": "x".repeat(2000)}}).to_string();
    let (status, body) = post_raw(&app, big, "application/json").await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["limit_bytes"], 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_json_content_type_is_a_415() {
    let app = spawn_app().await;
    let (status, body) = post_raw(&app, "type=account.open", "application/x-www-form-urlencoded").await;
    assert_eq!((status, body["error"]["code"].as_str()), (415, Some("unsupported_media_type")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_idempotency_key_is_a_400_naming_the_header() {
    let app = spawn_app().await;
    let r = app.submit_as(&app.key, "event.record", json!({"name": "n", "data": 1}), Some(&"k".repeat(300))).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["location"], "header Idempotency-Key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_path_and_query_parameters_are_400s_not_500s() {
    let app = spawn_app().await;
    let r = app.get("/v1/commands/not-a-uuid").await;
    assert_eq!(r.status(), 400);
    let r = app.get("/v1/events?limit=0").await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["location"], "query limit");
    assert_eq!(app.get("/v1/events?from=yesterday").await.status(), 400);
    assert_eq!(app.get("/v1/events?cursor=zzz").await.status(), 400);
    assert_eq!(app.get("/v1/accounts/nobody").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_is_a_429_with_retry_after_and_other_tenants_are_unaffected() {
    let app = crate::helpers::spawn_app_with(
        |s| {
            s.limits.rate_per_second = 1.0;
            s.limits.burst = 2.0;
        },
        &crate::helpers::Probe::default(),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(app.get("/v1/events").await.status(), 200);
    }
    let r = app.get("/v1/events").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    let other = sluice::auth::create_key(&app.pool, "test", "globex", &["read".into()]).await.unwrap();
    let r = app.http.get(format!("{}/v1/events", app.base)).bearer_auth(&other.key).send().await.unwrap();
    assert_eq!(r.status(), 200, "buckets are per key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_and_long_strings_are_400s_that_say_where() {
    let app = crate::helpers::spawn_app_with(
        |s| {
            s.limits.max_json_depth = 5;
            s.limits.max_string_bytes = 100;
        },
        &crate::helpers::Probe::default(),
    )
    .await;
    let deep = serde_json::json!({"name": "n", "data": {"a": {"b": {"c": 1}}}});
    let r = app.submit("event.record", deep).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_deep");
    assert_eq!(body["error"]["location"], "body /payload/data/a/b/c");
    let r = app.submit("event.record", serde_json::json!({"name": "x".repeat(101), "data": 1})).await;
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["location"].as_str()),
        (Some("string_too_long"), Some("body /payload/name"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_503_with_retry_after_while_the_work_queue_is_past_its_bound() {
    let app = crate::helpers::spawn_app_with(|s| s.limits.max_queue_depth = 3, &crate::helpers::Probe::default()).await;
    let queue = format!("{}.work", app.settings.broker.prefix);
    // Subscribed first, so that "no consumers" below means paused, not "not started yet".
    crate::helpers::eventually(std::time::Duration::from_secs(20), || async {
        (crate::operators::work_queue(&app).await["consumers"] == 1).then_some(())
    })
    .await;
    assert_eq!(app.post_json(&format!("/v1/queues/{queue}/pause"), None).await.status(), 200);
    crate::helpers::eventually(std::time::Duration::from_secs(20), || async {
        let q = app.get_json("/v1/queues").await;
        let work = q["queues"].as_array().unwrap().iter().find(|x| x["name"] == queue.as_str()).cloned().unwrap();
        (work["consumers"] == 0).then_some(())
    })
    .await;
    for i in 0..4 {
        app.accept("event.record", serde_json::json!({"name": "fill", "data": i})).await;
    }
    let r = crate::helpers::eventually(std::time::Duration::from_secs(20), || async {
        let r = app.submit("event.record", serde_json::json!({"name": "over", "data": 1})).await;
        (r.status() == 503).then_some(r)
    })
    .await;
    assert_eq!(r.headers()["retry-after"], "5");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("work queue holds"), "{body}");
    assert_eq!(app.post_json(&format!("/v1/queues/{queue}/resume"), None).await.status(), 200);
    crate::helpers::eventually(std::time::Duration::from_secs(20), || async {
        (app.submit("event.record", serde_json::json!({"name": "after", "data": 1})).await.status() == 202)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_400s_at_ingest_and_in_query_parameters() {
    let app = crate::helpers::spawn_app().await;
    let r = app.submit("event.record", serde_json::json!({"name": "n", "data": {"text": "a\u{0}b"}})).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["location"].as_str()),
        (Some("nul_character"), Some("body /payload/data/text"))
    );
    let r = app.get("/v1/dead-letters?fingerprint=%00x").await;
    assert_eq!(r.status(), 400, "found by schemathesis: a NUL in a filter was a 500");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["code"], "invalid_value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_received_commands_cannot_be_forged_through_the_command_api() {
    let app = crate::helpers::spawn_app().await;
    let payload = serde_json::json!({"source": "gh", "delivery_id": "x", "event": "push", "body": {}});
    let r = app.submit("webhook.received", payload).await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["code"], "not_submittable");
}
