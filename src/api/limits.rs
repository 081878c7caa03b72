//! What keeps ingest honest under load: per-key token buckets (429), backpressure from the
//! work queue's depth and wait (503), and limits on the shape of JSON bodies (400).

use super::error::ApiError;
use crate::broker::Broker;
use crate::config::LimitSettings;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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

/// The work queue's state as last sampled, for refusing ingest before it cannot keep up.
pub struct Backpressure {
    max_depth: u64,
    max_wait_ms: i64,
    depth: AtomicU64,
    wait_ms: AtomicI64,
}

impl Backpressure {
    /// Bounds from configuration (0 = that bound is off).
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            max_depth: settings.max_queue_depth,
            max_wait_ms: settings.max_queue_wait_ms,
            depth: AtomicU64::new(0),
            wait_ms: AtomicI64::new(0),
        }
    }

    /// Fails with 503 while the queue is past a bound.
    pub fn check(&self) -> Result<(), ApiError> {
        let depth = self.depth.load(Ordering::Relaxed);
        let wait = self.wait_ms.load(Ordering::Relaxed);
        let reason = if self.max_depth > 0 && depth > self.max_depth {
            format!("the work queue holds {depth} commands (limit {})", self.max_depth)
        } else if self.max_wait_ms > 0 && wait > self.max_wait_ms {
            format!("commands wait {wait} ms in the queue (limit {} ms)", self.max_wait_ms)
        } else {
            return Ok(());
        };
        metrics::counter!("sluice_ingest_rejected_total", "reason" => "backpressure").increment(1);
        Err(ApiError::Unavailable { message: format!("sluice is behind: {reason}; retry later"), retry_after_secs: 5 })
    }

    /// Samples the queue every second until `cancel`: depth from RabbitMQ, wait from the
    /// workers' heartbeats.
    pub async fn run(&self, broker: Broker, pool: PgPool, cancel: CancellationToken) {
        if self.max_depth == 0 && self.max_wait_ms == 0 {
            return;
        }
        let work = broker.topology().work_queue();
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = cancel.cancelled() => return,
            }
            if self.max_depth > 0 {
                if let Ok(Ok(stats)) = tokio::time::timeout(Duration::from_secs(1), broker.queue_stats()).await {
                    if let Some(q) = stats.iter().find(|q| q.name == work) {
                        self.depth.store(u64::from(q.messages), Ordering::Relaxed);
                    }
                }
            }
            if self.max_wait_ms > 0 {
                if let Ok(wait) = crate::store::processes::queue_wait_ms(&pool).await {
                    self.wait_ms.store(wait.unwrap_or(0), Ordering::Relaxed);
                }
            }
        }
    }
}

/// Refuses JSON nested deeper than `max_depth` or holding a string (or key) longer than
/// `max_string`, naming where (a JSON pointer under `at`).
pub fn check_shape(v: &Value, max_depth: usize, max_string: usize, at: &str) -> Result<(), ApiError> {
    fn walk(v: &Value, depth: usize, max_depth: usize, max_string: usize, path: &mut String) -> Result<(), ApiError> {
        if depth > max_depth {
            return Err(ApiError::bad_request(
                "too_deep",
                format!("JSON is nested deeper than {max_depth} levels"),
                Some(&format!("body {path}")),
            ));
        }
        let long = |s: &str, path: &str| {
            ApiError::bad_request(
                "string_too_long",
                format!("a string is {} bytes; the limit is {max_string}", s.len()),
                Some(&format!("body {path}")),
            )
        };
        let nul = |path: &str| {
            ApiError::bad_request("nul_character", "strings may not contain U+0000", Some(&format!("body {path}")))
        };
        match v {
            Value::String(s) if s.len() > max_string => Err(long(s, path)),
            // Postgres cannot store U+0000 in text or jsonb; refused here, not by a worker later.
            Value::String(s) if s.contains('\0') => Err(nul(path)),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    walk(item, depth + 1, max_depth, max_string, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    if k.len() > max_string {
                        return Err(long(k, path));
                    }
                    if k.contains('\0') {
                        return Err(nul(path));
                    }
                    walk(item, depth + 1, max_depth, max_string, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(v, 1, max_depth, max_string, &mut at.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LimitSettings, TenantLimit};
    use serde_json::json;

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

    #[test]
    fn deep_nesting_and_long_strings_are_refused_with_their_location() {
        let ok = json!({"a": {"b": ["short"]}});
        assert!(check_shape(&ok, 4, 8, "").is_ok());
        let deep = json!({"a": {"b": {"c": {"d": 1}}}});
        match check_shape(&deep, 4, 8, "") {
            Err(ApiError::BadRequest { code, location, .. }) => {
                assert_eq!((code, location.as_deref()), ("too_deep", Some("body /a/b/c/d")));
            }
            other => panic!("{other:?}"),
        }
        match check_shape(&json!({"a": ["ok", "far too long"]}), 4, 8, "/payload") {
            Err(ApiError::BadRequest { code, location, .. }) => {
                assert_eq!((code, location.as_deref()), ("string_too_long", Some("body /payload/a/1")));
            }
            other => panic!("{other:?}"),
        }
    }
}
