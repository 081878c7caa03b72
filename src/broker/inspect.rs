//! Reading queue depths and consumer counts, for operators and metrics.

use super::Broker;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::Serialize;

/// One queue as the broker reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueStat {
    pub name: String,
    /// `work`, `retry` or `dead`.
    pub role: &'static str,
    /// Ready messages (not counting those delivered and unacked).
    pub messages: u32,
    pub consumers: u32,
}

impl Broker {
    /// Depth and consumers of every sluice queue, by passive declares on a channel of its own
    /// (a missing queue would close the channel, not the publishers').
    pub async fn queue_stats(&self) -> Result<Vec<QueueStat>, lapin::Error> {
        let link = self
            .link()
            .ok_or(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed)))?;
        let channel = link.connection.create_channel().await?;
        let t = self.topology();
        let mut named = vec![(t.work_queue(), "work")];
        named.extend(t.tiers_ms().iter().map(|ms| (t.tier_queue(*ms), "retry")));
        named.push((t.dead_letter_queue(), "dead"));
        let mut stats = Vec::with_capacity(named.len());
        for (name, role) in named {
            let opts = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let q = channel.queue_declare(name.as_str().into(), opts, FieldTable::default()).await?;
            stats.push(QueueStat { name, role, messages: q.message_count(), consumers: q.consumer_count() });
        }
        let _ = channel.close(200, "inspected".into()).await;
        for s in &stats {
            metrics::gauge!("sluice_queue_depth", "queue" => s.name.clone()).set(f64::from(s.messages));
            metrics::gauge!("sluice_queue_consumers", "queue" => s.name.clone()).set(f64::from(s.consumers));
        }
        Ok(stats)
    }
}
