//! Inbound webhooks: each scheme verified over the raw bytes (with its public test vector where
//! there is one), re-deliveries applied once, refusals stored without their body.

use crate::helpers::{eventually, spawn_app, spawn_app_with, Probe, TestApp};
use serde_json::{json, Value};
use sluice::webhooks::standard;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn put_source(app: &TestApp, name: &str, body: Value) -> reqwest::Response {
    app.http
        .put(format!("{}/v1/webhook-sources/{name}", app.base))
        .bearer_auth(&app.key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn deliver(app: &TestApp, source: &str, headers: &[(&str, String)], body: &[u8]) -> reqwest::Response {
    let mut req = app.http.post(format!("{}/v1/webhooks/{source}", app.base)).body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap()
}

async fn events_named(app: &TestApp, name: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT data FROM events WHERE name = $1").bind(name).fetch_all(&app.pool).await.unwrap()
}

/// Header name and value pairs of a delivery.
type Headers = Vec<(&'static str, String)>;

fn standard_headers(id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = standard::decode_secret(STANDARD_SECRET).unwrap();
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", standard::signature(&key, id, ts, body)),
        ("content-type", "application/json".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_webhook_is_verified_recorded_and_a_redelivery_is_applied_once() {
    let app = spawn_app().await;
    assert_eq!(
        put_source(&app, "billing", json!({"scheme": "standard", "secrets": [STANDARD_SECRET]})).await.status(),
        200
    );
    let body = br#"{"type": "invoice.paid", "amount": 42}"#;
    let now = chrono::Utc::now().timestamp();
    let r = deliver(&app, "billing", &standard_headers("msg_1", now, body), body).await;
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["duplicate"], false);
    let r = deliver(&app, "billing", &standard_headers("msg_1", now, body), body).await;
    let second: Value = r.json().await.unwrap();
    assert_eq!((second["command_id"].clone(), second["duplicate"].clone()), (first["command_id"].clone(), json!(true)));
    let id = uuid::Uuid::parse_str(first["command_id"].as_str().unwrap()).unwrap();
    assert_eq!(app.settled(id).await["status"], "succeeded");
    app.metric_reaches("sluice_commands_processed_total{type=\"webhook.received\",outcome=\"duplicate\"}", 1.0).await;
    assert_eq!(
        events_named(&app, "webhook.billing.invoice.paid").await,
        [json!({"type": "invoice.paid", "amount": 42})]
    );
    let list = app.get_json("/v1/webhooks/billing/deliveries").await;
    let d = &list["deliveries"][0];
    assert_eq!((d["verified"].as_bool(), d["delivery_id"].as_str()), (Some(true), Some("msg_1")));
    assert_eq!(d["headers"]["webhook-id"], "msg_1");
    let raw: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM webhook_deliveries WHERE verified").fetch_one(&app.pool).await.unwrap();
    assert_eq!(raw, body, "the exact bytes are kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_s_documented_example_verifies_end_to_end() {
    let app = spawn_app().await;
    put_source(&app, "gh", json!({"scheme": "github", "secrets": ["It's a Secret to Everybody"]})).await;
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_owned();
    let headers =
        [("x-hub-signature-256", sig), ("x-github-delivery", "d-1".into()), ("x-github-event", "push".into())];
    let r = deliver(&app, "gh", &headers, b"Hello, World!").await;
    assert_eq!(r.status(), 200);
    let id = uuid::Uuid::parse_str(r.json::<Value>().await.unwrap()["command_id"].as_str().unwrap()).unwrap();
    app.settled(id).await;
    assert_eq!(events_named(&app, "webhook.gh.push").await, [json!("Hello, World!")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_and_plain_hmac_deliveries_verify_with_rotated_secrets() {
    let app = spawn_app().await;
    put_source(&app, "stripe", json!({"scheme": "stripe", "secrets": ["whsec_old_secret_1", "whsec_new_secret_2"]}))
        .await;
    let body = br#"{"id":"evt_9","type":"payment_intent.succeeded"}"#;
    let t = chrono::Utc::now().timestamp();
    let v1 = hmac_hex(b"whsec_new_secret_2", &[t.to_string().as_bytes(), b".", body]);
    let r = deliver(&app, "stripe", &[("stripe-signature", format!("t={t},v1={v1}"))], body).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    put_source(&app, "plain", json!({"scheme": "hmac", "secrets": ["a plain shared secret"], "signature_header": "X-Signature", "id_header": "X-Delivery"})).await;
    let sig = hmac_hex(b"a plain shared secret", &[b"{}"]);
    let r =
        deliver(&app, "plain", &[("x-signature", format!("sha256={sig}")), ("x-delivery", "p-1".into())], b"{}").await;
    assert_eq!(r.status(), 200);
    eventually(DEADLINE, || async {
        (events_named(&app, "webhook.stripe.payment_intent.succeeded").await.len() == 1
            && events_named(&app, "webhook.plain.received").await.len() == 1)
            .then_some(())
    })
    .await;
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_stale_or_unsigned_deliveries_are_401s_and_store_no_body() {
    let app = spawn_app().await;
    put_source(&app, "billing", json!({"scheme": "standard", "secrets": [STANDARD_SECRET], "tolerance_secs": 60}))
        .await;
    let body = br#"{"type": "invoice.paid"}"#;
    let now = chrono::Utc::now().timestamp();
    let signed = standard_headers("msg_2", now, body);
    let cases: Vec<(Headers, &[u8])> = vec![
        (signed.clone(), br#"{"type": "invoice.void"}"#),
        (standard_headers("msg_2", now - 120, body), body),
        (signed.iter().filter(|(k, _)| *k != "webhook-signature").cloned().collect(), body),
        (
            signed
                .iter()
                .map(|(k, v)| if *k == "webhook-id" { (*k, "msg_3".to_owned()) } else { (*k, v.clone()) })
                .collect(),
            body,
        ),
        (
            signed
                .iter()
                .map(|(k, v)| if *k == "webhook-signature" { (*k, v[..12].to_owned()) } else { (*k, v.clone()) })
                .collect(),
            body,
        ),
    ];
    for (headers, body) in &cases {
        let r = deliver(&app, "billing", headers, body).await;
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    }
    let (verified, bodies): (i64, i64) =
        sqlx::query_as("SELECT count(*) FILTER (WHERE verified), count(body) FROM webhook_deliveries")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((verified, bodies), (0, 0));
    let list = app.get_json("/v1/webhooks/billing/deliveries").await;
    assert_eq!(list["deliveries"].as_array().unwrap().len(), cases.len(), "refusals are listed with why");
    assert!(list["deliveries"].as_array().unwrap().iter().all(|d| d["verified"] == false && d["error"].is_string()));
    assert_eq!(deliver(&app, "nobody", &signed, body).await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_admin_only_checked_audited_and_listed_without_secrets() {
    let app = spawn_app().await;
    let reader = sluice::auth::create_key(&app.pool, "test", "acme", &["read".into(), "submit".into()]).await.unwrap();
    let r = app
        .http
        .put(format!("{}/v1/webhook-sources/x", app.base))
        .bearer_auth(&reader.key)
        .json(&json!({"scheme": "github", "secrets": ["0123456789"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for bad in [
        json!({"scheme": "carrier-pigeon", "secrets": ["0123456789"]}),
        json!({"scheme": "standard", "secrets": ["not-a-whsec-secret"]}),
        json!({"scheme": "github", "secrets": []}),
        json!({"scheme": "hmac", "secrets": ["0123456789"]}),
        json!({"scheme": "github", "secrets": ["0123456789"], "command_type": "no.such"}),
    ] {
        assert_eq!(put_source(&app, "src", bad.clone()).await.status(), 400, "{bad}");
    }
    assert_eq!(
        put_source(&app, "Bad Name", json!({"scheme": "github", "secrets": ["0123456789"]})).await.status(),
        400
    );
    assert_eq!(put_source(&app, "src", json!({"scheme": "github", "secrets": ["0123456789"]})).await.status(), 200);
    let list = app.get_json("/v1/webhook-sources").await;
    assert_eq!(list["sources"][0]["name"], "src");
    assert!(list["sources"][0].get("secrets").is_none(), "secrets are never shown");
    let audit = app.get_json("/v1/audit").await;
    assert_eq!(audit["entries"][0]["action"], "webhook_source.set");
    assert!(!audit["entries"][0]["details"].to_string().contains("0123456789"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_github_delivery_with_a_new_unsigned_id_is_still_applied_once() {
    let app = spawn_app().await;
    put_source(&app, "gh", json!({"scheme": "github", "secrets": ["It's a Secret to Everybody"]})).await;
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_owned();
    let mut ids = Vec::new();
    for delivery in ["d-1", "forged-2"] {
        let headers = [
            ("x-hub-signature-256", sig.clone()),
            ("x-github-delivery", delivery.into()),
            ("x-github-event", "push".into()),
        ];
        let r: Value = deliver(&app, "gh", &headers, b"Hello, World!").await.json().await.unwrap();
        ids.push(r["command_id"].clone());
    }
    assert_eq!(ids[0], ids[1], "the signed body, not the unsigned id, identifies the delivery");
    let id = uuid::Uuid::parse_str(ids[0].as_str().unwrap()).unwrap();
    app.settled(id).await;
    assert_eq!(events_named(&app, "webhook.gh.push").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_cannot_write_events_in_the_webhook_namespace() {
    let app = spawn_app().await;
    let id = app.accept("event.record", json!({"name": "webhook.gh.push", "data": {}})).await;
    let status = app.settled(id).await;
    assert_eq!(
        (status["status"].as_str(), status["result"]["reason"].as_str()),
        (Some("rejected"), Some("reserved_name"))
    );
    assert!(events_named(&app, "webhook.gh.push").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_unknown_sources_are_404s_without_a_database_read_each() {
    let app = spawn_app_with(|s| s.webhooks.source_cache_ms = 600_000, &Probe::default()).await;
    assert_eq!(deliver(&app, "nobody-0", &[], b"{}").await.status(), 404);
    let reads = app.metric("sluice_webhook_directory_reads_total").await;
    for i in 1..200 {
        assert_eq!(deliver(&app, &format!("nobody-{i}"), &[], b"{}").await.status(), 404);
    }
    assert_eq!(app.metric("sluice_webhook_directory_reads_total").await, reads, "answered from the directory");
    // A source this process configures is seen at once.
    put_source(&app, "fresh", json!({"scheme": "github", "secrets": ["fresh-secret-1"]})).await;
    assert_eq!(deliver(&app, "fresh", &[], b"{}").await.status(), 401, "known now: refused for its signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_rate_limited_per_client_address_and_per_source() {
    let app = spawn_app_with(
        |s| {
            (s.webhooks.client_rate_per_second, s.webhooks.client_burst) = (0.01, 5.0);
            (s.webhooks.rate_per_second, s.webhooks.burst) = (0.0, 1.0);
        },
        &Probe::default(),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(deliver(&app, "nobody", &[], b"{}").await.status(), 404);
    }
    let r = deliver(&app, "nobody", &[], b"{}").await;
    assert_eq!(r.status(), 429, "one address gets its burst");
    assert!(r.headers().contains_key("retry-after"));

    let app = spawn_app_with(|s| (s.webhooks.rate_per_second, s.webhooks.burst) = (0.01, 3.0), &Probe::default()).await;
    for name in ["busy", "quiet"] {
        put_source(&app, name, json!({"scheme": "github", "secrets": ["some-secret-1"]})).await;
    }
    for _ in 0..3 {
        assert_eq!(deliver(&app, "busy", &[], b"{}").await.status(), 401);
    }
    assert_eq!(deliver(&app, "busy", &[], b"{}").await.status(), 429, "one source gets its burst");
    assert_eq!(deliver(&app, "quiet", &[], b"{}").await.status(), 401, "other sources are not held back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_deliveries_are_kept_up_to_a_bound_per_source_newest_first() {
    let app = spawn_app_with(|s| s.webhooks.max_refused_kept = 3, &Probe::default()).await;
    put_source(&app, "noisy", json!({"scheme": "github", "secrets": ["noisy-secret-1"]})).await;
    for i in 0..10 {
        let headers = [("x-github-delivery", format!("d-{i}")), ("x-hub-signature-256", "sha256=00".to_owned())];
        assert_eq!(deliver(&app, "noisy", &headers, b"{}").await.status(), 401);
    }
    let kept: Vec<Value> = sqlx::query_scalar(
        "SELECT headers FROM webhook_deliveries WHERE source = 'noisy' AND NOT verified ORDER BY id DESC",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let ids: Vec<&str> = kept.iter().filter_map(|h| h["x-github-delivery"].as_str()).collect();
    assert_eq!(ids, ["d-9", "d-8", "d-7"], "the newest three are kept");
}
