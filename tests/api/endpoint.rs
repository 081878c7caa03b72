//! A receiving service for declared HTTP types: records every call and answers as the
//! command's payload asks (`respond`: statuses for the 1st, 2nd, ... call of that
//! `webhook-id`, the last repeating; `sleep_ms`; `retry_after`; `message`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One call as the endpoint received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub json: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

type OnCall = Box<dyn Fn(&Seen) + Send + Sync>;

#[derive(Default)]
pub struct Shared {
    pub calls: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    pub most_in_flight: AtomicUsize,
    /// While set, every call is answered 503 whatever the payload says.
    pub down: AtomicBool,
    /// Run on each call before it is answered.
    pub on_call: Mutex<Option<OnCall>>,
}

/// A running endpoint.
pub struct Endpoint {
    pub url: String,
    pub shared: Arc<Shared>,
}

impl Endpoint {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new().fallback(receive).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, shared }
    }

    /// Calls made for command `id`, in order.
    pub fn calls_of(&self, id: uuid::Uuid) -> Vec<Seen> {
        let id = id.to_string();
        self.shared.calls.lock().unwrap().iter().filter(|c| c.header("webhook-id") == id).cloned().collect()
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let seen = Seen { at: Instant::now(), headers, body: body.to_vec(), json: json.clone() };
    let id = seen.header("webhook-id").to_owned();
    let n = {
        let mut calls = shared.calls.lock().unwrap();
        calls.push(seen.clone());
        calls.iter().filter(|c| c.header("webhook-id") == id).count()
    };
    if let Some(hook) = shared.on_call.lock().unwrap().as_ref() {
        hook(&seen);
    }
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let payload = &json["payload"];
    if let Some(ms) = payload["sleep_ms"].as_u64() {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    let statuses: Vec<u16> = payload["respond"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_u64()).map(|s| s as u16).collect())
        .unwrap_or_default();
    let mut status = statuses.get(n - 1).or(statuses.last()).copied().unwrap_or(200);
    if shared.down.load(Ordering::SeqCst) {
        status = 503;
    }
    let code = StatusCode::from_u16(status).expect("status");
    let mut response = if code.is_success() {
        (code, axum::Json(json!({"received": n, "echo": payload["note"]}))).into_response()
    } else {
        let message = payload["message"].as_str().unwrap_or("refused by the endpoint").to_owned();
        (code, axum::Json(json!({"message": message}))).into_response()
    };
    if let Some(secs) = payload["retry_after"].as_u64() {
        response.headers_mut().insert("retry-after", secs.to_string().parse().expect("header"));
    }
    response
}
