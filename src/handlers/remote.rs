//! Handlers whose work happens in another service (an HTTP endpoint). The worker calls them
//! with no database transaction open, bounded per type and behind a circuit breaker, and then
//! records the outcome in a transaction of its own; see `worker::remote`.

use super::Outcome;
use crate::command::Envelope;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How much of a worker process a remote type may use, and when its circuit opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteLimits {
    /// Calls of this type running at once in one process.
    pub max_in_flight: usize,
    /// Consecutive transient failures that open the circuit.
    pub circuit_failures: u32,
    /// How long the circuit first stays open; it doubles on each failed probe, up to a minute.
    pub circuit_open: Duration,
}

/// One call: the command, which attempt it is, and the trace it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub cmd: &'a Envelope,
    pub attempt: u32,
    pub traceparent: Option<&'a str>,
}

/// Why a call did not decide the command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// Might work later (a timeout, a 5xx, a 429): retried with backoff, no sooner than
    /// `retry_after` when the service said so. Counts against the circuit.
    #[error("transient: {error}")]
    Transient { error: String, retry_after: Option<Duration> },
    /// Will not work by retrying (the endpoint redirects, say): dead-lettered at once.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// The future of [`Remote::call`].
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, CallError>> + Send + 'a>>;

/// A handler that decides a command by calling out.
pub trait Remote: Send + Sync {
    /// Its per-process bounds.
    fn limits(&self) -> RemoteLimits;
    /// Calls out for one command; no transaction is open.
    fn call<'a>(&'a self, call: Call<'a>) -> CallFuture<'a>;
}
