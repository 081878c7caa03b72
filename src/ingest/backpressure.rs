//! Refusing ingest before the workers cannot keep up: the work queue's depth and wait.

use super::IngestError;
use crate::broker::Broker;
use crate::config::LimitSettings;
use sqlx::PgPool;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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

    /// Fails while the queue is past a bound.
    pub fn check(&self) -> Result<(), IngestError> {
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
        Err(IngestError::Behind { message: format!("sluice is behind: {reason}; retry later"), retry_after_secs: 5 })
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
