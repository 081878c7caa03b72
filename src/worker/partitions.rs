//! Who consumes which ordered partition. Each partition queue has a single active consumer,
//! which is what keeps a key's commands in order; but RabbitMQ 3.10 makes the first subscriber
//! active, so left alone the first worker process would take every partition. Instead each
//! process subscribes only to the partitions it holds a Postgres session advisory lock for,
//! and takes its fair share (partitions ÷ live worker processes, rounded up), plus any
//! partition left unowned for two rounds (its owner died and is not yet known dead). Above its
//! share, it gives one partition back per round. The lock only spreads the work: if two
//! processes ever subscribe to one partition, single-active-consumer still lets one at a time
//! receive, and the inbox absorbs what a stale one had in hand.

use super::acks::Acks;
use super::consume::{self, Options};
use super::slots::Slots;
use super::WorkerCtx;
use crate::store::{ordering, processes, StoreError};
use lapin::message::Delivery;
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A partition this process consumes.
struct Owned {
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// The partition's one slot: busy while a delivery of it is being handled.
    slots: Arc<Slots>,
}

/// Shares the ordered partitions with the other worker processes until `cancel`.
pub async fn run(ctx: Arc<WorkerCtx>, cancel: CancellationToken) {
    let every = Duration::from_millis(ctx.ordering.rebalance_interval_ms.max(50));
    // Bounds the transactions ordered work holds at once, across all partitions.
    let busy = Arc::new(Semaphore::new(ctx.ordering.concurrency.max(1)));
    let mut owned: BTreeMap<u16, Owned> = BTreeMap::new();
    let mut free_rounds: HashMap<u16, u32> = HashMap::new();
    let mut lock: Option<PgConnection> = None;
    loop {
        if lock.is_none() {
            lock = ctx.pool.acquire().await.ok().map(|c| c.detach());
        }
        if let Some(conn) = lock.as_mut() {
            if let Err(e) = rebalance(&ctx, conn, &mut owned, &mut free_rounds, &busy, &cancel).await {
                // The session (and with it every lock) may be gone: stop consuming before
                // another process can take over, then start again on a new session.
                tracing::warn!(error = %e, "lost the partition locks' session; giving up every partition");
                stop_all(&mut owned).await;
                lock = None;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => break,
        }
    }
    stop_all(&mut owned).await;
}

async fn rebalance(
    ctx: &Arc<WorkerCtx>,
    conn: &mut PgConnection,
    owned: &mut BTreeMap<u16, Owned>,
    free_rounds: &mut HashMap<u16, u32>,
    busy: &Arc<Semaphore>,
    cancel: &CancellationToken,
) -> Result<(), LockLost> {
    let topology = ctx.broker.topology();
    let prefix = topology.ordered_queue(0);
    let partitions = topology.partitions();
    // Consumers that ended on their own (shutdown aside) are given up and taken again.
    let ended: Vec<u16> = owned.iter().filter(|(_, o)| o.task.is_finished()).map(|(p, _)| *p).collect();
    for p in ended {
        owned.remove(&p);
        timed(ordering::disown(conn, &prefix, p)).await?;
    }
    // The pool failing says nothing of the lock session: try again next round.
    let Ok(live) = processes::live_workers(&ctx.pool).await else { return Ok(()) };
    let live = live.max(1);
    let share = usize::from(partitions).div_ceil(usize::try_from(live).unwrap_or(1));
    if owned.len() > share {
        if let Some((&p, _)) = owned.iter().next_back() {
            if let Some(o) = owned.remove(&p) {
                stop(o).await;
                timed(ordering::disown(conn, &prefix, p)).await?;
                tracing::info!(partition = p, share, "gave an ordered partition back");
            }
        }
        return Ok(());
    }
    // Start where this process's id points, so processes starting together try different ones.
    let offset = u16::try_from(ctx.reporter.id().as_u128() % u128::from(partitions)).unwrap_or(0);
    for i in 0..partitions {
        let p = (offset + i) % partitions;
        if owned.contains_key(&p) {
            continue;
        }
        let within_share = owned.len() < share;
        let orphaned = free_rounds.get(&p).copied().unwrap_or(0) >= 2;
        if !(within_share || orphaned) {
            // Seen free: counted, so an owner that died is replaced in two rounds.
            if timed(ordering::is_free(conn, &prefix, p)).await? {
                *free_rounds.entry(p).or_default() += 1;
            } else {
                free_rounds.remove(&p);
            }
            continue;
        }
        if timed(ordering::try_own(conn, &prefix, p)).await? {
            free_rounds.remove(&p);
            tracing::info!(partition = p, share, "consuming an ordered partition");
            owned.insert(p, start(ctx, p, busy, cancel));
        } else {
            free_rounds.remove(&p);
        }
    }
    Ok(())
}

/// A lock statement that does not answer in time means a session that may be gone (a
/// half-open connection): it fails like a broken one.
async fn timed<T>(statement: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, LockLost> {
    match tokio::time::timeout(Duration::from_secs(5), statement).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(LockLost(e.to_string())),
        Err(_) => Err(LockLost("a lock statement did not answer within 5 s".into())),
    }
}

/// The lock session failed or stopped answering.
#[derive(Debug, thiserror::Error)]
#[error("partition lock session: {0}")]
struct LockLost(String);

/// Starts consuming partition `p` until its own stop or the worker's shutdown.
fn start(ctx: &Arc<WorkerCtx>, p: u16, busy: &Arc<Semaphore>, cancel: &CancellationToken) -> Owned {
    let stop = cancel.child_token();
    let queue = ctx.broker.topology().ordered_queue(p);
    // One slot: the partition's deliveries are handled strictly one after another.
    let slots = Slots::new(1);
    let opts = Options {
        queue: queue.clone(),
        prefetch: ctx.ordering.prefetch.max(1),
        batch_size: 64,
        linger: Duration::ZERO,
        slots: slots.clone(),
        class: 1,
        drain: Duration::from_millis(ctx.settings.drain_timeout_ms),
        on_consuming: Box::new(|_| {}),
        outstanding: None,
        keep_order: true,
    };
    let work = {
        let (ctx, stop, busy) = (ctx.clone(), stop.clone(), busy.clone());
        move |batch: Vec<Delivery>, acks: Arc<Acks>| {
            let (ctx, stop, busy) = (ctx.clone(), stop.clone(), busy.clone());
            async move {
                let Ok(_permit) = busy.acquire().await else { return };
                super::ordered::handle_batch(&ctx, &acks, batch, &stop).await;
            }
        }
    };
    let task = {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        tokio::spawn(async move {
            let paused = ctx.reporter.pause_signal(&queue);
            consume::consume(&ctx.broker, opts, &stop, paused, work).await;
        })
    };
    Owned { stop, task, slots }
}

/// Stops consuming the partition and waits for its last delivery to be handled, however long
/// the drain takes: the caller lets go of the partition's lock next, and another process must
/// not apply anything of it while this one still might.
async fn stop(o: Owned) {
    o.stop.cancel();
    let _ = o.task.await;
    o.slots.idle().await;
}

async fn stop_all(owned: &mut BTreeMap<u16, Owned>) {
    let all = std::mem::take(owned);
    futures_util::future::join_all(all.into_values().map(stop)).await;
}
