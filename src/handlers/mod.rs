//! Business logic. A handler gets a decoded command and an open transaction and returns an
//! outcome; it knows nothing of AMQP or HTTP. A command type is a payload type implementing
//! [`typed::CommandType`] and a handler implementing [`typed::Handle`], registered with one line
//! on the application builder; the shipped ones (ledger, events, webhooks) are written the same
//! way.

pub mod events;
pub mod ledger;
pub mod remote;
pub mod typed;
pub mod webhooks;

use crate::command::Envelope;
use crate::store::StoreError;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a handler decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied; the value is the command's result.
    Succeeded(Value),
    /// A business rule refused it (e.g. insufficient funds): final, not retried, not poison.
    Rejected { reason: String, message: String },
}

impl Outcome {
    /// Applied, with `result` (anything serializable) as the command's result.
    pub fn succeeded(result: impl serde::Serialize) -> Self {
        Self::Succeeded(serde_json::to_value(result).unwrap_or(Value::Null))
    }

    /// Refused by a business rule: `reason` is a stable machine-readable word, `message` the
    /// explanation for people.
    pub fn rejected(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Rejected { reason: reason.into(), message: message.into() }
    }
}

/// Why a handler could not decide.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might work later: retried with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// Will never work (payload the handler cannot use): dead-lettered at once.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The database failed; how to react depends on how (see [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for HandlerError {
    /// Lets a handler use `?` on its own queries; the error is classified as sluice's own are
    /// (a conflict is retried at once, an outage holds the command, a timeout retries later).
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::from(e))
    }
}

/// The future a handler returns; it borrows the transaction and the command.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, HandlerError>> + Send + 'a>>;

/// The future of [`Handler::handle_many`]: one outcome per command, in order.
pub type HandlerManyFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Outcome>, HandlerError>> + Send + 'a>>;

/// The business logic of one command type.
pub trait Handler: Send + Sync + 'static {
    /// Applies `cmd` inside `tx`. Must not commit; must be safe to roll back at any point.
    /// A `Rejected` outcome must not have written anything.
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, cmd: &'a Envelope) -> HandlerFuture<'a>;

    /// Names of what `cmd` will lock (e.g. accounts). The worker takes every command's keys of
    /// a transaction at its start, sorted, so transactions holding several commands cannot
    /// deadlock each other.
    fn lock_keys(&self, _cmd: &Envelope) -> Vec<String> {
        Vec::new()
    }

    /// Applies several commands of this type in the same transaction. The default runs
    /// [`Handler::handle`] for each; a handler overrides it to use multi-row statements. Any
    /// error rolls the whole batch back and the worker retries each command on its own.
    fn handle_many<'a>(&'a self, tx: &'a mut PgConnection, cmds: &'a [&'a Envelope]) -> HandlerManyFuture<'a> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                outcomes.push(self.handle(tx, cmd).await?);
            }
            Ok(outcomes)
        })
    }

    /// Whether its outcomes were decided before the transaction (a remote endpoint answered):
    /// they are recorded even if the command's batch was cancelled since, because the effect
    /// happened.
    fn decided_before(&self) -> bool {
        false
    }

    /// The call out when the work is done by another service; the worker then never calls
    /// [`Handler::handle`] for it.
    fn remote(&self) -> Option<&dyn remote::Remote> {
        None
    }

    /// What runs this type, for operators (the dashboard's list of types).
    fn describe(&self) -> String {
        "Rust handler".into()
    }
}

/// A command type as operators see it listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TypeInfo {
    pub kind: String,
    /// What runs it (`Rust handler`, `HTTP POST …`, `SQL function …`).
    pub handler: String,
    /// False for types only sluice makes (`webhook.received`).
    pub submittable: bool,
    pub retry: Option<RetryOverride>,
}

/// Per-type retry settings, over `[worker]`'s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    /// Attempts before a transiently failing command is dead-lettered.
    pub max_attempts: Option<u32>,
    /// The first retry's delay (ms); each later one doubles, rounded to a retry tier.
    pub base_ms: Option<u64>,
    /// What a dead command with an `ordering_key` does to its key's later commands.
    pub ordering: Option<OrderingPolicy>,
}

/// What happens to the later commands of a key once one of its commands is dead-lettered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderingPolicy {
    /// The key stays blocked until an operator replays or discards the dead letter.
    #[default]
    Halt,
    /// The key's next command runs as if the dead one had succeeded.
    Skip,
}

/// Command type → handler.
#[derive(Clone, Default)]
pub struct Handlers {
    map: HashMap<String, Arc<dyn Handler>>,
    retries: HashMap<String, RetryOverride>,
}

impl Handlers {
    /// Sets the handler of a command type.
    pub fn register(&mut self, kind: &str, handler: impl Handler) {
        self.map.insert(kind.to_owned(), Arc::new(handler));
    }

    /// Gives `kind` retry settings of its own.
    pub fn set_retry(&mut self, kind: &str, retry: RetryOverride) {
        self.retries.insert(kind.to_owned(), retry);
    }

    /// The retry settings `kind` has of its own.
    pub fn retry(&self, kind: &str) -> Option<RetryOverride> {
        self.retries.get(kind).copied()
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.map.get(kind)
    }

    /// The registered command types, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.map.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }
}

/// Decodes a payload into the handler's type; a mismatch is permanent (the API validated it
/// against the schema, so this only happens to messages published around the API).
pub fn payload<T: DeserializeOwned>(cmd: &Envelope) -> Result<T, HandlerError> {
    T::deserialize(&cmd.payload)
        .map_err(|e| HandlerError::Permanent(format!("payload of {} is unusable: {e}", cmd.kind)))
}
