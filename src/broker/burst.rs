//! Single publishes sent in bursts: the messages of concurrent requests that arrive while
//! earlier bursts await their confirms go out together as the next burst.
//!
//! RabbitMQ's cost per message falls with the number of messages that reach a quorum queue
//! together (each WAL write and fsync and each confirm frame is shared by all of them), and
//! independent HTTP requests publish one message at a time: measured, the raw pipeline at 64
//! messages in flight costs the broker as much per message as sluice's singles did, and falls
//! to about 40 µs at 1,000 (docs/performance.md). Sending as soon as a burst slot is free,
//! rather than after a fixed delay, adds no latency to a lone publish: bursts form only under
//! load, sized by what arrived during the previous confirm round trip, as in a database's
//! group commit.

use super::publisher::{first_poll_in_order, options};
use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// A message handed to the burst sender, owned so that it can wait for the next burst.
pub(super) struct Job {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
    /// Gets the broker's answer; dropped unanswered only if the sender is, at shutdown.
    pub reply: oneshot::Sender<lapin::Result<Confirmation>>,
}

/// Most messages in one burst, so a burst's frames stay a bounded write.
const MAX_BURST: usize = 512;

type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts the task that sends `channel`'s bursts, at most `depth` of them awaiting confirms at
/// once, and returns where to hand it messages. It ends when every sender is dropped (the link
/// was replaced) and the bursts it sent are answered.
pub(super) fn start(channel: Channel, numbering: Arc<Mutex<()>>, depth: usize) -> mpsc::UnboundedSender<Job> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(channel, numbering, depth.max(1), rx));
    tx
}

async fn run(channel: Channel, numbering: Arc<Mutex<()>>, depth: usize, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut bursts: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut jobs = Vec::with_capacity(MAX_BURST);
    loop {
        tokio::select! {
            biased;
            Some(()) = bursts.next(), if !bursts.is_empty() => {}
            n = rx.recv_many(&mut jobs, MAX_BURST), if bursts.len() < depth => {
                if n == 0 {
                    break;
                }
                let span = tracing::debug_span!("publish_burst", messages = n);
                let (sent, burst) = send(&channel, &numbering, &mut jobs).instrument(span).await;
                if sent < n {
                    metrics::counter!("sluice_publish_abandoned_total").increment((n - sent) as u64);
                }
                // Every job given up on: nothing went out, so there is no burst to count or await.
                if sent > 0 {
                    metrics::histogram!("sluice_publish_burst_messages").record(sent as f64);
                    bursts.push(burst);
                }
            }
        }
    }
    while bursts.next().await.is_some() {}
}

/// Queues the frames of every job still awaited with lapin, in order, and returns how many
/// it sent and the burst's confirms.
async fn send(channel: &Channel, numbering: &Mutex<()>, jobs: &mut Vec<Job>) -> (usize, Pending) {
    let mut confirms: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut sent = 0;
    for job in jobs.drain(..) {
        // Its request gave up waiting (publish timeout): it answered "outcome unknown", and
        // not sending at all keeps that from becoming a message nobody is waiting for.
        if job.reply.is_closed() {
            continue;
        }
        sent += 1;
        let channel = channel.clone();
        let mut publish: Pending = Box::pin(async move {
            let Job { exchange, routing_key, body, properties, reply } = job;
            let confirmed =
                async { channel.basic_publish(exchange, routing_key, options(), &body, properties).await?.await };
            let _ = reply.send(confirmed.await);
        });
        // Under the lock, so a pipelined batch on the same channel cannot interleave.
        if first_poll_in_order(numbering, publish.as_mut()).await.is_pending() {
            confirms.push(publish);
        }
    }
    (sent, Box::pin(async move { while confirms.next().await.is_some() {} }))
}
