//! Secrets at rest: webhook source secrets and batch callback secrets are sealed with
//! XChaCha20-Poly1305 before they reach Postgres, so a dump of the database holds none in clear.
//!
//! Keys come from `SLUICE_SECRETS_KEYS` (or `secrets.keys`): `id:base64key` entries separated by
//! commas, the first sealing new values and every one opening values sealed with it, so a key is
//! rotated by putting a new one first and running `sluice secrets rotate`, which reseals every
//! stored value with it. A sealed value reads `sealed:v1:<key id>:<base64 of nonce and
//! ciphertext>`; the key id is bound to it as associated data. A value without that prefix is
//! clear text (stored before keys were configured) and is opened as it is.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const PREFIX: &str = "sealed:v1:";
const NONCE_LEN: usize = 24;

/// Why a secret could not be sealed or opened, or the keys not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("secrets.keys: {0}")]
    BadKeys(String),
    #[error("a stored secret was sealed with key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("a stored secret does not open with key {0:?} (tampered or a different key under that id)")]
    Corrupt(String),
}

/// The configured keys; the first seals.
pub struct Sealer {
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Sealer").field("key_ids", &ids).finish_non_exhaustive()
    }
}

impl Sealer {
    /// Reads `id:base64key[,id:base64key...]`; empty means no keys (values stay clear).
    pub fn from_spec(spec: &str) -> Result<Self, SecretError> {
        let mut keys = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, key) =
                entry.split_once(':').ok_or_else(|| SecretError::BadKeys("each key is id:base64 (32 bytes)".into()))?;
            let ok_id = !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok_id {
                return Err(SecretError::BadKeys(format!("key id {id:?} must be 1-32 of [A-Za-z0-9-]")));
            }
            let bytes = B64.decode(key).map_err(|_| SecretError::BadKeys(format!("key {id:?} is not base64")))?;
            if bytes.len() != 32 {
                return Err(SecretError::BadKeys(format!("key {id:?} is {} bytes, not 32", bytes.len())));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(SecretError::BadKeys(format!("key id {id:?} is given twice")));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| SecretError::BadKeys(format!("key {id:?} is unusable")))?;
            keys.push((id.to_owned(), cipher));
        }
        Ok(Self { keys })
    }

    /// Whether any key is configured (without one, secrets are stored in clear).
    pub fn is_configured(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The id of the key that seals new values.
    pub fn current_key(&self) -> Option<&str> {
        self.keys.first().map(|(id, _)| id.as_str())
    }

    /// `clear` sealed with the first key; as it is when no key is configured.
    pub fn seal(&self, clear: &str) -> String {
        let Some((id, cipher)) = self.keys.first() else { return clear.to_owned() };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload { msg: clear.as_bytes(), aad: id.as_bytes() };
        // Encryption fails only past 256 GiB per message; a secret is a few hundred bytes.
        let sealed = cipher.encrypt(XNonce::from_slice(&nonce), payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{id}:{}", B64.encode(out))
    }

    /// The clear text of a stored value (a value stored in clear is returned as it is).
    pub fn open(&self, stored: &str) -> Result<String, SecretError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_owned()) };
        let (id, data) = rest.split_once(':').ok_or_else(|| SecretError::Corrupt(String::new()))?;
        let (_, cipher) =
            self.keys.iter().find(|(k, _)| k == id).ok_or_else(|| SecretError::UnknownKey(id.to_owned()))?;
        let bytes = B64.decode(data).map_err(|_| SecretError::Corrupt(id.to_owned()))?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError::Corrupt(id.to_owned()));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let clear = cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: id.as_bytes() })
            .map_err(|_| SecretError::Corrupt(id.to_owned()))?;
        String::from_utf8(clear).map_err(|_| SecretError::Corrupt(id.to_owned()))
    }

    /// Whether `stored` needs resealing: clear, or sealed with a key other than the first.
    pub fn is_stale(&self, stored: &str) -> bool {
        match (self.current_key(), stored.strip_prefix(PREFIX)) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(current), Some(rest)) => rest.split_once(':').is_none_or(|(id, _)| id != current),
        }
    }
}

/// A fresh key entry for `SLUICE_SECRETS_KEYS`: `id:base64` of 32 random bytes.
pub fn generate_key(id: &str) -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{id}:{}", B64.encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_to_itself_and_does_not_contain_it() {
        let s = Sealer::from_spec(&generate_key("k1")).unwrap();
        let sealed = s.seal("whsec_top-secret");
        assert!(sealed.starts_with("sealed:v1:k1:") && !sealed.contains("top-secret"), "{sealed}");
        assert_ne!(sealed, s.seal("whsec_top-secret"), "a fresh nonce each time");
        assert_eq!(s.open(&sealed).unwrap(), "whsec_top-secret");
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_marks_them_stale() {
        let old = generate_key("k1");
        let sealed_old = Sealer::from_spec(&old).unwrap().seal("s3cret");
        let both = Sealer::from_spec(&format!("{},{old}", generate_key("k2"))).unwrap();
        assert_eq!(both.open(&sealed_old).unwrap(), "s3cret");
        assert!(both.is_stale(&sealed_old) && both.is_stale("clear-text"));
        assert!(!both.is_stale(&both.seal("s3cret")));
        let new_only = Sealer::from_spec(&generate_key("k2")).unwrap();
        assert_eq!(new_only.open(&sealed_old), Err(SecretError::UnknownKey("k1".into())));
    }

    #[test]
    fn a_tampered_value_or_a_swapped_key_id_does_not_open() {
        let k1 = generate_key("k1");
        let s = Sealer::from_spec(&format!("{k1},k2:{}", k1.split_once(':').unwrap().1)).unwrap();
        let sealed = s.seal("s3cret");
        let swapped = sealed.replacen(":k1:", ":k2:", 1);
        assert_eq!(s.open(&swapped), Err(SecretError::Corrupt("k2".into())), "the key id is authenticated");
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(s.open(&tampered).is_err());
    }

    #[test]
    fn bad_key_specs_are_refused_with_what_is_wrong() {
        for spec in ["nokey", "k1:not-base64!", "k1:AAAA", "bad id:AAAA"] {
            assert!(Sealer::from_spec(spec).is_err(), "{spec}");
        }
        assert!(!Sealer::from_spec("").unwrap().is_configured());
    }
}
