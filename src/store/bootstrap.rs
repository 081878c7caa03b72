//! Start-up against Postgres: wait for the server, create the database when it does not
//! exist, then migrate. What cannot get better by waiting (no such database and no right to
//! create it, a refused password, a broken migration) fails at once; an unreachable server is
//! waited for up to `database.startup_timeout_secs`.

use super::app_migrations::AppMigrations;
use super::MigrateError;
use crate::config::DatabaseSettings;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What start-up is waiting for, in words safe to show an unauthenticated `/readyz`.
pub type Progress<'a> = &'a (dyn Fn(&'static str) + Send + Sync);

/// Waits for the database server, creates the database if it is missing, and applies pending
/// migrations: sluice's, then each application's in its own namespace. Concurrent callers are
/// safe: creation tolerates a twin, and sqlx serializes migrations with an advisory lock.
#[tracing::instrument(skip_all)]
pub async fn prepare(
    pool: &PgPool,
    settings: &DatabaseSettings,
    apps: &[AppMigrations],
    cancel: &CancellationToken,
    progress: Progress<'_>,
) -> Result<(), MigrateError> {
    let deadline = (settings.startup_timeout_secs > 0)
        .then(|| Instant::now() + Duration::from_secs(settings.startup_timeout_secs));
    let mut delay = Duration::from_millis(100);
    let mut created = false;
    loop {
        let err = match sqlx::query("SELECT 1").execute(pool).await {
            Ok(_) => break,
            Err(e) => e,
        };
        match classify(&err) {
            Failure::Missing if !created => {
                progress("creating the database");
                create_database(settings).await?;
                created = true;
                continue;
            }
            Failure::Missing => return Err(MigrateError::Database(err)),
            Failure::Fatal => return Err(MigrateError::Database(err)),
            Failure::Unreachable => {}
        }
        progress("waiting for the database server");
        if deadline.is_some_and(|d| Instant::now() + delay > d) {
            return Err(MigrateError::Unreachable { secs: settings.startup_timeout_secs, source: err });
        }
        tracing::warn!(error = %err, retry_in = ?delay, "database not reachable yet");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return Err(MigrateError::Cancelled),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    progress("applying migrations");
    sqlx::migrate!("./migrations").run(pool).await?;
    super::app_migrations::apply(pool, apps).await?;
    Ok(())
}

/// How a failed first query bears on waiting.
enum Failure {
    /// The server answers but the database does not exist (3D000).
    Missing,
    /// Waiting will not help: the login or the database is refused for good.
    Fatal,
    /// The server is not there (yet): wait.
    Unreachable,
}

fn classify(e: &sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Database(db) => match db.code().as_deref().unwrap_or("") {
            "3D000" => Failure::Missing,
            // 28: invalid authorization (wrong password, no such role, pg_hba refuses);
            // 42501: no CONNECT privilege.
            c if c.starts_with("28") || c == "42501" => Failure::Fatal,
            // 57P03: the server is starting up; 53: out of resources; 08: connection trouble.
            _ => Failure::Unreachable,
        },
        sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => Failure::Fatal,
        _ => Failure::Unreachable,
    }
}

/// `CREATE DATABASE` for the configured database, through the server's maintenance database.
async fn create_database(settings: &DatabaseSettings) -> Result<(), MigrateError> {
    let target = PgConnectOptions::from_str(settings.url.expose()).map_err(MigrateError::Url)?;
    let name = target.get_database().unwrap_or("postgres").to_owned();
    let mut last = None;
    for maintenance in ["postgres", "template1"] {
        let mut conn = match target.clone().database(maintenance).connect().await {
            Ok(conn) => conn,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        // Identifiers cannot be bound as parameters: the server quotes the configured name,
        // so no name can break out of the statement.
        let quoted: String = sqlx::query_scalar("SELECT quote_ident($1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .map_err(MigrateError::Database)?;
        let statement = format!("CREATE DATABASE {quoted}");
        return match sqlx::query(&statement).execute(&mut conn).await {
            Ok(_) => {
                tracing::info!(database = %name, "created the database");
                Ok(())
            }
            // Another process created it first.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => Ok(()),
            Err(e) => Err(MigrateError::Create { database: name, source: e }),
        };
    }
    Err(MigrateError::Create { database: name, source: last.unwrap_or(sqlx::Error::PoolClosed) })
}
