//! An application's own migrations, run beside sluice's without sharing their history.
//!
//! sqlx keeps a migrator's history in `_sqlx_migrations` of the first schema on the search
//! path, and sqlx 0.8 cannot rename that table. So each application's migrations run on a
//! connection whose search path starts with a schema of the application's own (its
//! namespace): the history lands in `<namespace>._sqlx_migrations`, apart from sluice's in
//! `public`, and the application's unqualified `CREATE TABLE`s land in its namespace too.
//! Neither history can then hold a version the other does not know, which is what makes sqlx
//! refuse to start.

use super::MigrateError;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgPool};

/// A namespace (a Postgres schema) and the migrations that build it.
pub struct AppMigrations {
    namespace: String,
    migrator: Migrator,
}

/// A namespace that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "migration namespace {0:?} is not a lowercase identifier (letters, digits, _; starting with a letter; at most \
     63 bytes), or is one of Postgres's or sluice's own (public, pg_*, information_schema)"
)]
pub struct BadNamespace(pub String);

impl AppMigrations {
    /// `migrator` (usually `sqlx::migrate!()`) for the schema `namespace`.
    pub fn new(namespace: &str, migrator: Migrator) -> Result<Self, BadNamespace> {
        let ok = namespace.len() <= 63
            && namespace.starts_with(|c: char| c.is_ascii_lowercase())
            && namespace.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !namespace.starts_with("pg_")
            && !["public", "information_schema"].contains(&namespace);
        if !ok {
            return Err(BadNamespace(namespace.to_owned()));
        }
        Ok(Self { namespace: namespace.to_owned(), migrator })
    }

    /// The schema the migrations build.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// Applies each application's pending migrations in its namespace, creating the schema first.
#[tracing::instrument(skip_all)]
pub async fn apply(pool: &PgPool, apps: &[AppMigrations]) -> Result<(), MigrateError> {
    for app in apps {
        // A connection of its own, closed afterwards: the search path set here must not
        // follow a pooled connection into the workers' transactions.
        let mut conn = pool.acquire().await.map_err(MigrateError::Database)?.detach();
        let quoted: String = sqlx::query_scalar("SELECT quote_ident($1)")
            .bind(&app.namespace)
            .fetch_one(&mut conn)
            .await
            .map_err(MigrateError::Database)?;
        // Identifiers cannot be bound; the server quoted a name that was validated above.
        match sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}")).execute(&mut conn).await {
            // 23505/42P06: a process starting beside this one created it at the same moment.
            Err(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("23505" | "42P06")) => {}
            Err(e) => return Err(MigrateError::Database(e)),
            Ok(_) => {}
        }
        sqlx::query("SELECT set_config('search_path', $1 || ', public', false)")
            .bind(&quoted)
            .execute(&mut conn)
            .await
            .map_err(MigrateError::Database)?;
        // `run_direct`, not `run`: `run` is generic over `Acquire<'a>`, and rustc then cannot
        // prove the start-up future Send for every lifetime, which spawning it needs.
        app.migrator.run_direct(&mut conn).await?;
        tracing::info!(namespace = %app.namespace, "application migrations applied");
        let _ = conn.close().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Migrator {
        Migrator::DEFAULT
    }

    #[test]
    fn a_namespace_must_be_a_plain_lowercase_identifier() {
        assert!(AppMigrations::new("orders", empty()).is_ok());
        assert!(AppMigrations::new("crm_sync2", empty()).is_ok());
        for bad in ["", "Orders", "2fa", "a-b", "a;drop", "public", "pg_catalog", "information_schema"] {
            assert!(AppMigrations::new(bad, empty()).is_err(), "{bad:?} was accepted");
        }
        assert!(AppMigrations::new(&"a".repeat(64), empty()).is_err());
    }
}
