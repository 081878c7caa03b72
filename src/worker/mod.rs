//! The worker role: a pool consuming the work queue, and the recorder that moves dead
//! letters from their queue into Postgres.

mod consume;
mod dead_letters;
mod process;
pub mod retry;
pub mod route;

use crate::broker::headers::{get_i64, get_str};
use crate::broker::Broker;
use crate::command::{ATTEMPT_HEADER, TRACEPARENT_HEADER};
use crate::config::WorkerSettings;
use crate::handlers::Handlers;
use futures_util::FutureExt;
use lapin::message::Delivery;
use retry::RetryPolicy;
use sqlx::PgPool;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What every worker task shares.
pub struct WorkerCtx {
    pub pool: PgPool,
    pub broker: Broker,
    pub handlers: Handlers,
    pub policy: RetryPolicy,
    pub settings: WorkerSettings,
}

/// Runs the worker role until `cancel`, then drains in-flight commands.
pub async fn run(ctx: Arc<WorkerCtx>, cancel: CancellationToken) {
    let drain = Duration::from_millis(ctx.settings.drain_timeout_ms);
    let topology = ctx.broker.topology().clone();
    let work = {
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        move |d: Delivery| {
            let ctx = ctx.clone();
            let cancel = cancel.clone();
            async move { handle(&ctx, d, &cancel).await }
        }
    };
    let record = {
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        move |d: Delivery| {
            let ctx = ctx.clone();
            let cancel = cancel.clone();
            async move { dead_letters::record(&ctx, d, &cancel).await }
        }
    };
    let s = &ctx.settings;
    tokio::join!(
        consume::consume(
            &ctx.broker,
            topology.work_queue(),
            s.prefetch,
            s.concurrency,
            drain,
            &cancel,
            work
        ),
        consume::consume(
            &ctx.broker,
            topology.dead_letter_queue(),
            16,
            4,
            drain,
            &cancel,
            record
        ),
    );
}

/// One delivery from the work queue, start to ack.
async fn handle(ctx: &WorkerCtx, delivery: Delivery, cancel: &CancellationToken) {
    let headers = delivery.properties.headers().as_ref();
    let attempt = get_i64(headers, ATTEMPT_HEADER)
        .and_then(|a| u32::try_from(a).ok())
        .unwrap_or(1)
        .max(1);
    let span = tracing::info_span!(
        "command",
        command_id = tracing::field::Empty,
        kind = tracing::field::Empty,
        attempt,
        redelivered = delivery.redelivered,
        traceparent = get_str(headers, TRACEPARENT_HEADER).unwrap_or_default(),
    );
    async {
        metrics::gauge!("sluice_worker_in_flight").increment(1.0);
        // A panicking handler is treated like a crashed worker: the message goes back to the
        // queue, and the quorum queue's delivery limit dead-letters it if it keeps happening.
        match AssertUnwindSafe(process::decide(ctx, &delivery.data, attempt, cancel))
            .catch_unwind()
            .await
        {
            Ok(verdict) => route::route(ctx, &delivery, attempt, verdict).await,
            Err(_) => {
                tracing::error!("handler panicked; returning the message to the queue");
                metrics::counter!("sluice_handler_panics_total").increment(1);
                route::give_back(&delivery).await;
            }
        }
        metrics::gauge!("sluice_worker_in_flight").decrement(1.0);
    }
    .instrument(span)
    .await;
}
