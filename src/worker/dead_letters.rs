//! The recorder: takes dead letters off their queue and into the `dead_letters` table (and the
//! command's status), whether a worker or the broker's delivery limit put them there.

use super::acks::Acks;
use super::WorkerCtx;
use crate::broker::headers::{first_death, get_i64, table_to_json};
use crate::broker::wire::Received;
use crate::store::dead_letters::NewDeadLetter;
use crate::store::{commands, dead_letters, StoreError};
use lapin::message::Delivery;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Namespace for ids of broker-made dead letters (derived, so a redelivery maps to one row).
const BROKER_DEAD_LETTER_NS: Uuid = Uuid::from_u128(0x0d9e_2f41_77c3_4b8a_9e15_6a2b_c4d8_e7f0);

/// Records one dead letter, waiting out database outages; acks only after commit.
pub async fn record(ctx: &WorkerCtx, acks: &Acks, delivery: Delivery, cancel: &CancellationToken) {
    let mut outage = super::outage_backoff();
    loop {
        match store(ctx, &delivery).await {
            Ok(()) => return acks.ack(&[&delivery]).await,
            Err(e) => {
                let delay = outage.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = ?delay, "cannot record dead letter yet");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return acks.give_back(&delivery).await,
                }
            }
        }
    }
}

async fn store(ctx: &WorkerCtx, delivery: &Delivery) -> Result<(), StoreError> {
    let received = Received::of(delivery);
    let headers = received.headers();
    let cmd = received.envelope().ok();
    let attempts = received.attempt_header().unwrap_or(1);
    let (id, kind, error) = received.dead_letter().unwrap_or_else(|| broker_made(delivery));
    let mut tx = ctx.pool.begin().await?;
    let fresh = dead_letters::insert(
        &mut tx,
        &NewDeadLetter {
            id,
            command_id: cmd.as_ref().map(|c| c.id),
            tenant: cmd.as_ref().map(|c| c.tenant.as_str()),
            command_type: cmd.as_ref().map(|c| c.kind.as_str()),
            body: &delivery.data,
            headers: table_to_json(headers),
            error_kind: &kind,
            error: &error,
            attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
        },
    )
    .await?;
    if let (true, Some(cmd)) = (fresh, &cmd) {
        commands::mark_dead(&mut tx, cmd, attempts, &error).await?;
    }
    tx.commit().await?;
    if let Some(batch) = cmd.as_ref().and_then(|c| c.batch) {
        ctx.touched.add([batch.id]);
    }
    if fresh {
        tracing::info!(dead_letter_id = %id, %kind, "dead letter recorded");
    }
    Ok(())
}

/// Id, kind and error of a message the broker dead-lettered on its own (delivery limit).
fn broker_made(delivery: &Delivery) -> (Uuid, String, String) {
    let headers = delivery.properties.headers().as_ref();
    let death = first_death(headers).unwrap_or_default();
    let reason = death.get("reason").and_then(|v| v.as_str()).unwrap_or("unknown").to_owned();
    let queue = death.get("queue").and_then(|v| v.as_str()).unwrap_or("?").to_owned();
    let message_id = delivery.properties.message_id().as_ref().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let deliveries = get_i64(headers, "x-delivery-count").unwrap_or(0);
    let key = format!(
        "{message_id}/{}/{reason}/{}",
        death.get("time").unwrap_or(&serde_json::Value::Null),
        death.get("count").unwrap_or(&serde_json::Value::Null)
    );
    let id = Uuid::new_v5(&BROKER_DEAD_LETTER_NS, key.as_bytes());
    let error = if reason == "delivery_limit" {
        format!("RabbitMQ dead-lettered it from {queue} after {deliveries} deliveries: workers crashed or gave it back every time")
    } else {
        format!("RabbitMQ dead-lettered it from {queue} ({reason})")
    };
    (id, reason, error)
}
