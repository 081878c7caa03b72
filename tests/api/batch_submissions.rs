//! `POST /v1/batches`: many commands in one request, validated item by item, with progress,
//! idempotent resubmission and a signed completion callback.

use crate::helpers::{eventually, spawn_app, spawn_app_with, Probe, TestApp};
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

impl TestApp {
    pub async fn post_batch(&self, body: Value, key: Option<&str>) -> reqwest::Response {
        let mut req = self.http.post(format!("{}/v1/batches", self.base)).bearer_auth(&self.key).json(&body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        req.send().await.unwrap()
    }

    /// Waits until the batch has finished and returns its status.
    pub async fn batch_finished(&self, id: &str) -> Value {
        eventually(DEADLINE, || async {
            let v = self.get_json(&format!("/v1/batches/{id}")).await;
            (!v["finished_at"].is_null()).then_some(v)
        })
        .await
    }
}

fn event(i: usize) -> Value {
    json!({"type": "event.record", "payload": {"name": "batched", "data": {"i": i}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_validated_item_by_item_and_its_progress_counts_every_outcome() {
    let app = spawn_app().await;
    let commands = json!([
        event(0),
        {"type": "event.record", "payload": {"name": 7, "data": 1}},
        event(2),
        {"type": "ledger.transfer", "payload": {"from": "nobody", "to": "nowhere", "amount_cents": 5}},
        {"type": "no.such.type", "payload": {}},
    ]);
    let r = app.post_batch(json!({"commands": commands}), None).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 3);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.iter().map(|r| r["index"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 4]);
    assert_eq!(rejected[0]["violations"][0]["path"], "/commands/1/payload/name");
    assert_eq!(rejected[1]["code"], "unknown_type");

    let status = app.batch_finished(body["id"].as_str().unwrap()).await;
    assert_eq!((status["total"].as_i64(), status["rejected_at_ingest"].as_i64()), (Some(3), Some(2)));
    assert_eq!((status["succeeded"].as_i64(), status["rejected"].as_i64()), (Some(2), Some(1)));
    assert_eq!((status["pending"].as_i64(), status["dead"].as_i64()), (Some(0), Some(0)));
    assert_eq!(status["failed_items"][0]["index"], 3);
    assert_eq!(status["failed_items"][0]["status"], "rejected");
    assert!(!status["started_at"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_or_nothing_accepts_nothing_when_one_item_is_invalid() {
    let app = spawn_app().await;
    let commands = json!([event(0), {"type": "event.record", "payload": {}}, event(2)]);
    let r = app.post_batch(json!({"commands": commands, "all_or_nothing": true}), None).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "batch_rejected");
    assert_eq!(body["error"]["items"][0]["index"], 1);
    assert_eq!(app.metric("sluice_published_total").await, 0.0, "nothing was published");
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM batches").fetch_one(&app.pool).await.unwrap();
    assert_eq!(batches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_a_batch_with_its_idempotency_key_applies_each_command_once() {
    let app = spawn_app().await;
    let opens: Vec<Value> = (0..20)
        .map(|i| json!({"type": "account.open", "payload": {"account_id": format!("acct-{i}"), "initial_balance_cents": 10}}))
        .collect();
    let first: Value = app.post_batch(json!({"commands": opens}), Some("import-7")).await.json().await.unwrap();
    let second: Value = app.post_batch(json!({"commands": opens}), Some("import-7")).await.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    let status = app.batch_finished(first["id"].as_str().unwrap()).await;
    assert_eq!((status["total"].as_i64(), status["succeeded"].as_i64()), (Some(20), Some(20)));
    assert_eq!(status["rejected"], 0, "no account.open was applied twice (that would be account_exists)");
    let total: i64 =
        sqlx::query_scalar("SELECT sum(balance_cents)::bigint FROM accounts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(total, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndjson_batch_is_read_line_by_line_and_a_bad_line_is_named() {
    let app = spawn_app().await;
    let lines = format!("{}\n\n{}\n", event(0), event(1));
    let post = |body: String| {
        app.http
            .post(format!("{}/v1/batches?all_or_nothing=true", app.base))
            .bearer_auth(&app.key)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };
    let r = post(lines).await.unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 2);
    app.batch_finished(body["id"].as_str().unwrap()).await;

    let r = post(format!("{}\n{{\"type\": oops}}\n", event(0))).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["location"], "body line 2 column 10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_limits_give_clear_4xx_errors() {
    let app = spawn_app_with(
        |s| {
            s.batches.max_commands = 3;
            s.batches.body_limit_bytes = 2000;
        },
        &Probe::default(),
    )
    .await;
    let four: Vec<Value> = (0..4).map(event).collect();
    let r = app.post_batch(json!({"commands": four}), None).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_batch_length");
    assert_eq!(app.post_batch(json!({"commands": []}), None).await.status(), 400);
    let huge = json!({"commands": [{"type": "event.record", "payload": {"name": "x".repeat(3000), "data": 1}}]});
    assert_eq!(app.post_batch(huge, None).await.status(), 413);
    let r = app
        .post_batch(json!({"commands": [event(0)], "callback_url": "ftp://x", "callback_secret": "whsec_x"}), None)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_callback");
    let r = app.post_batch(json!({"commandz": []}), None).await;
    assert_eq!(r.status(), 400, "unknown fields are refused, not ignored");

    // NDJSON is read as it arrives: one line past the maximum is refused, and so is a streamed
    // body (no Content-Length) once it passes the body limit.
    let line = |i: usize| format!("{}\n", json!({"type": "event.record", "payload": {"name": "n", "data": i}}));
    let r = app
        .http
        .post(format!("{}/v1/batches", app.base))
        .bearer_auth(&app.key)
        .header("content-type", "application/x-ndjson")
        .body((0..4).map(line).collect::<String>())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_batch_length");
    let chunks: Vec<String> = (0..3).map(|_| format!("{}\n", " ".repeat(900))).collect();
    assert_eq!(chunked_ndjson(&app, &chunks).await, 413);
}

/// POSTs NDJSON with `Transfer-Encoding: chunked`, one chunk per item; returns the status.
async fn chunked_ndjson(app: &crate::helpers::TestApp, chunks: &[String]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n",
        app.key
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    for c in chunks {
        // The server may answer and close before the last chunk: a failed write is fine.
        if tcp.write_all(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 64];
    let n = tcp.read(&mut answer).await.unwrap();
    let status = String::from_utf8_lossy(&answer[..n]);
    status.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A receiver that fails its first `fail` requests, then records what it gets.
async fn receiver(fail: usize) -> (String, Arc<Mutex<Vec<(HeaderMap, String)>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(0usize));
    let (g, s) = (got.clone(), seen.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                let n = {
                    let mut s = s.lock().unwrap();
                    *s += 1;
                    *s
                };
                if n <= fail {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                g.lock().unwrap().push((headers, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_batch_calls_back_signed_and_retries_until_the_receiver_accepts() {
    let app = spawn_app().await;
    let (url, got) = receiver(1).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = json!({"commands": [event(0), event(1)], "callback_url": url, "callback_secret": secret});
    let r: Value = app.post_batch(body, None).await.json().await.unwrap();
    let id = r["id"].as_str().unwrap().to_owned();
    let (headers, body) = eventually(DEADLINE, || async { got.lock().unwrap().first().cloned() }).await;
    let key = sluice::webhooks::standard::decode_secret(secret).unwrap();
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        sluice::webhooks::standard::verify(
            &[key],
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
            body.as_bytes(),
            now,
            300
        ),
        Ok(()),
        "the callback is signed with the submitter's secret"
    );
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], "batch.finished");
    assert_eq!((event["data"]["id"].as_str(), event["data"]["succeeded"].as_i64()), (Some(id.as_str()), Some(2)));
    let status = eventually(DEADLINE, || async {
        let v = app.get_json(&format!("/v1/batches/{id}")).await;
        (!v["callback"]["delivered_at"].is_null()).then_some(v)
    })
    .await;
    assert_eq!(status["callback"]["attempts"], 2, "the first attempt got a 500 and was retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_to_private_addresses_and_secrets_in_urls_are_refused() {
    let app = spawn_app_with(|s| s.batches.allow_private_callbacks = false, &Probe::default()).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    for url in ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://[::1]/hook", "http://169.254.169.254/latest"]
    {
        let r =
            app.post_batch(json!({"commands": [event(0)], "callback_url": url, "callback_secret": secret}), None).await;
        assert_eq!(r.status(), 400, "{url}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_callback");
    }
    let r = app
        .http
        .post(format!("{}/v1/batches?callback_url=https://example.com/h&callback_secret={secret}", app.base))
        .bearer_auth(&app.key)
        .header("content-type", "application/x-ndjson")
        .body(event(0).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a secret in the URL would be logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_ignore_proxy_variables_and_refuse_ports_not_allowed() {
    // A proxy from the environment would connect to whatever the name resolves to then, past
    // the address check: callbacks never use one. Set before sluice starts.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        // SAFETY: nextest runs each test in its own process, and no other thread runs yet
        // that reads the environment.
        unsafe { std::env::set_var(var, &proxy_url) };
    }
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (url, got) = receiver(0).await;
    let app = spawn_app().await;
    let body = json!({"commands": [event(0)], "callback_url": url, "callback_secret": secret});
    assert_eq!(app.post_batch(body, None).await.status(), 202);
    eventually(DEADLINE, || async { (!got.lock().unwrap().is_empty()).then_some(()) }).await;
    let proxied = tokio::time::timeout(std::time::Duration::from_millis(200), proxy.accept()).await;
    assert!(proxied.is_err(), "the callback went straight to its receiver, not through the proxy");

    let strict = spawn_app_with(|s| s.batches.callback_ports = vec![80, 443], &Probe::default()).await;
    let body = json!({"commands": [event(0)], "callback_url": url, "callback_secret": secret});
    let r = strict.post_batch(body, None).await;
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("batches.callback_ports"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_idempotency_keys_name_items_within_their_batch_and_must_be_unique_in_it() {
    let app = spawn_app().await;
    let keyed =
        |k: &str, i: usize| json!({"type": "event.record", "payload": {"name": "k", "data": i}, "idempotency_key": k});
    // The same key used by an earlier single command does not take this batch's item away.
    app.submit_as(&app.key, "event.record", json!({"name": "single", "data": 0}), Some("item-a")).await;
    let r =
        app.post_batch(json!({"commands": [keyed("item-a", 0), keyed("item-b", 1), keyed("item-a", 2)]}), None).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"][0]["index"], 2);
    assert_eq!(body["rejected"][0]["code"], "duplicate_idempotency_key");
    let status = app.batch_finished(body["id"].as_str().unwrap()).await;
    assert_eq!((status["total"].as_i64(), status["succeeded"].as_i64()), (Some(2), Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_last_commit_was_never_settled_is_finished_by_the_sweep_at_its_last_commands_time() {
    let app = spawn_app_with(|s| s.batches.sweep_interval_secs = 1, &Probe::default()).await;
    // As a worker that committed the batch's only command and died before settling it leaves
    // things: nothing will touch this batch again.
    let (batch, command) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    sqlx::query("INSERT INTO batches (id, tenant, total) VALUES ($1, 'acme', 1)")
        .bind(batch)
        .execute(&app.pool)
        .await
        .unwrap();
    let completed: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "INSERT INTO commands (id, tenant, type, status, attempts, submitted_at, completed_at, batch_id, batch_index)
         VALUES ($1, 'acme', 'event.record', 'succeeded', 1, now(), now() - interval '1 minute', $2, 0)
         RETURNING completed_at",
    )
    .bind(command)
    .bind(batch)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let status = app.batch_finished(&batch.to_string()).await;
    assert_eq!(status["succeeded"], 1);
    let finished: chrono::DateTime<chrono::Utc> = status["finished_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(finished, completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_pages_through_unfinished_batches_and_starts_over_at_the_end() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for minutes in [3, 2, 1] {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO batches (id, tenant, total, created_at) VALUES ($1, 'acme', 5, now() - make_interval(mins => $2))",
        )
        .bind(id)
        .bind(minutes)
        .execute(&app.pool)
        .await
        .unwrap();
        ids.push(id);
    }
    let (first, cursor) = sluice::store::batches::unfinished_after(&app.pool, None, 2).await.unwrap();
    assert_eq!(first, ids[..2]);
    assert!(cursor.is_some());
    let (rest, cursor) = sluice::store::batches::unfinished_after(&app.pool, cursor, 2).await.unwrap();
    assert_eq!(rest, ids[2..]);
    assert_eq!(cursor, None, "a short page ends the sweep; the next starts from the oldest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_burst_passes_on_a_full_bucket_and_its_commands_are_charged() {
    let app = spawn_app_with(
        |s| {
            s.limits.rate_per_second = 1.0;
            s.limits.burst = 5.0;
        },
        &Probe::default(),
    )
    .await;
    let twenty: Vec<Value> = (0..20).map(event).collect();
    assert_eq!(app.post_batch(json!({"commands": twenty}), None).await.status(), 202);
    let r = app.post_batch(json!({"commands": [event(0)]}), None).await;
    assert_eq!(r.status(), 429, "the batch's 20 commands left a debt");
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u32>().unwrap() >= 15);
}
