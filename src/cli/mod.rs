//! Subcommands whose work is more than a line in `main`: `sluice dlq ...`, `sluice webhooks ...`.

pub mod dlq;
pub mod webhooks;
