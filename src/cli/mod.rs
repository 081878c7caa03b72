//! Subcommands whose work is more than a line in `main`: `sluice dlq ...`.

pub mod dlq;
