//! Builds sluice's roles from settings and runs them until shutdown.

mod builder;
mod catalog;
mod declared;

pub use builder::{App, AppBuilder, BuildError};
pub use catalog::{Catalog, CatalogError};

use crate::api::{self, ApiState};
use crate::auth::Authenticator;
use crate::broker::{Broker, Topology};
use crate::config::Settings;
use crate::heartbeat::Reporter;
use crate::ingest::{Backpressure, Ingest};
use crate::store;
use crate::worker::{self, gate::Gate, retry::Policies, WorkerCtx};
use anyhow::Context;
use sqlx::PgPool;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// API and workers in one process.
    All,
    /// HTTP ingest and reads only.
    Api,
    /// Workers only (plus health and metrics over HTTP).
    Worker,
}

/// A built sluice process: its HTTP port already answers health checks; the workers start
/// with [`Application::run_until_stopped`].
pub struct Application {
    port: u16,
    server: tokio::task::JoinHandle<()>,
    worker: Option<Arc<WorkerCtx>>,
    broker: Broker,
    worker_broker: Option<Broker>,
    pool: PgPool,
    reporter: Arc<Reporter>,
    cancel: CancellationToken,
}

impl Application {
    /// Binds the HTTP port and serves `/healthz` and `/readyz` at once, starts the broker
    /// supervisors, then waits for the database (creating it if missing) and migrates it; the
    /// API proper answers 503 until that is done. Fails when the database cannot be made
    /// ready: missing and not creatable, refused, or unreachable past its start-up timeout.
    /// The types declared in `commands.dir` are added to `catalog`.
    pub async fn build(settings: Settings, roles: Roles, catalog: Catalog) -> anyhow::Result<Self> {
        let (catalog, declared) = builder::with_declared(&settings, catalog)?;
        let parts = builder::Parts { settings, catalog, declared, migrations: Vec::new(), after_commit: None };
        Self::start(parts, roles).await
    }

