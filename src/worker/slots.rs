//! Transaction slots shared by the consumers of the three work queues. RabbitMQ 3.10's quorum
//! queues have no priorities, so each priority has a queue of its own, and a worker process
//! hands its free slots to them by weight: when every slot is busy and more than one queue has
//! deliveries waiting, a freed slot goes to high, normal and low in the ratio 8 : 4 : 1
//! (smooth weighted round robin). A high command waits for one slot, never behind a backlog;
//! low work gets a thirteenth of a saturated worker, never nothing; and a queue alone gets
//! every slot.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};

/// The three classes, in the order of [`WEIGHTS`].
pub const CLASSES: usize = 3;
/// Share of freed slots per class (high, normal, low) while several wait.
const WEIGHTS: [i64; CLASSES] = [8, 4, 1];

/// A bounded number of slots, granted by class.
pub struct Slots {
    state: Mutex<State>,
    /// How many slots are in use; drains wait for zero.
    busy: watch::Sender<usize>,
    total: usize,
}

struct State {
    free: usize,
    waiting: [VecDeque<oneshot::Sender<Slot>>; CLASSES],
    credit: [i64; CLASSES],
}

/// One slot, given back when dropped.
pub struct Slot {
    slots: Option<Arc<Slots>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release();
        }
    }
}

impl Slots {
    /// `total` slots, all free.
    pub fn new(total: usize) -> Arc<Self> {
        let total = total.max(1);
        let state = State { free: total, waiting: Default::default(), credit: [0; CLASSES] };
        Arc::new(Self { state: Mutex::new(state), busy: watch::channel(0).0, total })
    }

    /// Waits for a slot for `class` (0 high, 1 normal, 2 low). Cancel-safe: a slot granted to a
    /// waiter that has gone is passed on.
    pub async fn acquire(self: &Arc<Self>, class: usize) -> Slot {
        let class = class.min(CLASSES - 1);
        let rx = {
            let Ok(mut st) = self.state.lock() else { return self.unbounded() };
            if st.free > 0 && st.waiting.iter().all(VecDeque::is_empty) {
                st.free -= 1;
                drop(st);
                self.busy.send_modify(|b| *b += 1);
                return Slot { slots: Some(self.clone()) };
            }
            let (tx, rx) = oneshot::channel();
            st.waiting[class].push_back(tx);
            rx
        };
        match rx.await {
            Ok(slot) => slot,
            // Only a poisoned lock drops a waiter's sender; go on rather than stall the worker.
            Err(_) => self.unbounded(),
        }
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        *self.busy.borrow()
    }

    /// All slots, for a caller that compares [`Self::in_use`] with it.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Resolves once no slot is in use.
    pub async fn idle(&self) {
        let mut rx = self.busy.subscribe();
        let _ = rx.wait_for(|b| *b == 0).await;
    }

    fn unbounded(self: &Arc<Self>) -> Slot {
        self.busy.send_modify(|b| *b += 1);
        Slot { slots: Some(self.clone()) }
    }

    fn release(self: &Arc<Self>) {
        let Ok(mut st) = self.state.lock() else { return };
        loop {
            let Some(class) = st.pick() else {
                st.free += 1;
                drop(st);
                self.busy.send_modify(|b| *b = b.saturating_sub(1));
                return;
            };
            let Some(tx) = st.waiting[class].pop_front() else { continue };
            match tx.send(Slot { slots: Some(self.clone()) }) {
                // Handed over: still in use, by someone else.
                Ok(()) => return,
                // That waiter has gone: disarm the slot it did not take and try the next.
                Err(mut unused) => unused.slots = None,
            }
        }
    }
}

impl State {
    /// The class the next freed slot goes to, among those waiting.
    fn pick(&mut self) -> Option<usize> {
        let waiting: Vec<usize> = (0..CLASSES).filter(|c| !self.waiting[*c].is_empty()).collect();
        let mut best = *waiting.first()?;
        let total: i64 = waiting.iter().map(|c| WEIGHTS[*c]).sum();
        for &c in &waiting {
            self.credit[c] += WEIGHTS[c];
            if self.credit[c] > self.credit[best] {
                best = c;
            }
        }
        self.credit[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_free_slot_is_granted_at_once_and_given_back_on_drop() {
        let slots = Slots::new(2);
        let a = slots.acquire(2).await;
        let _b = slots.acquire(0).await;
        assert_eq!(slots.in_use(), 2);
        drop(a);
        assert_eq!(slots.in_use(), 1);
    }

    #[tokio::test]
    async fn while_all_wait_freed_slots_go_eight_four_one_and_low_is_never_starved() {
        let slots = Slots::new(1);
        let held = slots.acquire(1).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Many waiters of each class, queued before any slot frees.
        let mut tasks = Vec::new();
        for class in 0..CLASSES {
            for _ in 0..26 {
                let (slots, tx) = (slots.clone(), tx.clone());
                tasks.push(tokio::spawn(async move {
                    let slot = slots.acquire(class).await;
                    tx.send((class, slot)).unwrap();
                }));
                tokio::task::yield_now().await;
            }
        }
        while slots.state.lock().unwrap().waiting.iter().map(VecDeque::len).sum::<usize>() < 78 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut order = Vec::new();
        for _ in 0..26 {
            let (class, slot) = rx.recv().await.unwrap();
            order.push(class);
            drop(slot);
        }
        let count = |c| order.iter().filter(|x| **x == c).count();
        assert_eq!((count(0), count(1), count(2)), (16, 8, 2), "{order:?}");
        drop(rx);
        for t in tasks {
            t.abort();
        }
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_does_not_swallow_the_slot() {
        let slots = Slots::new(1);
        let held = slots.acquire(0).await;
        let gone = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire(0).await })
        };
        while slots.state.lock().unwrap().waiting[0].is_empty() {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(held);
        let again = tokio::time::timeout(std::time::Duration::from_secs(5), slots.acquire(2)).await;
        assert!(again.is_ok(), "the slot came back");
        drop(again);
        slots.idle().await;
    }
}
