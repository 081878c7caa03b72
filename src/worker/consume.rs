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
    /// Most deliveries handed to one `work` call.
    pub batch_size: usize,
    /// How long a batch may wait to fill up while other batches are running; zero = never.
    pub linger: Duration,
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
    let Options { queue, prefetch, batch_size, linger, concurrency, drain } = opts;
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
        let mut carry = Vec::new();
        let acks = Acks::new(channel.clone(), usize::from(prefetch / 4));
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p,
                () = cancel.cancelled() => break,
            };
            let Ok(permit) = permit else { break };
            // Others still running means the database is busy anyway: waiting a moment for a
            // fuller batch then costs no latency and saves commits and acks. Alone, go at once.
            let busy = permits.available_permits() + 1 < concurrency;
            let next = tokio::select! {
                d = gather(&mut ready, &mut carry, batch_size, if busy { linger } else { Duration::ZERO }) => d,
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

/// The next batch: what is ready (at least one delivery), topped up for at most `linger` until
/// `batch_size`; `None` once the stream ends. Deliveries beyond `batch_size` wait in `carry`.
async fn gather<S, T>(ready: &mut S, carry: &mut Vec<T>, batch_size: usize, linger: Duration) -> Option<Vec<T>>
where
    S: futures_util::Stream<Item = Vec<T>> + Unpin,
{
    let mut batch = std::mem::take(carry);
    if batch.is_empty() {
        batch = ready.next().await?;
    }
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < batch_size && !linger.is_zero() {
        match tokio::time::timeout_at(deadline, ready.next()).await {
            Ok(Some(more)) => batch.extend(more),
            _ => break,
        }
    }
    if batch.len() > batch_size {
        *carry = batch.split_off(batch_size);
    }
    Some(batch)
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

#[cfg(test)]
mod tests {
    use super::gather;
    use futures_util::stream::{self, StreamExt};
    use std::time::Duration;

    #[tokio::test]
    async fn without_linger_a_batch_is_what_was_ready() {
        let mut ready = stream::iter(vec![vec![1, 2], vec![3]]);
        let mut carry = Vec::new();
        assert_eq!(gather(&mut ready, &mut carry, 10, Duration::ZERO).await, Some(vec![1, 2]));
        assert_eq!(gather(&mut ready, &mut carry, 10, Duration::ZERO).await, Some(vec![3]));
        assert_eq!(gather(&mut ready, &mut carry, 10, Duration::ZERO).await, None);
    }

    #[tokio::test]
    async fn a_lingering_batch_fills_up_to_the_batch_size_and_carries_the_rest_to_the_next() {
        let mut ready = stream::iter(vec![vec![1, 2], vec![3, 4, 5]]);
        let mut carry = Vec::new();
        let linger = Duration::from_secs(5);
        assert_eq!(gather(&mut ready, &mut carry, 4, linger).await, Some(vec![1, 2, 3, 4]));
        assert_eq!(gather(&mut ready, &mut carry, 4, linger).await, Some(vec![5]));
        assert_eq!(gather(&mut ready, &mut carry, 4, linger).await, None);
    }

    #[tokio::test]
    async fn a_lingering_batch_goes_when_the_linger_ends_even_if_not_full() {
        let mut ready = stream::iter(vec![vec![1]]).chain(stream::pending());
        let mut carry = Vec::new();
        let batch = gather(&mut ready, &mut carry, 4, Duration::from_millis(5)).await;
        assert_eq!(batch, Some(vec![1]));
    }
}
