//! Ingest's one error type: why a command, a batch or a delivery was not accepted.

use super::batch::ItemRefusal;
use super::shape::ShapeError;
use crate::broker::PublishError;
use crate::schemas::Violation;
use crate::store::StoreError;

/// Why ingest did not accept what it was given.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The request itself is malformed at `location` (`header Idempotency-Key`, `body /a/b`).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String, location: Option<String> },
    /// Not a command sluice can take: unknown type, wrong shape, payload against its schema.
    #[error("{message}")]
    Invalid { code: &'static str, message: String, violations: Vec<Violation> },
    /// No item of a batch is valid (or, all or nothing, one is not): nothing was published.
    #[error("{message}")]
    BatchRefused { message: String, items: Vec<ItemRefusal> },
    /// A webhook delivery's signature is missing, wrong or stale.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The work queue is past a bound; nothing was published.
    #[error("{message}")]
    Behind { message: String, retry_after_secs: u32 },
    /// RabbitMQ confirmed no command of a batch; `certain` when none can still arrive.
    #[error("{message}")]
    Unconfirmed { message: String, certain: bool },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ShapeError> for IngestError {
    fn from(e: ShapeError) -> Self {
        Self::BadRequest { code: e.code, message: e.message, location: Some(e.location) }
    }
}

impl IngestError {
    /// A failed write of commands to Postgres (scheduled ones): `Unconfirmed` when it may
    /// still have committed, so the client retries with its key instead of assuming nothing ran.
    pub(crate) fn from_write(e: StoreError) -> Self {
        if e.may_have_committed() {
            tracing::warn!(error = %e, "a write of commands was sent but its commit not confirmed");
            Self::Unconfirmed {
                message: "the command was sent to the database but its commit was not confirmed, so it may still \
                          run; retry with the same Idempotency-Key and it runs once"
                    .into(),
                certain: false,
            }
        } else {
            Self::Store(e)
        }
    }

    /// An [`IngestError::Invalid`] with one violation at `path`.
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>, path: &str, detail: &str) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
            violations: vec![Violation { path: path.to_owned(), message: detail.to_owned() }],
        }
    }
}
