//! The fault node's hooks: what `sluice-fault-node` adds to the shipped command types so the
//! fault suite can crash it where it matters and count what it applied. The shipped `sluice`
//! binary never carries them.
//!
//! - `SLUICE_FAULT_ABORT_AFTER_COMMITS=N`: the process aborts right after its N-th commit,
//!   before the ack: the window in which a crash must not lead to a second effect.
//! - `SLUICE_FAULT_COMMITS_LOG=path`: every commit appends the ids it applied to that file.
//! - `fault.poison`: a command type whose handler always fails transiently, so it walks the
//!   whole retry schedule into the dead letters. With `SLUICE_FAULT_CALLS_LOG=path`, each
//!   delivery's call appends `<command id> <unix micros>` to that file, so a test can see the
//!   delays.
//! - `fault.slow`: a command type that sleeps `payload.millis` inside its transaction.

use sluice::app::AppBuilder;
use sluice::command::Envelope;
use sluice::handlers::{Handler, HandlerError, HandlerFuture, HandlerManyFuture, Outcome};
use sluice::worker::hooks::AfterCommit;
use sqlx::PgConnection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Adds the fault command types and the after-commit hook to a builder.
pub fn install(app: AppBuilder) -> AppBuilder {
    let slow = r#"{"type": "object", "properties": {"millis": {"type": "integer", "minimum": 0, "maximum": 10000}}}"#;
    app.handler("fault.poison", r#"{"type": "object"}"#, Poison).handler("fault.slow", slow, Slow).after_commit(|ids| {
        after_commit(ids);
        AfterCommit::Ack
    })
}

/// Called after every commit of freshly applied commands, before their ack.
fn after_commit(ids: &[uuid::Uuid]) {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static LOG: OnceLock<Option<String>> = OnceLock::new();
    static COMMITTED: AtomicU64 = AtomicU64::new(0);
    // The fault suite counts fresh commits per command id: two for one id is a second effect,
    // even where a table's own key would have swallowed the second row.
    if let Some(path) = LOG.get_or_init(|| std::env::var("SLUICE_FAULT_COMMITS_LOG").ok()) {
        let lines: String = ids.iter().map(|id| format!("{id}\n")).collect();
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = std::io::Write::write_all(&mut f, lines.as_bytes());
        }
    }
    let limit =
        LIMIT.get_or_init(|| std::env::var("SLUICE_FAULT_ABORT_AFTER_COMMITS").ok().and_then(|v| v.parse().ok()));
    let commands = ids.len() as u64;
    if let Some(limit) = limit {
        if COMMITTED.fetch_add(commands, Ordering::SeqCst) + commands >= *limit {
            eprintln!("fault hook: aborting between commit and ack");
            std::process::abort();
        }
    }
}

struct Poison;

impl Handler for Poison {
    fn handle<'a>(&'a self, _tx: &'a mut PgConnection, cmd: &'a Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            if let Ok(path) = std::env::var("SLUICE_FAULT_CALLS_LOG") {
                let at = chrono::Utc::now().timestamp_micros();
                let line = format!("{} {at}\n", cmd.id);
                // One small O_APPEND write per call: whole lines even with several processes.
                if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                    let _ = std::io::Write::write_all(&mut f, line.as_bytes());
                }
            }
            Err(HandlerError::Transient("fault.poison never succeeds".into()))
        })
    }

    // A worker batch holding a poison command fails as a whole and falls back to one
    // transaction per command, where `handle` logs the call: one logged call per delivery,
    // however long the commands before it in the batch take.
    fn handle_many<'a>(&'a self, _tx: &'a mut PgConnection, _cmds: &'a [&'a Envelope]) -> HandlerManyFuture<'a> {
        Box::pin(async { Err(HandlerError::Transient("fault.poison never succeeds".into())) })
    }
}

struct Slow;

impl Handler for Slow {
    fn handle<'a>(&'a self, _tx: &'a mut PgConnection, cmd: &'a Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            let ms = cmd.payload["millis"].as_u64().unwrap_or(10);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Outcome::Succeeded(serde_json::json!({ "slept_ms": ms })))
        })
    }
}
