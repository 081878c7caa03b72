//! A work queue filled before sluice starts: how draining behaves when the backlog is deep.

use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sluice::command::Envelope;
use sluice::config::Settings;
use std::time::Instant;

/// Publishes awaiting confirmation at once.
const WINDOW: usize = 2000;

/// Declares the topology of `prefix` and publishes `n` commands of `kind` into the work queue
/// of `priority`, as sluice's API would have, with confirms.
pub async fn fill(
    settings: &Settings,
    prefix: &str,
    n: usize,
    kind: &str,
    priority: sluice::command::Priority,
) -> anyhow::Result<()> {
    let w = &settings.worker;
    let topology = sluice::broker::Topology::new(prefix, &w.retry_tiers_ms, settings.broker.delivery_limit)
        .with_partitions(settings.ordering.partitions);
    let conn = Connection::connect(settings.broker.first_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    topology.declare(&ch).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let started = Instant::now();
    let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
    let bodies = (0..n).map(|i| {
        let mut cmd = Envelope::new("bench", kind, super::http::payload(kind, i), None);
        cmd.priority = priority;
        cmd.encode()
    });
    let key = sluice::broker::Topology::work_key(priority);
    super::raw::publish_confirmed(&ch, &topology.work_exchange(), key, &props, WINDOW, bodies).await?;
    println!("pre-filled {n} commands in {:.1} s", started.elapsed().as_secs_f64());
    let _ = ch.close(200, "prefilled".into()).await;
    let _ = conn.close(200, "prefilled".into()).await;
    Ok(())
}
