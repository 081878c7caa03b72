//! What an embedding application may have the worker do at its one delicate moment: after a
//! transaction committed and before the broker hears the ack. The fault suite aborts the
//! process there, and an application's tests hand the message back to see it redelivered;
//! both are given to the builder, so the worker itself carries no test-only code.

use std::sync::Arc;
use uuid::Uuid;

/// What the worker does with the deliveries of a commit once the hook has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCommit {
    /// Ack them, as always.
    Ack,
    /// Hand them back to the broker unacked, as a crash would: the broker delivers them again
    /// and the inbox must absorb the second delivery.
    Redeliver,
}

/// Called with the ids of the commands a transaction applied, right after it committed.
pub type CommitHook = Arc<dyn Fn(&[Uuid]) -> AfterCommit + Send + Sync>;

/// Runs the hook, if any.
pub(crate) fn after_commit(hook: Option<&CommitHook>, ids: &[Uuid]) -> AfterCommit {
    hook.map_or(AfterCommit::Ack, |h| h(ids))
}
