//! What stands before an unauthenticated `POST /v1/webhooks/{source}`: a directory of the
//! sources read at most every `webhooks.source_cache_ms`, so a flood of deliveries to names
//! that do not exist (or do) costs no database round trip each; and token buckets per source
//! and per client address, so one sender or one address cannot take the route for itself.

use super::error::ApiError;
use crate::config::WebhookSettings;
use crate::store::webhooks::{self, Source};
use crate::store::StoreError;
use sqlx::PgPool;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets tracked at most per table; beyond it, full (idle) buckets are forgotten.
const MAX_BUCKETS: usize = 65_536;

/// The sources as last read, and the buckets.
pub struct WebhookGate {
    settings: WebhookSettings,
    sealer: std::sync::Arc<crate::secrets::Sealer>,
    directory: tokio::sync::Mutex<Option<(Instant, HashMap<String, Source>)>>,
    per_source: Buckets,
    per_client: Buckets,
}

impl WebhookGate {
    /// A gate with these settings.
    pub fn new(settings: &WebhookSettings, sealer: std::sync::Arc<crate::secrets::Sealer>) -> Self {
        Self {
            sealer,
            per_source: Buckets::new(settings.rate_per_second, settings.burst),
            per_client: Buckets::new(settings.client_rate_per_second, settings.client_burst),
            settings: settings.clone(),
            directory: tokio::sync::Mutex::new(None),
        }
    }

    /// The source named `name`, from a directory at most `source_cache_ms` old; a change made
    /// in another process shows within that time.
    pub async fn source(&self, pool: &PgPool, name: &str) -> Result<Option<Source>, StoreError> {
        let mut dir = self.directory.lock().await;
        let ttl = Duration::from_millis(self.settings.source_cache_ms);
        if dir.as_ref().is_none_or(|(at, _)| at.elapsed() >= ttl) {
            let all = webhooks::list(pool, None).await?;
            metrics::counter!("sluice_webhook_directory_reads_total").increment(1);
            let opened = all.into_iter().map(|s| {
                let secrets = s.secrets.iter().filter_map(|stored| match self.sealer.open(stored) {
                    Ok(clear) => Some(clear),
                    Err(e) => {
                        // Its deliveries then fail verification (401) until the key is configured.
                        tracing::error!(source = %s.name, error = %e, "a webhook secret cannot be opened");
                        None
                    }
                });
                let secrets = secrets.collect();
                (s.name.clone(), Source { secrets, ..s })
            });
            *dir = Some((Instant::now(), opened.collect()));
        }
        Ok(dir.as_ref().and_then(|(_, sources)| sources.get(name).cloned()))
    }

    /// Forgets the directory (this process changed a source).
    pub async fn invalidate(&self) {
        *self.directory.lock().await = None;
    }

    /// Takes a token from the client address's bucket, or answers 429.
    pub fn admit_client(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        match client {
            Some(ip) => self.per_client.take(&ip.to_string()).map_err(|wait| limited("this address", wait)),
            None => Ok(()),
        }
    }

    /// Takes a token from an existing source's bucket, or answers 429.
    pub fn admit_source(&self, source: &str) -> Result<(), ApiError> {
        self.per_source.take(source).map_err(|wait| limited("this source", wait))
    }

    /// How many refused deliveries are kept per source.
    pub fn refused_kept(&self) -> i64 {
        i64::try_from(self.settings.max_refused_kept).unwrap_or(i64::MAX)
    }
}

fn limited(whose: &str, wait: u32) -> ApiError {
    metrics::counter!("sluice_webhooks_rate_limited_total").increment(1);
    ApiError::TooManyRequests {
        message: format!("too many deliveries from {whose}; retry later"),
        retry_after_secs: wait,
    }
}

/// Token buckets by key, bounded.
struct Buckets {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Buckets {
    fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token, or says in how many seconds one is there.
    fn take(&self, key: &str) -> Result<(), u32> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let idle = Duration::try_from_secs_f64(self.burst / self.rate).unwrap_or(Duration::MAX);
            buckets.retain(|_, (_, at)| now.duration_since(*at) < idle);
            if buckets.len() >= MAX_BUCKETS {
                return Err(1);
            }
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_says_when_to_come_back() {
        let b = Buckets::new(1.0, 3.0);
        for _ in 0..3 {
            assert_eq!(b.take("s"), Ok(()));
        }
        assert_eq!(b.take("s"), Err(1));
        assert_eq!(b.take("other"), Ok(()), "each key has its own bucket");
    }
}
