//! A bounded consumer that survives reconnects and drains on shutdown.

use super::acks::Acks;
use super::slots::{Slot, Slots};
use crate::broker::{Broker, Link};
use futures_util::stream::ReadyChunks;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
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
    /// The slots `work` calls run in, perhaps shared with other queues' consumers.
    pub slots: Arc<Slots>,
    /// This queue's class for the slots (0 high, 1 normal, 2 low).
    pub class: usize,
    /// How long shutdown waits for running calls.
    pub drain: Duration,
    /// Told whether deliveries are flowing (subscribed) or not (paused, reconnecting, stopped).
    pub on_consuming: Box<dyn Fn(bool) + Send + Sync>,
    /// Tasks that `work` spawned off with deliveries of this channel, which must settle them
    /// before the channel closes at shutdown.
    pub outstanding: Option<tokio_util::task::TaskTracker>,
    /// The queue's order must survive stopping and handing deliveries back: the consumer is
    /// never cancelled (not even by dropping its stream, which lapin turns into a cancel), and
    /// unfinished deliveries go back by closing the channel. RabbitMQ 3.10 returns what
    /// reaches a cancelled consumer's channel at once, ahead of what that consumer still held,
    /// and puts a nacked delivery behind those still held; a closed channel's deliveries all
    /// go back in their order.
    pub keep_order: bool,
}

/// Consumes a queue with at most `prefetch` unacked deliveries, running `work` calls in
/// `slots`, each given the deliveries that were ready together (up to `batch_size`),
/// resubscribing after every reconnect, until `cancel`; then stops consuming and waits (up to
/// `drain`) for running calls to ack. While `paused` holds true it cancels its subscription,
/// finishes what it already received, and subscribes again on resume; in keep-order mode it
/// closes the channel after the running call instead, handing back the rest.
pub async fn consume<F, Fut>(
    broker: &Broker,
    opts: Options,
    cancel: &CancellationToken,
    mut paused: watch::Receiver<bool>,
    work: F,
) where
    F: Fn(Vec<Delivery>, Arc<Acks>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Options { queue, prefetch, batch_size, linger, slots, class, drain, on_consuming, outstanding, keep_order } =
        opts;
    let mut last: Option<Arc<Link>> = None;
    // The consumer's stream stays alive until its channel is closed: lapin cancels a consumer
    // whose stream is dropped, and keep-order mode must never cancel.
    let mut open: Option<(Channel, String, ReadyChunks<Consumer>)> = None;
    'links: while let Some(link) = broker.wait_new_link(last.as_ref(), cancel).await {
        last = Some(link.clone());
        let (mut channel, mut acks) = match open_channel(&link, prefetch, keep_order).await {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(%queue, error = %e, "cannot open a channel; reconnecting");
                broker.request_reconnect(&link);
                continue;
            }
        };
        loop {
            if *paused.borrow_and_update() {
                tracing::info!(%queue, "consumption paused by an operator");
                tokio::select! {
                    r = paused.wait_for(|p| !*p) => if r.is_err() { break 'links },
                    () = cancel.cancelled() => break 'links,
                }
                tracing::info!(%queue, "consumption resumed");
            }
            let (consumer, tag) = match subscribe(&channel, &queue).await {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "cannot subscribe; reconnecting");
                    broker.request_reconnect(&link);
                    continue 'links;
                }
            };
            tracing::info!(%queue, prefetch, batch_size, slots = slots.total(), "consuming");
            on_consuming(true);
            let mut ready = consumer.ready_chunks(batch_size.max(1));
            let pump = Pump { slots: &slots, class, acks: &acks, work: &work, batch_size, linger };
            let stopped = pump.run(&mut ready, cancel, &mut paused).await;
            on_consuming(false);
            match stopped {
                Stopped::Cancelled => {
                    open = Some((channel, tag, ready));
                    break 'links;
                }
                Stopped::Paused(..) | Stopped::Reopen if keep_order => {
                    // Whatever is running finishes first, so nothing of this subscription is
                    // applied after its deliveries went back.
                    if tokio::time::timeout(drain, slots.idle()).await.is_err() {
                        tracing::warn!(%queue, "work still running; closing its channel anyway");
                    }
                    let _ = channel.close(200, "handing deliveries back in order".into()).await;
                    drop(ready);
                    (channel, acks) = match open_channel(&link, prefetch, keep_order).await {
                        Ok(opened) => opened,
                        Err(e) => {
                            tracing::warn!(%queue, error = %e, "cannot open a channel; reconnecting");
                            broker.request_reconnect(&link);
                            continue 'links;
                        }
                    };
                }
                // Only keep-order work asks for a reopen.
                Stopped::Reopen => {}
                Stopped::Paused(carry) => {
                    // Stop new deliveries, then finish those already received: the stream
                    // ends after the last of them.
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    match pump.drain(&mut ready, carry, cancel).await {
                        Stopped::Cancelled => {
                            open = Some((channel, tag, ready));
                            break 'links;
                        }
                        Stopped::Failed(why) => {
                            tracing::warn!(%queue, %why, "consumer stopped; reconnecting");
                            broker.request_reconnect(&link);
                            continue 'links;
                        }
                        Stopped::Drained | Stopped::Paused(..) | Stopped::Reopen => {}
                    }
                }
                Stopped::Drained => {}
                Stopped::Failed(why) => {
                    tracing::warn!(%queue, %why, "consumer stopped; resubscribing");
                    broker.request_reconnect(&link);
                    continue 'links;
                }
            }
        }
    }
    if let Some((channel, tag, _)) = open.as_ref().filter(|_| !keep_order) {
        // Stop deliveries first; anything prefetched but not started goes back to the queue
        // when the channel closes.
        let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
    }
    let finished = async {
        slots.idle().await;
        if let Some(tasks) = &outstanding {
            tasks.close();
            tasks.wait().await;
        }
    };
    match tokio::time::timeout(drain, finished).await {
        Ok(()) => tracing::info!(%queue, "drained"),
        Err(_) => {
            tracing::warn!(%queue, "drain timed out; unfinished messages will be redelivered")
        }
    }
    if let Some((channel, _, ready)) = open {
        let _ = channel.close(200, "shutting down".into()).await;
        drop(ready);
    }
}

