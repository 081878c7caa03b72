//! PostgreSQL: one pool per process, migrations, and the queries of each table.

pub mod accounts;
pub mod api_keys;
pub mod app_migrations;
pub mod audit;
pub mod batches;
pub mod bootstrap;
pub mod cancellation;
pub mod commands;
pub mod dead_letters;
pub mod events;
pub mod locks;
pub mod ordering;
pub mod outcome_counts;
pub mod processes;
pub mod retention;
pub mod scheduled;
pub mod schedules;
pub mod sessions;
pub mod webhooks;

use crate::config::DatabaseSettings;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a database failure means for the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached; wait for it, do not give up on the work.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Serialization failure or deadlock (40001/40P01): retry the transaction.
    #[error("transaction conflict: {0}")]
    Conflict(#[source] sqlx::Error),
    /// A statement ran past its timeout.
    #[error("database timeout: {0}")]
    Timeout(#[source] sqlx::Error),
    /// A value the database cannot hold (SQLSTATE class 22: a NUL byte in text, a number out
    /// of range, ...): the input's fault, not the database's.
    #[error("value not storable: {0}")]
    Invalid(#[source] sqlx::Error),
    /// Anything else: a bug or data the database refuses.
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::Tls(_) | E::WorkerCrashed | E::Protocol(_) => {
                Self::Unavailable(e)
            }
            E::Database(db) => match db.code().as_deref().unwrap_or("") {
                "40001" | "40P01" => Self::Conflict(e),
                "57014" => Self::Timeout(e),
                c if c.starts_with("22") => Self::Invalid(e),
                // 08: connection exception; 57P0x: shutdown / cannot connect now; 53: resources.
                c if c.starts_with("08") || c.starts_with("57P0") || c.starts_with("53") => Self::Unavailable(e),
                _ => Self::Other(e),
            },
            _ => Self::Other(e),
        }
    }
}

/// How each [`StoreError`] begins when shown: the part a tenant may see. What follows it is the
/// database's own text, which goes to logs and the operators' views only.
/// sqlx's own word for a database's error closes the list, for messages that quote it bare.
const PUBLIC_PREFIXES: [&str; 6] = [
    "database unavailable",
    "transaction conflict",
    "database timeout",
    "value not storable",
    "database error",
    "error returned from database",
];

/// `error` as a tenant may see it: a database error's own text is cut, leaving what kind of
/// failure it was (`database error`), wherever in the message it stands.
pub fn public_error(error: &str) -> std::borrow::Cow<'_, str> {
    for prefix in PUBLIC_PREFIXES {
        if let Some(at) = error.find(&format!("{prefix}: ")) {
            return format!("{}{prefix} (details are in the operators' view)", &error[..at]).into();
        }
    }
    error.into()
}

impl StoreError {
    /// Whether the database itself is away (as opposed to this statement failing).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Whether a write that failed this way may still have committed: it reached the
    /// database and the answer was lost (a dropped connection, a server shutting down while
    /// the commit waited for its synchronous standby). Only a failure to get a connection at
    /// all is certain to have written nothing.
    pub fn may_have_committed(&self) -> bool {
        use sqlx::Error as E;
        match self {
            Self::Unavailable(E::PoolTimedOut | E::PoolClosed | E::Tls(_)) => false,
            Self::Unavailable(E::Database(db)) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or("");
                code.starts_with("08") || code == "57P01" || code == "57P02"
            }
            Self::Unavailable(_) => true,
            Self::Conflict(_) | Self::Timeout(_) | Self::Invalid(_) | Self::Other(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_shown_to_a_tenant_keeps_its_kind_and_loses_the_database_text() {
        let raw = StoreError::Other(sqlx::Error::Protocol("relation \"secret_table\" does not exist".into()));
        let shown = public_error(&format!("transient: {raw}")).into_owned();
        assert_eq!(shown, "transient: database error (details are in the operators' view)");
        for e in [
            StoreError::Unavailable(sqlx::Error::PoolTimedOut),
            StoreError::Conflict(sqlx::Error::PoolTimedOut),
            StoreError::Timeout(sqlx::Error::PoolTimedOut),
            StoreError::Invalid(sqlx::Error::PoolTimedOut),
            StoreError::Other(sqlx::Error::PoolTimedOut),
        ] {
            assert!(!public_error(&e.to_string()).contains("pool"), "{e} is cut");
        }
        assert_eq!(public_error("insufficient funds"), "insufficient funds", "other text is kept");
    }

    #[test]
    fn only_a_write_that_never_got_a_connection_is_certain_to_have_written_nothing() {
        let lost = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(StoreError::from(sqlx::Error::Io(lost)).may_have_committed());
        assert!(StoreError::from(sqlx::Error::Protocol("unexpected end".into())).may_have_committed());
        assert!(!StoreError::from(sqlx::Error::PoolTimedOut).may_have_committed());
        assert!(!StoreError::from(sqlx::Error::PoolClosed).may_have_committed());
        assert!(!StoreError::Other(sqlx::Error::RowNotFound).may_have_committed());
    }
}

/// Why the database could not be made ready at start-up; each says what to do in one line.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database.url is invalid: {0}")]
    Url(#[source] sqlx::Error),
    #[error("the database refused sluice: {0}")]
    Database(#[source] sqlx::Error),
    #[error(
        "database {database:?} does not exist and could not be created ({source}); create it, or give \
         sluice's role the CREATEDB privilege"
    )]
    Create { database: String, source: sqlx::Error },
    #[error("the database server did not answer within {secs} s (database.startup_timeout_secs): {source}")]
    Unreachable { secs: u64, source: sqlx::Error },
    #[error("shut down while waiting for the database")]
    Cancelled,
}

/// A lazily connecting pool: the process starts even while Postgres is away.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, MigrateError> {
    let options = PgConnectOptions::from_str(settings.url.expose())
        .map_err(MigrateError::Url)?
        .application_name("sluice")
        .options([("statement_timeout", settings.statement_timeout_ms.to_string())]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(options))
}

/// A pool for a command-line tool, with the database created and migrated.
pub async fn ready_pool(settings: &DatabaseSettings) -> Result<PgPool, MigrateError> {
    let pool = pool(settings)?;
    bootstrap::prepare(&pool, settings, &[], &CancellationToken::new(), &|_| {}).await?;
    Ok(pool)
}

/// Whether the database answers within `within`.
pub async fn ping(pool: &PgPool, within: Duration) -> bool {
    matches!(tokio::time::timeout(within, sqlx::query("SELECT 1").execute(pool)).await, Ok(Ok(_)))
}
