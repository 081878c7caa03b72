//! Settling deliveries with as few frames as possible. On a quorum queue every ack is a Raft
//! command, so acking one message at a time costs RabbitMQ about three times the CPU of
//! acking in bulk (sluice bench, raw consume: 20k msg/s with single acks, 58k with multiple).
//! A delivery counts as settled here only once its ack or nack is sent.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Mutex;

/// What to send to the broker after a change of state.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// `basic.ack(tag, multiple = true)`.
    AckUpTo(u64),
    /// `basic.ack(tag, multiple = false)`.
    Ack(u64),
}

/// Which deliveries of one channel are still being worked on and which are done but unacked.
#[derive(Debug, Default)]
pub struct Ledger {
    in_flight: BTreeSet<u64>,
    done: BTreeSet<u64>,
    /// Done-but-unacked deliveries beyond which they are acked one by one, so one slow
    /// delivery cannot hold the prefetch window shut.
    max_held: usize,
}

impl Ledger {
    /// A ledger that holds at most `max_held` done deliveries behind a slow one.
    pub fn new(max_held: usize) -> Self {
        Self { max_held: max_held.max(1), ..Self::default() }
    }

    /// A delivery arrived (in tag order) and is being worked on.
    pub fn received(&mut self, tag: u64) {
        self.in_flight.insert(tag);
    }

    /// Deliveries are done and to be acked; returns the frames that settle all it can.
    pub fn done(&mut self, tags: &[u64]) -> Vec<Frame> {
        for tag in tags {
            if self.in_flight.remove(tag) {
                self.done.insert(*tag);
            }
        }
        self.flush()
    }

    /// A delivery was settled otherwise (nacked); returns the acks this unblocks.
    pub fn settled(&mut self, tag: u64) -> Vec<Frame> {
        self.in_flight.remove(&tag);
        self.flush()
    }

    fn flush(&mut self) -> Vec<Frame> {
        let lowest_busy = self.in_flight.first().copied().unwrap_or(u64::MAX);
        let mut frames = Vec::new();
        // Everything done below the lowest busy delivery goes in one multiple ack.
        if let Some(&upto) = self.done.range(..lowest_busy).next_back() {
            self.done = self.done.split_off(&(upto + 1));
            frames.push(Frame::AckUpTo(upto));
        }
        if self.done.len() > self.max_held {
            frames.extend(std::mem::take(&mut self.done).into_iter().map(Frame::Ack));
        }
        frames
    }
}

/// The ledger of one consumer channel, with the channel to send its frames on.
pub struct Acks {
    channel: Channel,
    // An async mutex held while sending: frames must reach the broker in the order computed,
    // or a multiple ack could cover a tag that a later single ack then names again.
    ledger: Mutex<Ledger>,
    /// Given-back deliveries are left unacked for the channel's close to return (see
    /// [`Acks::give_back`]) rather than nacked.
    keep_order: bool,
    reopen: AtomicBool,
}

impl Acks {
    /// Settles deliveries of `channel`, holding at most `max_held` behind a slow one;
    /// `keep_order` for a queue whose order must survive deliveries handed back.
    pub fn new(channel: Channel, max_held: usize, keep_order: bool) -> Arc<Self> {
        let ledger = Mutex::new(Ledger::new(max_held));
        Arc::new(Self { channel, ledger, keep_order, reopen: AtomicBool::new(false) })
    }

    /// Whether a delivery was given back in keep-order mode: the consumer must hand nothing
    /// more to work and close this channel once its running work is done.
    pub fn must_reopen(&self) -> bool {
        self.reopen.load(Ordering::Acquire)
    }

    /// Registers a delivery before it is handed to work.
    pub async fn received(&self, tag: u64) {
        self.ledger.lock().await.received(tag);
    }

