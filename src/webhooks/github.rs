//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`; the delivery id is
//! `X-GitHub-Delivery`, the event `X-GitHub-Event`. GitHub signs no timestamp.

use super::{any_key_matches, VerifyError};

/// Verifies a delivery against any of `secrets`.
pub fn verify(secrets: &[Vec<u8>], signature: Option<&str>, body: &[u8]) -> Result<(), VerifyError> {
    let sig = signature.filter(|s| !s.is_empty()).ok_or(VerifyError::Missing("X-Hub-Signature-256"))?;
    let hex_mac = sig.strip_prefix("sha256=").ok_or(VerifyError::Malformed("X-Hub-Signature-256"))?;
    let mac = hex::decode(hex_mac).map_err(|_| VerifyError::Malformed("X-Hub-Signature-256"))?;
    if mac.len() != 32 {
        return Err(VerifyError::Malformed("X-Hub-Signature-256"));
    }
    any_key_matches(secrets, &[body], &mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of GitHub's documentation ("Validating webhook deliveries").
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn the_documented_example_verifies() {
        assert_eq!(verify(&[SECRET.to_vec()], Some(SIGNATURE), BODY), Ok(()));
    }

    #[test]
    fn a_tampered_body_or_a_missing_truncated_or_foreign_signature_is_refused() {
        let s = [SECRET.to_vec()];
        assert_eq!(verify(&s, Some(SIGNATURE), b"Hello, World?"), Err(VerifyError::Mismatch));
        assert_eq!(verify(&s, None, BODY), Err(VerifyError::Missing("X-Hub-Signature-256")));
        assert_eq!(verify(&s, Some(""), BODY), Err(VerifyError::Missing("X-Hub-Signature-256")));
        assert_eq!(verify(&s, Some(&SIGNATURE[..40]), BODY), Err(VerifyError::Malformed("X-Hub-Signature-256")));
        assert_eq!(verify(&s, Some("sha1=757107ea"), BODY), Err(VerifyError::Malformed("X-Hub-Signature-256")));
        assert_eq!(verify(&[b"another secret".to_vec()], Some(SIGNATURE), BODY), Err(VerifyError::Mismatch));
    }
}
