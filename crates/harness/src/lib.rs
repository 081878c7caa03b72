//! The multi-process harness of sluice's fault suite: sluice as separate OS processes, the
//! shared services broken and restored, a TCP proxy to cut or stall a connection, the load
//! driven through the HTTP API, and the check that nothing accepted was lost or applied twice.
//! The scenarios are in `tests/fault.rs`; `docs/testing.md` describes them.

/// The ledger-invariant and total-queue checks, and the scenario report.
pub mod check;
/// One API and several worker processes of a sluice binary.
pub mod cluster;
/// `fault.apply`: a declared command type whose handler is a Postgres function.
pub mod declared;
/// The fault node's extra command types and after-commit hook.
pub mod hooks;
/// The load of transfers and events a scenario drives.
pub mod load;
/// A TCP proxy a test can cut or stall.
pub mod proxy;
/// The three-node RabbitMQ cluster of `scripts/rabbit-cluster`.
pub mod rabbit;
/// The load-while-faulting loop every scenario shares.
pub mod scenario;
/// Breaking and restoring the shared RabbitMQ and PostgreSQL.
pub mod services;
