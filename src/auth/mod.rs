//! Who a caller is: API keys (verified with a cache, failed ones throttled per address), the
//! scopes they carry, and their creation and revocation. The HTTP API and the dashboard both
//! authenticate through this; neither owns it.

mod throttle;

use crate::store::{api_keys, StoreError};
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use throttle::FailureThrottle;

/// Why a caller was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No key, a malformed one, or one that is unknown or revoked.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The key lacks the scope named.
    #[error("this key lacks the {0:?} scope")]
    Forbidden(&'static str),
    /// Too many failed keys from this address.
    #[error("too many failed API keys from this address; try again later")]
    Throttled { retry_after_secs: u32 },
    /// The key table could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Submit commands.
    Submit,
    /// Read commands, accounts and events.
    Read,
    /// Manage its own tenant: its dead letters, webhook sources and batches.
    Admin,
    /// See and act across tenants: queues, pauses, every tenant's dead letters and webhook
    /// sources, the audit log, the dashboard. The bootstrap key is one.
    Operator,
}

impl Scope {
    /// The scope's name in keys and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Read => "read",
            Self::Admin => "admin",
            Self::Operator => "operator",
        }
    }
    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Submit, Self::Read, Self::Admin, Self::Operator].into_iter().find(|x| x.as_str() == s)
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: String,
    pub key_id: String,
    scopes: Vec<Scope>,
}

impl Principal {
    /// Fails with 403 unless the key has `scope`: operator implies every scope, admin every
    /// scope but operator.
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        let has = |s| self.scopes.contains(&s);
        if has(scope) || has(Scope::Operator) || (scope != Scope::Operator && has(Scope::Admin)) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(scope.as_str()))
        }
    }

    /// Whose things this key may reach: every tenant's for an operator, else its own.
    pub fn reach(&self) -> crate::ops::Reach {
        if self.scopes.contains(&Scope::Operator) {
            crate::ops::Reach::Every
        } else {
            crate::ops::Reach::Tenant(self.tenant.clone())
        }
    }
}

/// Verifies keys, with a short-lived cache so ingest does not touch Postgres per request.
pub struct Authenticator {
    pool: PgPool,
    bootstrap: Option<([u8; 32], String)>,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    throttle: FailureThrottle,
}

/// Cached keys at most; the cache is cleared when full (it refills from Postgres).
const CACHE_CAPACITY: usize = 10_000;

impl Authenticator {
    /// `bootstrap` is an optional (key, tenant) accepted with every scope; `settings` bound
    /// the cache and the throttle of failed keys.
    pub fn new(pool: PgPool, bootstrap: Option<(&str, &str)>, settings: &crate::config::AuthSettings) -> Self {
        let bootstrap = bootstrap.filter(|(k, _)| !k.is_empty()).map(|(k, t)| (digest(k), t.to_owned()));
        let ttl = Duration::from_secs(settings.cache_ttl_secs);
        Self { pool, bootstrap, ttl, cache: Mutex::new(HashMap::new()), throttle: FailureThrottle::new(settings) }
    }

    /// The principal a presented key stands for. A `client` address with too many failed
    /// keys gets 429 before any lookup, unless this key verified recently.
    pub async fn verify(&self, key: &str, client: Option<IpAddr>) -> Result<Principal, AuthError> {
        let hash = digest(key);
        let result = self.verify_hashed(key, &hash, client).await;
        if let Err(AuthError::Unauthorized(_)) = &result {
            self.throttle.failed(client);
        }
        result
    }

