//! Subcommands whose work is more than a line in `main`: `sluice dlq ...`, `sluice webhooks ...`,
//! `sluice secrets ...`.

pub mod dlq;
pub mod secrets;
pub mod webhooks;

/// How a CLI user appears in the audit log.
pub fn actor() -> String {
    format!(
        "cli:{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "localhost".into())
    )
}
