//! Webhook signatures: verifying what senders sign (Standard Webhooks, GitHub, Stripe, plain
//! HMAC-SHA256) over the exact raw body, in constant time, and signing sluice's own callbacks.

pub mod github;
pub mod hmac_sha256;
pub mod inbound;
pub mod outbound;
pub mod standard;
pub mod stripe;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a delivery's signature was not accepted; every case is a 401 and nothing is stored as
/// verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("timestamp outside the tolerance of {0} s")]
    OutsideTolerance(i64),
    #[error("no signature matches")]
    Mismatch,
}

/// HMAC-SHA256 of `parts` concatenated, under `key` (HMAC takes keys of any length, so this
/// is `None` never in practice).
fn mac(key: &[u8], parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    for p in parts {
        m.update(p);
    }
    Some(m)
}

/// Whether `expected` (raw MAC bytes) is the MAC of `parts` under `key`, in constant time.
fn matches(key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    mac(key, parts).is_some_and(|m| m.verify_slice(expected).is_ok())
}

/// Ok if `mac` is the MAC of `parts` under any of `keys` (secret rotation), else a mismatch.
fn any_key_matches(keys: &[Vec<u8>], parts: &[&[u8]], mac: &[u8]) -> Result<(), VerifyError> {
    if keys.iter().any(|k| matches(k, parts, mac)) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The MAC of `parts` under `key`, as bytes.
pub(crate) fn sign(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    mac(key, parts).map(|m| m.finalize().into_bytes().to_vec()).unwrap_or_default()
}

/// Checks a sender's timestamp (seconds) against now, within `tolerance` either way.
fn check_time(ts: &str, now: i64, tolerance: i64, what: &'static str) -> Result<(), VerifyError> {
    let ts: i64 = ts.trim().parse().map_err(|_| VerifyError::Malformed(what))?;
    // abs_diff: a sender's i64::MIN must not overflow into "within tolerance".
    if now.abs_diff(ts) > tolerance.unsigned_abs() {
        return Err(VerifyError::OutsideTolerance(tolerance));
    }
    Ok(())
}
