//! Per-key token buckets (429): what keeps one API key from taking every request slot.

use super::error::ApiError;
use crate::config::LimitSettings;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per-key token buckets; rates per tenant from configuration.
pub struct RateLimiter {
    settings: LimitSettings,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Keys tracked at most; beyond, idle buckets (full again anyway) are forgotten.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    /// A limiter with these settings.
    pub fn new(settings: LimitSettings) -> Self {
        Self { settings, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from `key_id`'s bucket, or says how long until one is there.
    pub fn check(&self, tenant: &str, key_id: &str) -> Result<(), ApiError> {
        self.take(tenant, key_id, 1.0, 1.0)
    }

    /// Takes `n` more tokens (a batch's commands beyond the request's own).
    pub fn charge(&self, tenant: &str, key_id: &str, n: usize) -> Result<(), ApiError> {
        if n == 0 {
            return Ok(());
        }
        // The request's own token is already gone, so a full bucket holds burst - 1 here.
        let n = n as f64;
        self.take(tenant, key_id, n, n.min(self.burst_of(tenant) - 1.0).max(0.0))
    }

    fn burst_of(&self, tenant: &str) -> f64 {
        self.settings.tenants.get(tenant).map_or(self.settings.burst, |t| t.burst).max(1.0)
    }

    /// Takes `n` tokens if at least `needed` are there (less than `n` lets a charge larger than
    /// the burst through on a full bucket, leaving a debt).
    fn take(&self, tenant: &str, key_id: &str, n: f64, needed: f64) -> Result<(), ApiError> {
        let (rate, burst) = match self.settings.tenants.get(tenant) {
            Some(t) => (t.rate_per_second, t.burst),
            None => (self.settings.rate_per_second, self.settings.burst),
        };
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = burst.max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            let idle = Duration::try_from_secs_f64(burst / rate).unwrap_or(Duration::MAX);
            buckets.retain(|_, (_, at)| now.duration_since(*at) < idle);
        }
        if !buckets.contains_key(key_id) {
            buckets.insert(key_id.to_owned(), (burst, now));
        }
        let Some((tokens, at)) = buckets.get_mut(key_id) else { return Ok(()) };
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        // A charge larger than the burst is let through on a full bucket and leaves a debt, so
        // a 10,000-command batch is possible and the key's long-run rate still holds.
        if *tokens >= needed {
            *tokens -= n;
            Ok(())
        } else {
            let wait = ((n.min(burst) - *tokens) / rate).ceil().max(1.0);
            metrics::counter!("sluice_rate_limited_total").increment(1);
            Err(ApiError::TooManyRequests {
                message: format!("rate limit of {rate} requests/s (burst {burst}) for this key exceeded"),
                retry_after_secs: wait as u32,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LimitSettings, TenantLimit};

    fn settings(rate: f64, burst: f64) -> LimitSettings {
        LimitSettings {
            rate_per_second: rate,
            burst,
            tenants: HashMap::from([("vip".to_owned(), TenantLimit { rate_per_second: 0.0, burst: 0.0 })]),
            max_queue_depth: 0,
            max_queue_wait_ms: 0,
            max_json_depth: 4,
            max_string_bytes: 8,
            max_json_values: 1000,
            max_json_bytes: 1 << 20,
            max_page_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_key_gets_its_burst_then_is_told_when_to_come_back() {
        let limiter = RateLimiter::new(settings(1.0, 3.0));
        for _ in 0..3 {
            assert!(limiter.check("acme", "k1").is_ok());
        }
        match limiter.check("acme", "k1") {
            Err(ApiError::TooManyRequests { retry_after_secs, .. }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limiter.check("acme", "k2").is_ok(), "buckets are per key");
        for _ in 0..100 {
            assert!(limiter.check("vip", "k3").is_ok(), "a tenant override of 0 means unlimited");
        }
    }

    #[test]
    fn a_charge_beyond_the_burst_passes_on_a_full_bucket_and_leaves_a_debt() {
        let limiter = RateLimiter::new(settings(10.0, 20.0));
        assert!(limiter.check("acme", "k").is_ok(), "the batch request's own token");
        assert!(limiter.charge("acme", "k", 99).is_ok(), "a full bucket lets a big batch through");
        match limiter.check("acme", "k") {
            Err(ApiError::TooManyRequests { retry_after_secs, .. }) => {
                assert_eq!(retry_after_secs, 9, "80 tokens of debt at 10/s")
            }
            other => panic!("expected 429, got {other:?}"),
        }
    }
}