/// Why a subscription stopped being pumped (or drained).
enum Stopped {
    Cancelled,
    /// A cancelled subscription handed over everything it held.
    Drained,
    /// Operators paused the queue; received deliveries are still in the stream and the carry.
    Paused(Vec<lapin::Result<Delivery>>),
    /// Work gave a delivery back in keep-order mode: the channel must be closed and opened
    /// again.
    Reopen,
    Failed(String),
}

/// Hands a consumer's deliveries to `work`, in batches, each in a slot.
struct Pump<'a, F> {
    slots: &'a Arc<Slots>,
    class: usize,
    acks: &'a Arc<Acks>,
    work: &'a F,
    batch_size: usize,
    linger: Duration,
}

impl<F, Fut> Pump<'_, F>
where
    F: Fn(Vec<Delivery>, Arc<Acks>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    async fn run(
        &self,
        ready: &mut ReadyChunks<Consumer>,
        cancel: &CancellationToken,
        paused: &mut watch::Receiver<bool>,
    ) -> Stopped {
        let mut carry = Vec::new();
        loop {
            // A delivery first, then a slot: a queue with nothing to do holds no slot that
            // another queue's deliveries could use.
            if carry.is_empty() {
                let first = tokio::select! {
                    r = ready.next() => r,
                    () = cancel.cancelled() => return Stopped::Cancelled,
                    Ok(_) = paused.wait_for(|p| *p) => return Stopped::Paused(carry),
                };
                match first {
                    Some(first) => carry.extend(first),
                    None => return Stopped::Failed("consumer was cancelled by the broker".into()),
                }
            }
            let slot = tokio::select! {
                s = self.slots.acquire(self.class) => s,
                () = cancel.cancelled() => return Stopped::Cancelled,
                Ok(_) = paused.wait_for(|p| *p) => return Stopped::Paused(carry),
            };
            // Checked with the slot in hand: the work that gave a delivery back has ended.
            if self.acks.must_reopen() {
                return Stopped::Reopen;
            }
            // Others still running means the database is busy anyway: waiting a moment for a
            // fuller batch then costs no latency and saves commits and acks. Alone, go at once.
            let busy = self.slots.in_use() > 1;
            let linger = if busy { self.linger } else { Duration::ZERO };
            let next = tokio::select! {
                d = gather(ready, &mut carry, self.batch_size, linger) => d,
                () = cancel.cancelled() => return Stopped::Cancelled,
                Ok(_) = paused.wait_for(|p| *p) => return Stopped::Paused(carry),
            };
            match next {
                Some(results) => {
                    if let Err(e) = self.dispatch(results, slot).await {
                        return Stopped::Failed(format!("consumer failed: {e}"));
                    }
                }
                None => return Stopped::Failed("consumer was cancelled by the broker".into()),
            }
        }
    }

    /// Works off what a cancelled consumer still holds (`carry` first), until its stream ends;
    /// never in keep-order mode, which does not cancel.
    async fn drain(
        &self,
        ready: &mut ReadyChunks<Consumer>,
        carry: Vec<lapin::Result<Delivery>>,
        cancel: &CancellationToken,
    ) -> Stopped {
        let mut held = Some(carry).filter(|c| !c.is_empty());
        loop {
            let results = match held.take() {
                Some(c) => c,
                None => tokio::select! {
                    r = ready.next() => match r {
                        Some(r) => r,
                        None => return Stopped::Drained,
                    },
                    () = cancel.cancelled() => return Stopped::Cancelled,
                },
            };
            let slot = tokio::select! {
                s = self.slots.acquire(self.class) => s,
                () = cancel.cancelled() => return Stopped::Cancelled,
            };
            if let Err(e) = self.dispatch(results, slot).await {
                return Stopped::Failed(format!("consumer failed while draining: {e}"));
            }
        }
    }

    async fn dispatch(&self, results: Vec<lapin::Result<Delivery>>, slot: Slot) -> Result<(), lapin::Error> {
        let mut batch = Vec::with_capacity(results.len());
        let mut failure = None;
        for r in results {
            match r {
                Ok(d) => {
                    self.acks.received(d.delivery_tag).await;
                    batch.push(d);
                }
                Err(e) => failure = Some(e),
            }
        }
        if !batch.is_empty() {
            let task = (self.work)(batch, self.acks.clone());
            tokio::spawn(async move {
                task.await;
                drop(slot);
            });
        }
        failure.map_or(Ok(()), Err)
    }
}

