//! Webhook signatures: verifying what senders sign (Standard Webhooks, GitHub, Stripe, plain
//! HMAC-SHA256) over the exact raw body, in constant time, and signing sluice's own callbacks.

pub mod github;
pub mod hmac_sha256;
pub mod inbound;
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

/// Whether `url`'s host resolves only to public addresses (not loopback, private, link-local,
/// unspecified or multicast), for callbacks a submitter chose.
pub async fn is_public_url(url: &str) -> bool {
    public_addrs(url).await.is_some()
}

/// The host of `url` and the addresses it resolves to, if they are all public; a caller that
/// then connects to exactly these addresses cannot be turned to another by DNS rebinding.
pub async fn public_addrs(url: &str) -> Option<(String, Vec<std::net::SocketAddr>)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let lookup = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::lookup_host((bare, port)));
    let addrs: Vec<_> = lookup.await.ok()?.ok()?.collect();
    (!addrs.is_empty() && addrs.iter().all(|a| is_public(a.ip()))).then_some((host, addrs))
}

fn is_public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0 // 0.0.0.0/8
                || (a == 100 && (64..128).contains(&b)) // shared address space
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            // IPv4-mapped, IPv4-compatible (::/96) and NAT64 (64:ff9b::/96) addresses reach
            // IPv4 hosts: judge the IPv4 address.
            let embedded = v6
                .to_ipv4_mapped()
                .or_else(|| (s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| v6.to_ipv4()).flatten());
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2002 // 6to4
                || embedded.is_some_and(|v4| !is_public(std::net::IpAddr::V4(v4))))
        }
    }
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
