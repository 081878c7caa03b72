//! What every fault scenario does: a load runs while faults are injected, until the system
//! has shown progress after the last of them.

use crate::check::Window;
use crate::cluster::{until, Cluster};
use crate::load::{drive, Mix, Sent};
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How much larger than the CI size to make loads and fault counts.
pub fn scale() -> u64 {
    std::env::var("SLUICE_FAULT_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1)
}

/// Waits until `n` commands were committed after `after`: the system is making progress.
pub async fn progress(c: &Cluster, after: DateTime<Utc>, n: i64) {
    until(Duration::from_secs(90), "commands are committed again", || async {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM commands WHERE completed_at > $1")
            .bind(after)
            .fetch_one(&c.pool)
            .await
            .unwrap_or(0);
        done >= n
    })
    .await;
}

/// Runs the load while `faults` runs, and until enough commands were committed after the
/// last fault; returns what was sent and when the faults were in force.
pub async fn under_load<F, Fut>(c: &Arc<Cluster>, mix: Mix, faults: F) -> (Vec<Sent>, Vec<Window>)
where
    F: FnOnce(Arc<Cluster>) -> Fut,
    Fut: Future<Output = Vec<Window>>,
{
    let stop = CancellationToken::new();
    let started = Utc::now();
    let load = tokio::spawn(drive(c.clone(), mix, u64::MAX, stop.clone()));
    progress(c, started, 100).await;
    let windows = faults(c.clone()).await;
    progress(c, windows.last().map_or(started, |w| w.to), 200 * scale() as i64).await;
    stop.cancel();
    (load.await.expect("load"), windows)
}
