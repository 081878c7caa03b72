//! A bounded consumer that survives reconnects and drains on shutdown.

use super::acks::Acks;
use crate::broker::{Broker, Link};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How to consume one queue.
pub struct Options {
    pub queue: String,
    /// Unacked deliveries the broker may push.
    pub prefetch: u16,
    /// Most deliveries handed to one `work` call: whatever is already there, never waiting.
    pub batch_size: usize,
    /// `work` calls running at once.
    pub concurrency: usize,
    /// How long shutdown waits for running calls.
    pub drain: Duration,
}

/// Consumes a queue with at most `prefetch` unacked deliveries and `concurrency` running
/// `work` calls, each given the deliveries that were ready together (up to `batch_size`),
/// resubscribing after every reconnect, until `cancel`; then stops consuming and waits (up to
/// `drain`) for running calls to ack.
pub async fn consume<F, Fut>(broker: &Broker, opts: Options, cancel: &CancellationToken, work: F)
where
    F: Fn(Vec<Delivery>, Arc<Acks>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Options { queue, prefetch, batch_size, concurrency, drain } = opts;
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut last: Option<Arc<Link>> = None;
    let mut open: Option<(Channel, String)> = None;
    while let Some(link) = broker.wait_new_link(last.as_ref(), cancel).await {
        last = Some(link.clone());
        let (channel, consumer, tag) = match subscribe(&link, &queue, prefetch).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(%queue, error = %e, "cannot subscribe; reconnecting");
                broker.request_reconnect(&link);
                continue;
            }
        };
        tracing::info!(%queue, prefetch, batch_size, concurrency, "consuming");
        let mut ready = consumer.ready_chunks(batch_size.max(1));
        let acks = Acks::new(channel.clone(), usize::from(prefetch / 4));
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p,
                () = cancel.cancelled() => break,
            };
            let Ok(permit) = permit else { break };
            let next = tokio::select! {
                d = ready.next() => d,
                () = cancel.cancelled() => break,
            };
            match next {
                Some(results) => {
                    let mut batch = Vec::with_capacity(results.len());
                    let mut failure = None;
                    for r in results {
                        match r {
                            Ok(d) => {
                                acks.received(d.delivery_tag).await;
                                batch.push(d);
                            }
                            Err(e) => failure = Some(e),
                        }
                    }
                    if !batch.is_empty() {
                        let task = work(batch, acks.clone());
                        tokio::spawn(async move {
                            task.await;
                            drop(permit);
                        });
                    }
                    if let Some(e) = failure {
                        tracing::warn!(%queue, error = %e, "consumer failed; resubscribing");
                        broker.request_reconnect(&link);
                        break;
                    }
                }
                None => {
                    tracing::warn!(%queue, "consumer was cancelled by the broker; resubscribing");
                    broker.request_reconnect(&link);
                    break;
                }
            }
        }
        if cancel.is_cancelled() {
            open = Some((channel, tag));
            break;
        }
    }
    if let Some((channel, tag)) = &open {
        // Stop deliveries first; anything prefetched but not started goes back to the queue
        // when the channel closes.
        let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
    }
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    match tokio::time::timeout(drain, permits.acquire_many(all)).await {
        Ok(_) => tracing::info!(%queue, "drained"),
        Err(_) => {
            tracing::warn!(%queue, "drain timed out; unfinished messages will be redelivered")
        }
    }
    if let Some((channel, _)) = open {
        let _ = channel.close(200, "shutting down".into()).await;
    }
}

async fn subscribe(link: &Link, queue: &str, prefetch: u16) -> lapin::Result<(Channel, Consumer, String)> {
    let channel = link.connection.create_channel().await?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let tag = format!("{queue}.{}", uuid::Uuid::new_v4().simple());
    let consumer = channel
        .basic_consume(queue.into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    Ok((channel, consumer, tag))
}