/// The next batch: what is ready (at least one delivery), topped up for at most `linger` until
/// `batch_size`; `None` once the stream ends. Deliveries gather in `carry`, and those beyond
/// `batch_size` stay there for the next batch, so dropping this future mid-way loses nothing.
async fn gather<S, T>(ready: &mut S, carry: &mut Vec<T>, batch_size: usize, linger: Duration) -> Option<Vec<T>>
where
    S: futures_util::Stream<Item = Vec<T>> + Unpin,
{
    if carry.is_empty() {
        let first = ready.next().await?;
        carry.extend(first);
    }
    let deadline = tokio::time::Instant::now() + linger;
    while carry.len() < batch_size && !linger.is_zero() {
        match tokio::time::timeout_at(deadline, ready.next()).await {
            Ok(Some(more)) => carry.extend(more),
            _ => break,
        }
    }
    let rest = if carry.len() > batch_size { carry.split_off(batch_size) } else { Vec::new() };
    Some(std::mem::replace(carry, rest))
}

/// A channel with its prefetch set, and its ledger: one per channel, since delivery tags are
/// the channel's, across resubscriptions.
async fn open_channel(link: &Link, prefetch: u16, keep_order: bool) -> lapin::Result<(Channel, Arc<Acks>)> {
    let channel = link.connection.create_channel().await?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let acks = Acks::new(channel.clone(), usize::from(prefetch / 4), keep_order);
    Ok((channel, acks))
}

async fn subscribe(channel: &Channel, queue: &str) -> lapin::Result<(Consumer, String)> {
    let tag = format!("{queue}.{}", uuid::Uuid::new_v4().simple());
    let consumer = channel
        .basic_consume(queue.into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    Ok((consumer, tag))
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
