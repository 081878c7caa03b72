//! An HTTP endpoint as a command type's handler: a POST signed per Standard Webhooks, whose
//! answer decides the command. Delivery is at least once: `webhook-id` is the command id, the
//! same on every attempt and replay, and the receiver deduplicates on it.

use super::HttpSpec;
use crate::command::Envelope;
use crate::handlers::remote::{Call, CallError, CallFuture, Remote, RemoteLimits};
use crate::handlers::{Handler, HandlerError, HandlerFuture, Outcome};
use crate::webhooks::standard;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use tracing::Instrument;

/// Longest message taken from an endpoint's refusal.
const MAX_MESSAGE: usize = 1000;

/// Posts each command to one URL.
pub struct HttpEndpoint {
    spec: HttpSpec,
    client: reqwest::Client,
}

impl HttpEndpoint {
    /// A client for `spec`: its timeout, no redirects followed, no proxy from the environment.
    /// The URL is the operator's own (a file on the server), so private addresses are allowed.
    pub fn new(spec: &HttpSpec) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(spec.timeout_ms))
            .connect_timeout(Duration::from_millis(spec.timeout_ms.min(5_000)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(spec.max_in_flight)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { spec: spec.clone(), client })
    }

    async fn post(&self, call: Call<'_>) -> Result<Outcome, CallError> {
        let cmd = call.cmd;
        let body = serde_json::to_vec(&json!({
            "id": cmd.id,
            "type": cmd.kind,
            "tenant": cmd.tenant,
            "payload": cmd.payload,
            "attempt": call.attempt,
            "submitted_at": cmd.submitted_at,
        }))
        .map_err(|e| CallError::Permanent(format!("the command cannot be encoded: {e}")))?;
        let id = cmd.id.to_string();
        let now = chrono::Utc::now().timestamp();
        let mut request = self
            .client
            .post(self.spec.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", standard::signature(&self.spec.key, &id, now, &body));
        if let Some(tp) = call.traceparent {
            request = request.header("traceparent", tp);
        }
        let response = request.body(body).send().await.map_err(|e| transient(describe_send_error(&e), None))?;
        let status = response.status();
        let retry_after = retry_after(response.headers(), chrono::Utc::now());
        let (bytes, complete) = read_bounded(response, self.spec.max_response_bytes).await?;
        classify(status, &bytes, complete, retry_after)
    }
}

impl Handler for HttpEndpoint {
    fn handle<'a>(&'a self, _tx: &'a mut sqlx::PgConnection, _cmd: &'a Envelope) -> HandlerFuture<'a> {
        // The worker calls `remote` for this handler; reaching here would hold a transaction
        // open across a network call, which is what the remote path exists to avoid.
        Box::pin(async { Err(HandlerError::Permanent("an HTTP handler runs outside transactions only".into())) })
    }

    fn remote(&self) -> Option<&dyn Remote> {
        Some(self)
    }

    fn describe(&self) -> String {
        format!("HTTP POST {} (at most {} in flight per process)", self.spec.url, self.spec.max_in_flight)
    }
}

impl Remote for HttpEndpoint {
    fn limits(&self) -> RemoteLimits {
        RemoteLimits {
            max_in_flight: self.spec.max_in_flight,
            circuit_failures: self.spec.circuit_failures,
            circuit_open: Duration::from_millis(self.spec.circuit_open_ms),
        }
    }

    fn call<'a>(&'a self, call: Call<'a>) -> CallFuture<'a> {
        let span = tracing::info_span!("http_handler", url = %self.spec.url, attempt = call.attempt);
        Box::pin(self.post(call).instrument(span))
    }
}

fn transient(error: String, retry_after: Option<Duration>) -> CallError {
    CallError::Transient { error, retry_after }
}

fn describe_send_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the endpoint did not answer in time".into()
    } else if e.is_connect() {
        format!("cannot connect to the endpoint: {e}")
    } else {
        format!("the request to the endpoint failed: {e}")
    }
}

