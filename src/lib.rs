//! sluice: HTTP ingest → RabbitMQ → pooled workers → Postgres, with retries and dead letters.
//!
//! An application adds its own command types and runs the whole system with them:
//!
//! ```no_run
//! # use sluice::{App, CommandType, Handle, HandlerError, Incoming, Outcome, PayloadSchema};
//! # use sluice::sqlx::PgConnection;
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Ping { note: String }
//!
//! impl CommandType for Ping {
//!     const TYPE: &'static str = "demo.ping";
//!     fn schema() -> PayloadSchema { PayloadSchema::derived::<Self>() }
//! }
//!
//! struct PingHandler;
//!
//! impl Handle<Ping> for PingHandler {
//!     async fn handle(&self, _tx: &mut PgConnection, cmd: Incoming<'_, Ping>) -> Result<Outcome, HandlerError> {
//!         Ok(Outcome::succeeded(serde_json::json!({ "echo": cmd.payload.note })))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     sluice::cli::main(|settings| App::builder(settings).command::<Ping>(PingHandler))
//! }
//! ```
//!
//! `examples/orders` in the repository is a whole application built this way.

pub use app::{App, AppBuilder, Roles};
pub use command::Envelope;
pub use config::Settings;
pub use handlers::typed::{CommandType, Handle, Incoming, PayloadSchema};
pub use handlers::{HandlerError, Outcome};
/// The sqlx sluice is built with: a handler's transaction is a `sluice::sqlx::PgConnection`.
pub use sqlx;
pub use worker::hooks::AfterCommit;

/// Operator-facing HTTP API: routes, auth, error mapping.
pub mod api;
/// Builds the roles (api, worker) and runs them until shutdown.
pub mod app;
/// API keys: verification, scopes, creation and revocation.
pub mod auth;
/// RabbitMQ: connection supervision, topology, confirmed publishing.
pub mod broker;
/// Operator subcommands of the binary (`sluice dlq`).
pub mod cli;
/// The command envelope that travels from the API to the workers, and its codec.
pub mod command;
/// Typed settings layered from files and the environment.
pub mod config;
/// The operator dashboard: server-rendered pages behind an admin login.
pub mod dashboard;
/// Command types declared in files: an HTTP endpoint or a Postgres function as handler.
pub mod declared;
/// The properties the fuzz targets check (shared with the crash-regression tests).
#[cfg(feature = "fuzzing")]
pub mod fuzz;
/// Business logic, one module per command family.
pub mod handlers;
/// This process's heartbeat, outcome counts for the dashboard, and queue pauses read back.
pub mod heartbeat;
/// Ingest's use cases: a command, a batch or a webhook delivery made durable in RabbitMQ.
pub mod ingest;
/// JSON parsed within a budget of values and memory.
pub mod json;
/// Operator actions: dead-letter replay and discard, queue pause, all audited.
pub mod ops;
/// Pruning finished records by age, by one process at a time.
pub mod retention;
/// Commands for later: the dispatcher of scheduled commands.
pub mod schedule;
/// JSON Schema registry for command payloads.
pub mod schemas;
/// Secrets at rest: sealing and opening webhook and callback secrets.
pub mod secrets;
/// PostgreSQL pool, migrations and queries per table.
pub mod store;
/// Logging and metrics set-up.
pub mod telemetry;
/// A whole sluice per test, on port 0 with its own database and broker names.
pub mod testkit;
/// Webhook signature schemes: verification of inbound deliveries, signing of callbacks.
pub mod webhooks;
/// The worker pool: consume, dispatch, retry, dead-letter.
pub mod worker;
