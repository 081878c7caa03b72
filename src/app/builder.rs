//! The one way to assemble a sluice process: settings, the command types it carries, the
//! application's own migrations, then build or run it. The shipped binary is this builder
//! with the built-in domain; an application's binary is the same with its own types.

use super::catalog::{Catalog, CatalogError};
use super::{Application, Roles};
use crate::config::Settings;
use crate::handlers::typed::{CommandType, Handle};
use crate::handlers::Handler;
use crate::store::app_migrations::{AppMigrations, BadNamespace};
use crate::worker::hooks::{AfterCommit, CommitHook};
use sqlx::migrate::Migrator;
use std::sync::Arc;
use uuid::Uuid;

/// Entry point of the library: `sluice::App::builder(settings)`.
pub struct App;

impl App {
    /// A builder carrying sluice's core (verified webhooks) and nothing else yet.
    pub fn builder(settings: Settings) -> AppBuilder {
        let (catalog, problem) = match Catalog::core() {
            Ok(c) => (c, None),
            // Unreachable with the shipped schema files, which a unit test compiles; reported
            // by `build` all the same rather than panicking.
            Err(e) => (Catalog::empty(), Some(BuildError::Catalog(e))),
        };
        AppBuilder { settings, catalog, migrations: Vec::new(), after_commit: None, problem }
    }
}

/// Why a builder could not build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Namespace(#[from] BadNamespace),
    #[error("migration namespace {0:?} is given twice")]
    DuplicateNamespace(String),
    #[error(transparent)]
    Declared(#[from] crate::declared::Problems),
}

/// A sluice process being assembled. Registration mistakes (a type given twice, a schema
/// that does not compile) are kept and reported by [`AppBuilder::build`], so the chain of
/// calls reads as a list.
pub struct AppBuilder {
    settings: Settings,
    catalog: Catalog,
    migrations: Vec<AppMigrations>,
    after_commit: Option<CommitHook>,
    problem: Option<BuildError>,
}

impl AppBuilder {
    /// Adds the shipped domain: `account.open`, `ledger.transfer` and `event.record`.
    pub fn builtin_domain(mut self) -> Self {
        let result = self.catalog.add_builtin_domain();
        self.keep(result.map_err(BuildError::from));
        self
    }

    /// Adds the command type `C`, handled by `handler`.
    pub fn command<C: CommandType>(mut self, handler: impl Handle<C>) -> Self {
        let result = self.catalog.add::<C>(handler);
        self.keep(result.map_err(BuildError::from));
        self
    }

    /// Adds a command type whose handler reads the raw envelope; `schema_json` is the text of
    /// its payload schema. Prefer [`AppBuilder::command`].
    pub fn handler(mut self, kind: &str, schema_json: &str, handler: impl Handler) -> Self {
        let result = self.catalog.register(kind, schema_json, handler);
        self.keep(result.map_err(BuildError::from));
        self
    }

    /// Gives the type `kind` retry settings of its own, and with them what its dead commands
    /// with an ordering key do to their key (`ordering`: halt, the default, or skip).
    pub fn retry(mut self, kind: &str, retry: crate::handlers::RetryOverride) -> Self {
        self.catalog.handlers.set_retry(kind, retry);
        self
    }

    /// The application's own migrations (`sqlx::migrate!()`), applied after sluice's in the
    /// Postgres schema `namespace`, with their history in `<namespace>._sqlx_migrations`.
    pub fn migrations(mut self, namespace: &str, migrator: Migrator) -> Self {
        if self.migrations.iter().any(|m| m.namespace() == namespace) {
            self.keep(Err(BuildError::DuplicateNamespace(namespace.to_owned())));
            return self;
        }
        match AppMigrations::new(namespace, migrator) {
            Ok(m) => self.migrations.push(m),
            Err(e) => self.keep(Err(e.into())),
        }
        self
    }

    /// Runs `hook` after each of the workers' commits, before the ack; see
    /// [`crate::worker::hooks`]. Meant for tests and fault injection.
    pub fn after_commit(mut self, hook: impl Fn(&[Uuid]) -> AfterCommit + Send + Sync + 'static) -> Self {
        self.after_commit = Some(Arc::new(hook));
        self
    }

    /// The settings the process will run with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Changes the settings (tests bind port 0 and name their own database).
    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// The command types registered so far.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Binds the HTTP port, waits for the database and migrates it; see [`Application::build`].
    pub async fn build(self, roles: Roles) -> anyhow::Result<Application> {
        let parts = self.into_parts()?;
        Application::start(parts, roles).await
    }

    /// Builds and runs `roles` until SIGTERM or Ctrl-C, then drains.
    pub async fn run(self, roles: Roles) -> anyhow::Result<()> {
        crate::telemetry::metrics_handle();
        let app = self.build(roles).await?;
        tracing::info!(port = app.port(), ?roles, "sluice started");
        let token = app.shutdown_token();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested; draining");
            token.cancel();
        });
        app.run_until_stopped().await?;
        tracing::info!("stopped");
        Ok(())
    }

    /// Creates the database if needed and applies sluice's and the application's migrations.
    pub async fn migrate(self) -> anyhow::Result<()> {
        let parts = self.into_parts()?;
        let pool = crate::store::ready_pool(&parts.settings.database).await?;
        crate::store::app_migrations::apply(&pool, &parts.migrations).await?;
        pool.close().await;
        Ok(())
    }

    /// The settings and the registered command types, for tools that need no process.
    pub fn into_catalog(self) -> Result<(Settings, Catalog), BuildError> {
        let parts = self.into_parts()?;
        Ok((parts.settings, parts.catalog))
    }

    pub(super) fn into_parts(self) -> Result<Parts, BuildError> {
        if let Some(problem) = self.problem {
            return Err(problem);
        }
        let (catalog, declared) = with_declared(&self.settings, self.catalog)?;
        Ok(Parts {
            settings: self.settings,
            catalog,
            declared,
            migrations: self.migrations,
            after_commit: self.after_commit,
        })
    }

    fn keep(&mut self, result: Result<(), BuildError>) {
        if let (Err(e), None) = (result, &self.problem) {
            self.problem = Some(e);
        }
    }
}

/// `catalog` with the types declared in `commands.dir` added, and those declarations.
pub(super) fn with_declared(
    settings: &Settings,
    mut catalog: Catalog,
) -> Result<(Catalog, Vec<crate::declared::Declaration>), BuildError> {
    let declared = super::declared::load_into(&mut catalog, &settings.commands)?;
    Ok((catalog, declared))
}

/// What a checked builder hands to [`Application::start`].
pub(super) struct Parts {
    pub settings: Settings,
    pub catalog: Catalog,
    /// The declared types in `catalog`, whose SQL functions are checked once the database is up.
    pub declared: Vec<crate::declared::Declaration>,
    pub migrations: Vec<AppMigrations>,
    pub after_commit: Option<CommitHook>,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
