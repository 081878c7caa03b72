//! Business logic. A handler gets a decoded command and an open transaction and returns an
//! outcome; it knows nothing of AMQP or HTTP. A new command type is a schema file in
//! `schemas/` (listed in `schemas.rs`), a handler module, and one line in [`Handlers::builtin`].

pub mod events;
pub mod ledger;
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
}

/// Command type → handler.
#[derive(Clone, Default)]
pub struct Handlers {
    map: HashMap<String, Arc<dyn Handler>>,
}

impl Handlers {
    /// The shipped command types.
    pub fn builtin() -> Self {
        let mut h = Self::default();
        h.register("account.open", ledger::OpenAccount);
        h.register("ledger.transfer", ledger::Transfer);
        h.register("event.record", events::RecordEvent);
        h.register("webhook.received", webhooks::ReceivedWebhook);
        h
    }

    /// Adds (or replaces) the handler of a command type.
    pub fn register(&mut self, kind: &str, handler: impl Handler) {
        self.map.insert(kind.to_owned(), Arc::new(handler));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_has_a_handler_and_every_handler_a_schema() {
        let schemas = crate::schemas::SchemaRegistry::builtin().unwrap();
        assert_eq!(Handlers::builtin().kinds(), schemas.kinds());
    }
}
