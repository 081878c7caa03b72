//! Ingest's use cases: a command, a batch or a webhook delivery checked and made durable in
//! RabbitMQ (or, for a later run_at, in Postgres). They take and return typed values; the HTTP API is a thin adapter over them.

mod backpressure;
mod batch;
mod command;
mod error;
pub mod shape;
mod webhook;

pub use backpressure::Backpressure;
pub use batch::{item_id, BatchAccepted, BatchOptions, BatchRequest, ItemRefusal, NotPublished};
pub use command::{
    parse_command, valid_idempotency_key, Accepted, AcceptedStatus, CommandRequest, ParsedCommand, Timing,
    MAX_IDEMPOTENCY_KEY,
};
pub use error::IngestError;
pub use webhook::{Delivery, DeliveryAccepted};

use crate::broker::Broker;
use crate::config::{BatchSettings, LimitSettings, SchedulingSettings, WebhookSettings};
use crate::heartbeat::Reporter;
use crate::schemas::SchemaRegistry;
use crate::secrets::Sealer;
use sqlx::PgPool;
use std::sync::Arc;

/// What ingest publishes on and records in, and the limits it holds requests to.
#[derive(Clone)]
pub struct Ingest {
    pub pool: PgPool,
    /// The connection ingest publishes on.
    pub broker: Broker,
    pub schemas: Arc<SchemaRegistry>,
    pub limits: Arc<LimitSettings>,
    pub batches: Arc<BatchSettings>,
    pub webhooks: Arc<WebhookSettings>,
    /// How far ahead commands may be scheduled.
    pub scheduling: Arc<SchedulingSettings>,
    /// Refuses ingest while the work queue is behind.
    pub backpressure: Arc<Backpressure>,
    /// Seals callback secrets before they are stored.
    pub sealer: Arc<Sealer>,
    /// Counts accepted commands for this process's heartbeat.
    pub reporter: Arc<Reporter>,
}
