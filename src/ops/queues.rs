//! Pausing and resuming consumption of a queue. Workers read the flag with their heartbeat,
//! stop taking deliveries (finishing what they hold), and resume when it clears.

use super::{Operators, OpsError};
use crate::store::{audit, processes, StoreError};
use serde_json::json;

impl Operators {
    /// Pauses (`paused = true`) or resumes consumption of one of sluice's queues.
    pub async fn set_paused(&self, queue: &str, paused: bool, actor: &str) -> Result<(), OpsError> {
        let consumed = self.broker.topology().consumed_queues();
        if !consumed.iter().any(|q| q == queue) {
            return Err(OpsError::BadInput(format!("only {} have consumers to pause", consumed.join(", "))));
        }
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        processes::set_paused(&mut tx, queue, paused, actor).await?;
        let action = if paused { "queue.pause" } else { "queue.resume" };
        audit::record(&mut tx, actor, action, &format!("queue/{queue}"), &json!({})).await?;
        tx.commit().await.map_err(StoreError::from)?;
        tracing::info!(queue, paused, actor, "queue consumption changed");
        Ok(())
    }
}
