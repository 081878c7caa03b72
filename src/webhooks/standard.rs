//! Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` (space-separated `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`),
//! secrets written `whsec_<base64>`.

use super::{check_time, matches, sign, VerifyError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// The key bytes of a `whsec_` secret (24 to 64 bytes), or `None` if it is not one.
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let key = B64.decode(secret.strip_prefix("whsec_")?).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// The `webhook-signature` value for a message.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = sign(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", B64.encode(mac))
}

/// Verifies a delivery against any of `keys` (rotation), with the timestamp within
/// `tolerance` seconds of `now`.
pub fn verify(
    keys: &[Vec<u8>],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), VerifyError> {
    let id = id.filter(|s| !s.is_empty()).ok_or(VerifyError::Missing("webhook-id"))?;
    let ts = timestamp.filter(|s| !s.is_empty()).ok_or(VerifyError::Missing("webhook-timestamp"))?;
    let sigs = signatures.filter(|s| !s.trim().is_empty()).ok_or(VerifyError::Missing("webhook-signature"))?;
    check_time(ts, now, tolerance, "webhook-timestamp")?;
    let mut well_formed = false;
    for candidate in sigs.split_whitespace() {
        let Some(("v1", b64)) = candidate.split_once(',') else { continue };
        let Ok(mac) = B64.decode(b64) else { continue };
        if mac.len() != 32 {
            continue;
        }
        well_formed = true;
        let ts = ts.trim();
        if keys.iter().any(|k| matches(k, &[id.as_bytes(), b".", ts.as_bytes(), b".", body], &mac)) {
            return Ok(());
        }
    }
    Err(if well_formed { VerifyError::Mismatch } else { VerifyError::Malformed("webhook-signature") })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector of the Standard Webhooks specification (its reference libraries' tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn key() -> Vec<Vec<u8>> {
        vec![decode_secret(SECRET).unwrap()]
    }

    #[test]
    fn the_specification_vector_signs_and_verifies() {
        assert_eq!(signature(&key()[0], ID, TS, BODY), SIGNATURE);
        let ts = TS.to_string();
        assert_eq!(verify(&key(), Some(ID), Some(&ts), Some(SIGNATURE), BODY, TS, 300), Ok(()));
    }

    #[test]
    fn one_matching_signature_among_several_is_enough_and_a_rotated_key_works() {
        let ts = TS.to_string();
        let sigs = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SIGNATURE}");
        assert_eq!(verify(&key(), Some(ID), Some(&ts), Some(&sigs), BODY, TS, 300), Ok(()));
        let rotated = vec![vec![7u8; 32], key()[0].clone()];
        assert_eq!(verify(&rotated, Some(ID), Some(&ts), Some(SIGNATURE), BODY, TS, 300), Ok(()));
    }

    #[test]
    fn tampering_with_body_id_or_timestamp_or_a_stale_timestamp_is_refused() {
        let ts = TS.to_string();
        let v = |id, ts: &str, sig, body, now| verify(&key(), Some(id), Some(ts), Some(sig), body, now, 300);
        assert_eq!(v(ID, &ts, SIGNATURE, br#"{"test": 2432232315}"#, TS), Err(VerifyError::Mismatch));
        assert_eq!(v("msg_other", &ts, SIGNATURE, BODY, TS), Err(VerifyError::Mismatch));
        let later = (TS + 1).to_string();
        assert_eq!(v(ID, &later, SIGNATURE, BODY, TS), Err(VerifyError::Mismatch));
        assert_eq!(v(ID, &ts, SIGNATURE, BODY, TS + 301), Err(VerifyError::OutsideTolerance(300)));
        assert_eq!(v(ID, &ts, SIGNATURE, BODY, TS - 301), Err(VerifyError::OutsideTolerance(300)));
    }

    #[test]
    fn missing_empty_or_truncated_signatures_are_refused() {
        let ts = TS.to_string();
        let v = |sig: Option<&str>| verify(&key(), Some(ID), Some(&ts), sig, BODY, TS, 300);
        assert_eq!(v(None), Err(VerifyError::Missing("webhook-signature")));
        assert_eq!(v(Some("")), Err(VerifyError::Missing("webhook-signature")));
        assert_eq!(v(Some("v1,")), Err(VerifyError::Malformed("webhook-signature")));
        assert_eq!(v(Some(&SIGNATURE[..20])), Err(VerifyError::Malformed("webhook-signature")));
        assert_eq!(
            v(Some("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")),
            Err(VerifyError::Malformed("webhook-signature"))
        );
        assert_eq!(
            verify(&key(), None, Some(&ts), Some(SIGNATURE), BODY, TS, 300),
            Err(VerifyError::Missing("webhook-id"))
        );
        assert_eq!(
            verify(&key(), Some(ID), None, Some(SIGNATURE), BODY, TS, 300),
            Err(VerifyError::Missing("webhook-timestamp"))
        );
        assert_eq!(
            verify(&key(), Some(ID), Some("soon"), Some(SIGNATURE), BODY, TS, 300),
            Err(VerifyError::Malformed("webhook-timestamp"))
        );
    }
}
