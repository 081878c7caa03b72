//! Verifying one inbound delivery by its source's scheme, and reading the sender's delivery id
//! and event type.

use super::{github, hmac_sha256, standard, stripe, VerifyError};
use crate::store::webhooks::Source;
use axum::http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Schemes a source can use.
pub const SCHEMES: [&str; 4] = ["standard", "github", "stripe", "hmac"];

/// What a verified delivery is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's id of this delivery, as it says (for display).
    pub delivery_id: String,
    /// What identifies the delivery for deduplication: only what the signature covers, so a
    /// replayed delivery cannot pass as new by changing an unsigned id header.
    pub dedupe_key: String,
    /// The sender's event type (`push`, `invoice.paid`, ...), or `received` when it has none.
    pub event: String,
}

/// The key bytes of a source's secrets for its scheme (`None` if one is unusable).
pub fn keys(source: &Source) -> Option<Vec<Vec<u8>>> {
    source
        .secrets
        .iter()
        .map(|s| if source.scheme == "standard" { standard::decode_secret(s) } else { Some(s.as_bytes().to_vec()) })
        .collect()
}

/// What reading a verified delivery's event type or id may build (the API's own bound on the
/// body it then turns into a command is `limits.*`).
const DELIVERY_JSON_VALUES: usize = 100_000;
const DELIVERY_JSON_BYTES: usize = 16 << 20;

/// Verifies `body` (the exact bytes received) and its headers against `source`.
pub fn verify(source: &Source, headers: &HeaderMap, body: &[u8], now: i64) -> Result<Verified, VerifyError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let keys = keys(source).ok_or(VerifyError::Malformed("source secret"))?;
    let tolerance = i64::from(source.tolerance_secs);
    // Parsed only when a verified scheme asks for a field, and within the default budget:
    // nothing an unsigned sender sends is parsed.
    let json: std::cell::OnceCell<Option<Value>> = std::cell::OnceCell::new();
    let body_field = |k: &str| {
        let parsed = json.get_or_init(|| {
            let budget = crate::json::Budget::new(DELIVERY_JSON_VALUES, DELIVERY_JSON_BYTES);
            crate::json::parse(body, &[&budget]).ok()
        });
        parsed.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_owned)
    };
    match source.scheme.as_str() {
        "standard" => {
            standard::verify(
                &keys,
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
                body,
                now,
                tolerance,
            )?;
            // Standard Webhooks signs the id.
            let id = header("webhook-id").unwrap_or_default().to_owned();
            let event = body_field("type").unwrap_or_else(|| "received".into());
            Ok(Verified { dedupe_key: id.clone(), delivery_id: id, event })
        }
        "github" => {
            github::verify(&keys, header("x-hub-signature-256"), body)?;
            let id = header("x-github-delivery")
                .filter(|s| !s.is_empty())
                .ok_or(VerifyError::Missing("X-GitHub-Delivery"))?;
            let event = header("x-github-event").unwrap_or("received").to_owned();
            // GitHub signs neither the delivery id nor the event header: the body decides.
            Ok(Verified { delivery_id: id.to_owned(), dedupe_key: body_hash(body), event })
        }
        "stripe" => {
            stripe::verify(&keys, header("stripe-signature"), body, now, tolerance)?;
            // The event id is in the signed body.
            let id = body_field("id").ok_or(VerifyError::Malformed("body id"))?;
            let event = body_field("type").unwrap_or_else(|| "received".into());
            Ok(Verified { dedupe_key: id.clone(), delivery_id: id, event })
        }
        "hmac" => {
            // VerifyError names headers statically; the configured one is "signature header".
            hmac_sha256::verify(&keys, "signature header", source.signature_header.as_deref().and_then(header), body)?;
            // The id header is not signed: the body decides.
            let hash = body_hash(body);
            let id = source.id_header.as_deref().and_then(header).filter(|s| !s.is_empty()).unwrap_or(&hash).to_owned();
            Ok(Verified { delivery_id: id, dedupe_key: hash, event: "received".into() })
        }
        _ => Err(VerifyError::Malformed("source scheme")),
    }
}

fn body_hash(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// An event type as the `webhook.received` schema allows it (sanitized, at most 64 chars).
pub fn clean_event(event: &str) -> String {
    let cleaned: String = event
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_.:/-".contains(c) { c } else { '_' })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "received".into()
    } else {
        cleaned
    }
}