/// Reads at most `limit` bytes of the body; the flag says whether that was all of it.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<(Vec<u8>, bool), CallError> {
    let mut body = Vec::new();
    loop {
        let chunk =
            response.chunk().await.map_err(|e| transient(format!("the endpoint's answer broke off: {e}"), None))?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > limit {
            body.extend_from_slice(&chunk[..limit - body.len()]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// What an answer means for the command.
fn classify(
    status: StatusCode,
    body: &[u8],
    complete: bool,
    retry_after: Option<Duration>,
) -> Result<Outcome, CallError> {
    let code = status.as_u16();
    match code {
        200..=299 => Ok(Outcome::Succeeded(result_of(body, complete))),
        // The receiver already has this webhook-id: it deduplicated a repeated call.
        409 => Ok(Outcome::Succeeded(json!({"duplicate": true}))),
        408 | 425 | 429 | 500..=599 => {
            Err(transient(format!("the endpoint answered {status}: {}", message_of(body)), retry_after))
        }
        400..=499 => Ok(Outcome::Rejected { reason: format!("http_{code}"), message: message_of(body) }),
        300..=399 => Err(CallError::Permanent(format!(
            "the endpoint answered {status} (redirects are not followed; fix http.url and replay)"
        ))),
        _ => Err(CallError::Permanent(format!("the endpoint answered {status}, which sluice does not understand"))),
    }
}

/// A 2xx body as the command's result: its JSON, its text as a string, or nothing.
fn result_of(body: &[u8], complete: bool) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    if !complete {
        return json!({"truncated": true});
    }
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// A refusal's explanation: `message` or `error` (or `error.message`) of a JSON body, or the
/// text, cut to [`MAX_MESSAGE`] bytes.
fn message_of(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(v) => ["/message", "/error/message", "/error", "/detail", "/title"]
            .iter()
            .find_map(|p| v.pointer(p).and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| v.to_string()),
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let text = if text.is_empty() { "(no body)".to_owned() } else { text };
    let mut end = text.len().min(MAX_MESSAGE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `Retry-After` in seconds or as an HTTP date, as a delay from `now`.
fn retry_after(headers: &HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER).and_then(|v: &HeaderValue| v.to_str().ok())?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_success_refusal_retry_or_dead_letter() {
        let ok = classify(StatusCode::OK, br#"{"order": 7}"#, true, None);
        assert_eq!(ok, Ok(Outcome::Succeeded(json!({"order": 7}))));
        assert_eq!(classify(StatusCode::NO_CONTENT, b"", true, None), Ok(Outcome::Succeeded(Value::Null)));
        assert_eq!(classify(StatusCode::OK, b"done", true, None), Ok(Outcome::Succeeded(json!("done"))));
        assert_eq!(
            classify(StatusCode::OK, b"{\"a\":", false, None),
            Ok(Outcome::Succeeded(json!({"truncated": true})))
        );
        let refused = classify(StatusCode::UNPROCESSABLE_ENTITY, br#"{"message": "no stock"}"#, true, None);
        assert_eq!(refused, Ok(Outcome::rejected("http_422", "no stock")));
        assert_eq!(classify(StatusCode::CONFLICT, b"", true, None), Ok(Outcome::Succeeded(json!({"duplicate": true}))));
        for status in [408, 425, 429, 500, 502, 503] {
            let s = StatusCode::from_u16(status).unwrap();
            assert!(matches!(classify(s, b"busy", true, None), Err(CallError::Transient { .. })), "{status}");
        }
        assert!(matches!(classify(StatusCode::FOUND, b"", true, None), Err(CallError::Permanent(_))));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().with_timezone(&chrono::Utc);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn a_refusals_message_comes_from_its_json_or_its_text() {
        assert_eq!(message_of(br#"{"error": {"message": "bad sku"}}"#), "bad sku");
        assert_eq!(message_of(br#"{"error": "bad sku"}"#), "bad sku");
        assert_eq!(message_of(b"  plain words "), "plain words");
        assert_eq!(message_of(b""), "(no body)");
        assert_eq!(message_of("é".repeat(2000).as_bytes()).len(), MAX_MESSAGE);
    }
}
