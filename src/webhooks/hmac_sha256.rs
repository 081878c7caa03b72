//! Plain HMAC-SHA256 over the body in a header the source names: hex, optionally prefixed
//! `sha256=`, or base64.

use super::{any_key_matches, VerifyError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Verifies a delivery against any of `secrets`.
pub fn verify(secrets: &[Vec<u8>], header: &'static str, value: Option<&str>, body: &[u8]) -> Result<(), VerifyError> {
    let value = value.map(str::trim).filter(|s| !s.is_empty()).ok_or(VerifyError::Missing(header))?;
    let value = value.strip_prefix("sha256=").unwrap_or(value);
    let mac = hex::decode(value)
        .ok()
        .filter(|m| m.len() == 32)
        .or_else(|| B64.decode(value).ok().filter(|m| m.len() == 32))
        .ok_or(VerifyError::Malformed(header))?;
    any_key_matches(secrets, &[body], &mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    const MAC: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    #[test]
    fn the_rfc_4231_vector_verifies_in_hex_prefixed_hex_and_base64() {
        let k = [b"Jefe".to_vec()];
        let body = b"what do ya want for nothing?";
        assert_eq!(verify(&k, "X-Signature", Some(MAC), body), Ok(()));
        assert_eq!(verify(&k, "X-Signature", Some(&format!("sha256={MAC}")), body), Ok(()));
        let b64 = B64.encode(hex::decode(MAC).unwrap());
        assert_eq!(verify(&k, "X-Signature", Some(&b64), body), Ok(()));
        assert_eq!(verify(&k, "X-Signature", Some(MAC), b"what do ya want for nothing!"), Err(VerifyError::Mismatch));
        assert_eq!(verify(&k, "X-Signature", None, body), Err(VerifyError::Missing("X-Signature")));
        assert_eq!(verify(&k, "X-Signature", Some(&MAC[..10]), body), Err(VerifyError::Malformed("X-Signature")));
    }
}