    async fn verify_hashed(&self, key: &str, hash: &[u8; 32], client: Option<IpAddr>) -> Result<Principal, AuthError> {
        let hash = *hash;
        if let Some((boot, tenant)) = &self.bootstrap {
            if bool::from(hash.ct_eq(boot)) {
                let scopes = vec![Scope::Operator, Scope::Admin, Scope::Submit, Scope::Read];
                return Ok(Principal { tenant: tenant.clone(), key_id: "bootstrap".into(), scopes });
            }
        }
        if let Some(p) = self.cached(&hash) {
            return Ok(p);
        }
        if let Some(retry_after_secs) = self.throttle.blocked(client, &hash) {
            metrics::counter!("sluice_auth_throttled_total").increment(1);
            return Err(AuthError::Throttled { retry_after_secs: u32::try_from(retry_after_secs).unwrap_or(u32::MAX) });
        }
        metrics::counter!("sluice_auth_lookups_total").increment(1);
        let invalid = AuthError::Unauthorized("invalid or revoked API key");
        let key_id = parse_key_id(key).ok_or(AuthError::Unauthorized("malformed API key"))?;
        let stored = api_keys::find(&self.pool, key_id).await?.ok_or(invalid)?;
        let matches: bool = stored.key_hash.as_slice().ct_eq(hash.as_slice()).into();
        if !matches || stored.revoked_at.is_some() {
            return Err(AuthError::Unauthorized("invalid or revoked API key"));
        }
        let scopes = stored.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
        let principal = Principal { tenant: stored.tenant, key_id: stored.key_id, scopes };
        // Only keys verified against the database are remembered as good: the bootstrap and
        // cached keys never reach the throttle, and this keeps its lock off the hot path.
        self.throttle.succeeded(&hash);
        self.remember(hash, principal.clone());
        Ok(principal)
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<Principal> {
        let cache = self.cache.lock().ok()?;
        let (p, at) = cache.get(hash)?;
        (at.elapsed() < self.ttl).then(|| p.clone())
    }

    fn remember(&self, hash: [u8; 32], p: Principal) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(hash, (p, Instant::now()));
        }
    }
}

/// A newly created key: the secret is shown once and never stored.
pub struct CreatedKey {
    pub key_id: String,
    pub key: String,
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown scope {0:?} (expected submit, read, admin or operator)")]
    UnknownScope(String),
    #[error("tenant must be 1-64 characters of [A-Za-z0-9_.-]")]
    BadTenant,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates and stores a key for `tenant` with `scopes`, audited as `actor`.
pub async fn create_key(pool: &PgPool, actor: &str, tenant: &str, scopes: &[String]) -> Result<CreatedKey, KeyError> {
    if tenant.is_empty() || tenant.len() > 64 || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(KeyError::BadTenant);
    }
    let mut names: Vec<String> = Vec::new();
    for s in scopes.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        let scope = Scope::parse(s).ok_or_else(|| KeyError::UnknownScope(s.to_owned()))?;
        names.push(scope.as_str().to_owned());
    }
    names.sort();
    names.dedup();
    let mut rng = rand::rng();
    let key_id: String = (0..12).map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)])).collect();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let secret: String = (0..32).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
    let key = format!("sk_{key_id}_{secret}");
    api_keys::insert(pool, &key_id, tenant, &digest(&key), &names).await?;
    let details = serde_json::json!({"tenant": tenant, "scopes": names});
    crate::store::audit::record_one(pool, actor, "key.create", &key_id, &details).await?;
    Ok(CreatedKey { key_id, key })
}

/// Revokes a key, audited as `actor`; false if there is no such active key.
pub async fn revoke_key(pool: &PgPool, actor: &str, key_id: &str) -> Result<bool, StoreError> {
    let revoked = api_keys::revoke(pool, key_id).await?;
    if revoked {
        crate::store::audit::record_one(pool, actor, "key.revoke", key_id, &serde_json::json!({})).await?;
    }
    Ok(revoked)
}

fn parse_key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("sk_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty()).then_some(id)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_id_is_read_only_from_well_formed_keys() {
        assert_eq!(parse_key_id("sk_0123456789ab_secret"), Some("0123456789ab"));
        assert_eq!(parse_key_id("sk_0123456789ab_"), None);
        assert_eq!(parse_key_id("sk_xyz_secret"), None);
        assert_eq!(parse_key_id("Basic abc"), None);
    }

    #[test]
    fn admin_implies_every_scope_but_operator_and_read_does_not_imply_submit() {
        let admin = Principal { tenant: "t".into(), key_id: "k".into(), scopes: vec![Scope::Admin] };
        assert!(admin.require(Scope::Submit).is_ok());
        assert!(matches!(admin.require(Scope::Operator), Err(AuthError::Forbidden("operator"))));
        assert_eq!(admin.reach(), crate::ops::Reach::Tenant("t".into()));
        let operator = Principal { tenant: "t".into(), key_id: "k".into(), scopes: vec![Scope::Operator] };
        assert!(operator.require(Scope::Admin).is_ok());
        assert_eq!(operator.reach(), crate::ops::Reach::Every);
        let reader = Principal { tenant: "t".into(), key_id: "k".into(), scopes: vec![Scope::Read] };
        assert!(reader.require(Scope::Read).is_ok());
        assert!(matches!(reader.require(Scope::Submit), Err(AuthError::Forbidden("submit"))));
    }
}
