//! The properties the `cargo fuzz` targets in `fuzz/` check, one function per target. They
//! live in the library so that `tests/api/fuzz_regressions.rs` runs every input a fuzzer ever
//! crashed on (kept in `fuzz/regressions/<target>/`) through the same checks on stable Rust.
//! Each function panics when its property breaks.

use crate::command::Envelope;
use crate::webhooks::{github, hmac_sha256, sign, standard, stripe};
use axum::response::IntoResponse;

/// A property check over one fuzz input.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name, with their checks.
pub const TARGETS: &[(&str, Check)] = &[
    ("envelope_decode", envelope_decode),
    ("command_body", command_body),
    ("webhook_standard", webhook_standard),
    ("webhook_github", webhook_github),
    ("webhook_stripe", webhook_stripe),
    ("webhook_hmac", webhook_hmac),
];

/// A message body from the queue: decoding never panics, and what decodes re-encodes to
/// something that decodes to the same command.
pub fn envelope_decode(data: &[u8]) {
    if let Ok(cmd) = Envelope::decode(data) {
        let again = Envelope::decode(&cmd.encode()).expect("an encoded envelope decodes");
        // Not the payload: serde_json's floats need not survive a round trip to the last bit.
        assert_eq!(
            (again.id, &again.tenant, &again.kind, again.submitted_at, again.batch),
            (cmd.id, &cmd.tenant, &cmd.kind, cmd.submitted_at, cmd.batch)
        );
    }
}

/// A `POST /v1/commands` body through ingest's checks: never a panic, and every refusal is a
/// 4xx (bad input is the client's, never a 500).
pub fn command_body(data: &[u8]) {
    use std::sync::OnceLock;
    static SCHEMAS: OnceLock<crate::schemas::SchemaRegistry> = OnceLock::new();
    static LIMITS: OnceLock<crate::config::LimitSettings> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| crate::app::Catalog::builtin().expect("builtin types").schemas);
    let limits = LIMITS.get_or_init(|| {
        crate::config::Settings::load_from("fuzz", std::path::Path::new("/nonexistent"), false)
            .expect("default settings")
            .limits
    });
    if let Err(e) = crate::api::check_command_body(schemas, limits, data) {
        let status = e.into_response().status();
        assert!(status.is_client_error(), "ingest answered {status} to a client's body");
    }
}

const KEY: &[u8] = b"fuzz-secret-0123456789abcdef";
const NOW: i64 = 1_700_000_000;

/// Splits fuzz input into a header value (up to the first newline) and a body.
fn header_and_body(data: &[u8]) -> Option<(&str, &[u8])> {
    let cut = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let header = std::str::from_utf8(&data[..cut]).ok()?;
    Some((header, data.get(cut + 1..).unwrap_or_default()))
}

/// The body with its first byte changed, if it has one.
fn tampered(body: &[u8]) -> Option<Vec<u8>> {
    let mut b = body.to_vec();
    *b.first_mut()? ^= 1;
    Some(b)
}

/// Standard Webhooks: any header is handled without panic; the true signature verifies even
/// among garbage ones; a tampered body does not.
pub fn webhook_standard(data: &[u8]) {
    let Some((header, body)) = header_and_body(data) else { return };
    let keys = [KEY.to_vec()];
    let ts = NOW.to_string();
    let check = |sigs: &str, body: &[u8]| standard::verify(&keys, Some("msg_1"), Some(&ts), Some(sigs), body, NOW, 300);
    let _ = check(header, body);
    let good = standard::signature(KEY, "msg_1", NOW, body);
    assert!(check(&format!("{header} {good}"), body).is_ok(), "a valid signature among others verifies");
    if let Some(bad) = tampered(body) {
        assert!(check(&good, &bad).is_err(), "a tampered body is refused");
    }
}

/// GitHub's `X-Hub-Signature-256`.
pub fn webhook_github(data: &[u8]) {
    let Some((header, body)) = header_and_body(data) else { return };
    let keys = [KEY.to_vec()];
    let _ = github::verify(&keys, Some(header), body);
    let good = format!("sha256={}", hex::encode(sign(KEY, &[body])));
    assert!(github::verify(&keys, Some(&good), body).is_ok(), "the true signature verifies");
    if let Some(bad) = tampered(body) {
        assert!(github::verify(&keys, Some(&good), &bad).is_err(), "a tampered body is refused");
    }
}

/// Stripe's `Stripe-Signature: t=…,v1=…`.
pub fn webhook_stripe(data: &[u8]) {
    let Some((header, body)) = header_and_body(data) else { return };
    let keys = [KEY.to_vec()];
    let _ = stripe::verify(&keys, Some(header), body, NOW, 300);
    let ts = NOW.to_string();
    let v1 = hex::encode(sign(KEY, &[ts.as_bytes(), b".", body]));
    // The true signature verifies even after whatever else the header holds.
    let good = format!("t={NOW},{},v1={v1}", header.replace(['t', ','], ""));
    assert!(stripe::verify(&keys, Some(&good), body, NOW, 300).is_ok(), "the true signature verifies: {good}");
    if let Some(bad) = tampered(body) {
        assert!(stripe::verify(&keys, Some(&good), &bad, NOW, 300).is_err(), "a tampered body is refused");
    }
}

/// Plain HMAC-SHA256 in a configured header (hex, `sha256=` hex, or base64).
pub fn webhook_hmac(data: &[u8]) {
    use base64::Engine;
    let Some((header, body)) = header_and_body(data) else { return };
    let keys = [KEY.to_vec()];
    let _ = hmac_sha256::verify(&keys, "X-Signature", Some(header), body);
    let mac = sign(KEY, &[body]);
    for good in [hex::encode(&mac), base64::engine::general_purpose::STANDARD.encode(&mac)] {
        assert!(hmac_sha256::verify(&keys, "X-Signature", Some(&good), body).is_ok(), "the true MAC verifies");
        if let Some(bad) = tampered(body) {
            assert!(
                hmac_sha256::verify(&keys, "X-Signature", Some(&good), &bad).is_err(),
                "a tampered body is refused"
            );
        }
    }
}
