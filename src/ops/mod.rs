//! Operator actions shared by the HTTP API, the dashboard and the CLI: dead-letter replay and
//! discard, queue pause and resume, cancellation, recurring schedules. Each action is audited in the transaction that records it.

pub mod cancel;
pub mod dead_letters;
pub mod ordering;
pub mod queues;
pub mod schedules;
pub mod secrets;
pub mod webhook_sources;

use crate::broker::{Broker, PublishError};
use crate::schemas::{SchemaRegistry, Violation};
use crate::store::StoreError;
use sqlx::PgPool;
use std::sync::Arc;

/// What operator actions need; cheap to clone.
#[derive(Clone)]
pub struct Operators {
    pub pool: PgPool,
    pub broker: Broker,
    pub schemas: Arc<SchemaRegistry>,
    /// Whose dead letters and webhook sources these actions may touch.
    pub reach: Reach,
    /// Seals the secrets of sources before they are stored.
    pub sealer: Arc<crate::secrets::Sealer>,
}

/// Whose things an action may see and change: every tenant's (operators: the dashboard, the
/// CLI, `operator` keys) or one tenant's (its `admin` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    Every,
    Tenant(String),
}

impl Reach {
    /// Whether something of `tenant` (none for a message that never named one) is within reach.
    pub fn covers(&self, tenant: Option<&str>) -> bool {
        match self {
            Self::Every => true,
            Self::Tenant(t) => tenant == Some(t.as_str()),
        }
    }

    /// The one tenant in reach, or `None` for every tenant.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Self::Every => None,
            Self::Tenant(t) => Some(t),
        }
    }
}

/// Why an operator action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    NotFound(String),
    /// The target is in a state the action does not apply to.
    #[error("{0}")]
    Conflict(String),
    /// The command (or batch) is applied already, or being applied: `status` says which.
    #[error("it is {status} and can no longer be cancelled")]
    AlreadyFinal { status: String },
    /// The request itself is wrong (e.g. an unknown queue or a bad limit).
    #[error("{0}")]
    BadInput(String),
    /// A field of the request is wrong: `path` is its JSON pointer.
    #[error("{message}")]
    InvalidField { path: String, message: String },
    #[error("the edited payload does not match the schema of {kind}")]
    Invalid { kind: String, violations: Vec<Violation> },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
}