    /// Acks deliveries; a failure means the channel is gone and the broker will redeliver,
    /// which the inbox absorbs.
    pub async fn ack(&self, deliveries: &[&Delivery]) {
        let tags: Vec<u64> = deliveries.iter().map(|d| d.delivery_tag).collect();
        let mut ledger = self.ledger.lock().await;
        let frames = ledger.done(&tags);
        self.send(frames).await;
    }

    /// Returns a delivery to its queue (counts as a delivery for the quorum queue's limit).
    ///
    /// In keep-order mode it is left unacked instead, and so is everything after it: a nack
    /// would put it back behind the deliveries this consumer already holds (RabbitMQ gives it
    /// a new place when it delivers it again), while closing the channel returns all of them
    /// in their order.
    pub async fn give_back(&self, delivery: &Delivery) {
        if self.keep_order {
            self.reopen.store(true, Ordering::Release);
            return;
        }
        let mut ledger = self.ledger.lock().await;
        let opts = BasicNackOptions { requeue: true, multiple: false };
        if let Err(e) = self.channel.basic_nack(delivery.delivery_tag, opts).await {
            tracing::warn!(error = %e, "nack failed; the broker will redeliver when the channel closes");
        }
        let frames = ledger.settled(delivery.delivery_tag);
        self.send(frames).await;
    }

    async fn send(&self, frames: Vec<Frame>) {
        for frame in frames {
            let (tag, multiple) = match frame {
                Frame::AckUpTo(tag) => (tag, true),
                Frame::Ack(tag) => (tag, false),
            };
            if let Err(e) = self.channel.basic_ack(tag, BasicAckOptions { multiple }).await {
                metrics::counter!("sluice_ack_failures_total").increment(1);
                tracing::warn!(error = %e, "ack failed; the broker will redeliver and the inbox absorb it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(tags: std::ops::RangeInclusive<u64>, max_held: usize) -> Ledger {
        let mut l = Ledger::new(max_held);
        tags.for_each(|t| l.received(t));
        l
    }

    #[test]
    fn deliveries_done_in_order_are_acked_with_one_multiple_ack() {
        let mut l = ledger(1..=5, 10);
        assert_eq!(l.done(&[1, 2, 3]), vec![Frame::AckUpTo(3)]);
        assert_eq!(l.done(&[4, 5]), vec![Frame::AckUpTo(5)]);
    }

    #[test]
    fn a_multiple_ack_never_covers_a_delivery_still_in_flight() {
        let mut l = ledger(1..=5, 10);
        assert_eq!(l.done(&[2, 3, 5]), vec![]);
        assert_eq!(l.done(&[1]), vec![Frame::AckUpTo(3)]);
        assert_eq!(l.done(&[4]), vec![Frame::AckUpTo(5)]);
    }

    #[test]
    fn a_nacked_delivery_unblocks_the_ones_after_it() {
        let mut l = ledger(1..=3, 10);
        assert_eq!(l.done(&[2, 3]), vec![]);
        assert_eq!(l.settled(1), vec![Frame::AckUpTo(3)]);
    }

    #[test]
    fn done_deliveries_behind_a_slow_one_are_acked_singly_past_the_limit() {
        let mut l = ledger(1..=6, 3);
        assert_eq!(l.done(&[2, 3, 4]), vec![]);
        assert_eq!(l.done(&[5]), vec![Frame::Ack(2), Frame::Ack(3), Frame::Ack(4), Frame::Ack(5)]);
        // The slow one finishes: only what is still unacked is covered.
        assert_eq!(l.done(&[1]), vec![Frame::AckUpTo(1)]);
        assert_eq!(l.done(&[6]), vec![Frame::AckUpTo(6)]);
    }

    #[test]
    fn unknown_or_repeated_tags_send_nothing() {
        let mut l = ledger(1..=2, 10);
        assert_eq!(l.done(&[1]), vec![Frame::AckUpTo(1)]);
        assert_eq!(l.done(&[1]), vec![]);
        assert_eq!(l.done(&[9]), vec![]);
    }
}