    async fn start(parts: builder::Parts, roles: Roles) -> anyhow::Result<Self> {
        let builder::Parts { settings, catalog, declared, migrations, after_commit } = parts;
        let cancel = CancellationToken::new();
        let pool = store::pool(&settings.database)?;
        let b = &settings.broker;
        let topology = Topology::new(&b.prefix, &settings.worker.retry_tiers_ms, b.delivery_limit)
            .with_partitions(settings.ordering.partitions);
        // The API and the workers each get their own connection, as RabbitMQ advises: when the
        // broker throttles (credit flow) or blocks (resource alarm) a publishing connection, it
        // stops reading from it, which must not hold up the workers' acks, and the workers'
        // stream of deliveries must not sit in front of the API's confirms on one socket.
        let start = |role| Broker::start(settings.broker.clone(), topology.clone(), role, cancel.clone());
        let (broker, worker_broker) = match roles {
            Roles::All => (start("api"), Some(start("worker"))),
            Roles::Api => (start("api"), None),
            Roles::Worker => (start("worker"), None),
        };
        let a = &settings.auth;
        let bootstrap = Some((a.bootstrap_key.expose(), a.bootstrap_tenant.as_str()));
        let auth = Authenticator::new(pool.clone(), bootstrap, a);
        let types = Arc::new(catalog.describe());
        let Catalog { schemas, handlers } = catalog;
        let role_names = match roles {
            Roles::All => "api+worker",
            Roles::Api => "api",
            Roles::Worker => "worker",
        };
        let reporter = Arc::new(Reporter::new(role_names, settings.worker.concurrency, settings.worker.prefetch));
        let startup = Arc::new(api::Startup::new());
        let sealer = Arc::new(crate::secrets::Sealer::from_spec(settings.secrets.keys.expose())?);
        if !sealer.is_configured() {
            tracing::warn!("SLUICE_SECRETS_KEYS is not set: webhook and callback secrets are stored in clear");
        }
        let schemas = Arc::new(schemas);
        let ingest = Ingest {
            pool: pool.clone(),
            broker: broker.clone(),
            schemas: schemas.clone(),
            limits: Arc::new(settings.limits.clone()),
            batches: Arc::new(settings.batches.clone()),
            webhooks: Arc::new(settings.webhooks.clone()),
            scheduling: Arc::new(settings.scheduling.clone()),
            backpressure: Arc::new(Backpressure::new(&settings.limits)),
            sealer: sealer.clone(),
            reporter: reporter.clone(),
        };
        let state = ApiState::new(api::Shared {
            pool: pool.clone(),
            broker: broker.clone(),
            worker_broker: worker_broker.clone(),
            schemas,
            auth: Arc::new(auth),
            reporter: reporter.clone(),
            limiter: Arc::new(api::limits::RateLimiter::new(settings.limits.clone())),
            ingest: ingest.clone(),
            startup: startup.clone(),
            webhook_gate: Arc::new(api::WebhookGate::new(&settings.webhooks, sealer.clone())),
            sealer: sealer.clone(),
            retention: Arc::new(settings.retention.clone()),
        });
        let serves_api = matches!(roles, Roles::All | Roles::Api);
        let router = if serves_api {
            let pages = crate::dashboard::router(crate::dashboard::DashboardState {
                pool: pool.clone(),
                broker: broker.clone(),
                ops: state.ops(),
                auth: state.auth.clone(),
                dashboard: Arc::new(settings.dashboard.clone()),
                limits: state.ingest.limits.clone(),
                retention: state.retention.clone(),
                schemas: state.schemas.clone(),
                types: types.clone(),
            });
            api::router(state.clone(), &settings.http, pages)
        } else {
            api::ops_only(state.clone(), &settings.http)
        };
        let listener = TcpListener::bind(&settings.http.addr)
            .await
            .with_context(|| format!("cannot listen on http.addr {}", settings.http.addr))?;
        let port = listener.local_addr()?.port();
        let server = {
            let (http, stop) = (settings.http.clone(), cancel.clone());
            tokio::spawn(async move { api::server::serve(listener, router, &http, stop).await })
        };
        let progress = |what| startup.waiting_for(what);
        let ready = match store::bootstrap::prepare(&pool, &settings.database, &migrations, &cancel, &progress).await {
            Ok(()) => check_declared(&pool, &declared).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = ready {
            cancel.cancel();
            let _ = server.await;
            return Err(e);
        }
        startup.finished();
        if serves_api {
            let (bp, broker, pool, cancel) =
                (state.ingest.backpressure.clone(), broker.clone(), pool.clone(), cancel.clone());
            tokio::spawn(async move { bp.run(broker, pool, cancel).await });
        }
        let worker = matches!(roles, Roles::All | Roles::Worker).then(|| {
            Arc::new(WorkerCtx {
                pool: pool.clone(),
                broker: worker_broker.clone().unwrap_or_else(|| broker.clone()),
                policies: Policies::new(&settings.worker, &handlers),
                gates: gates(&handlers, &reporter),
                remote_tasks: Default::default(),
                handlers,
                settings: settings.worker.clone(),
                reporter: reporter.clone(),
                batch_settings: settings.batches.clone(),
                touched: Default::default(),
                sealer: sealer.clone(),
                retention: settings.retention.clone(),
                scheduling: settings.scheduling.clone(),
                ordering: settings.ordering.clone(),
                after_commit: after_commit.clone(),
            })
        });
        Ok(Self { port, server, worker, broker, worker_broker, pool, reporter, cancel })
    }

    /// The bound HTTP port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling this token shuts the process down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The broker handle the API publishes on (for readiness waits in tests and tools).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The workers' own broker handle, when this process runs both roles.
    pub fn worker_broker(&self) -> Option<&Broker> {
        self.worker_broker.as_ref()
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves HTTP and runs the workers until the shutdown token fires, then drains: stop
    /// accepting, stop consuming, finish and ack what is in flight, close connections.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self { port: _, server, worker, broker, worker_broker, pool, reporter, cancel } = self;
        let beat = {
            let (pool, cancel) = (pool.clone(), cancel.clone());
            tokio::spawn(async move { reporter.run(pool, cancel).await })
        };
        // Spawned, not joined in place: the caller's task is often `main`'s block_on thread,
        // which is not one of the runtime's workers, and everything would funnel through it.
        let workers = worker.map(|ctx| tokio::spawn(worker::run(ctx, cancel.clone())));
        if let Some(workers) = workers {
            workers.await?;
        }
        server.await?;
        let _ = beat.await;
        broker.close().await;
        if let Some(b) = worker_broker {
            b.close().await;
        }
        pool.close().await;
        Ok(())
    }
}

/// Refuses to start while a declared SQL type's function is missing or has another signature.
async fn check_declared(pool: &PgPool, declared: &[crate::declared::Declaration]) -> anyhow::Result<()> {
    use crate::declared::HandlerSpec;
    let functions: Vec<_> = declared
        .iter()
        .filter_map(|d| match &d.handler {
            HandlerSpec::Sql(spec) => Some((d.file.as_str(), spec)),
            HandlerSpec::Http(_) => None,
        })
        .collect();
    let problems = crate::declared::check_functions(pool, &functions).await?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(crate::declared::Problems(problems).into())
    }
}

/// A gate for each remote type: its in-flight bound and circuit in this process.
fn gates(
    handlers: &crate::handlers::Handlers,
    reporter: &Arc<Reporter>,
) -> std::collections::HashMap<String, Arc<Gate>> {
    handlers
        .kinds()
        .into_iter()
        .filter_map(|kind| {
            let remote = handlers.get(kind)?.remote()?;
            Some((kind.to_owned(), Arc::new(Gate::new(kind, remote.limits(), reporter.clone()))))
        })
        .collect()
}
