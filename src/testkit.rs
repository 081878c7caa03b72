//! A test kit for applications built on sluice: the whole system (API and workers) on port 0
//! against the local RabbitMQ and Postgres, with a database and broker names of its own that
//! are removed when the test ends, pass or fail.
//!
//! ```no_run
//! # async fn t() {
//! let app = sluice::App::builder(sluice::testkit::isolated_settings()).builtin_domain();
//! let running = sluice::testkit::TestSluice::start(app).await;
//! let id = running.accept("event.record", serde_json::json!({"name": "x", "data": {}})).await;
//! assert_eq!(running.settled(id).await["status"], "succeeded");
//! # }
//! ```

use crate::app::{AppBuilder, Roles};
use crate::config::{Secret, Settings};
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};
use sqlx::{Connection as _, PgConnection, PgPool};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The maintenance database of the local Postgres (`SLUICE_TEST_PG`, without a database name,
/// overrides the server).
fn pg_server() -> String {
    std::env::var("SLUICE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The local RabbitMQ (`SLUICE_TEST_AMQP` overrides it).
fn amqp() -> String {
    std::env::var("SLUICE_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The broker addresses as `SLUICE__BROKER__URLS` takes them, for a child process.
pub fn joined_urls(b: &crate::config::BrokerSettings) -> String {
    b.addresses().iter().map(crate::config::Secret::expose).collect::<Vec<_>>().join(",")
}

/// How long [`TestSluice`]'s waits last before they fail the test.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The tenant of [`TestSluice::key`].
pub const TENANT: &str = "acme";

/// Settings for one test: the built-in defaults, port 0, a database and broker prefix no other
/// test uses, a fresh operator key for tenant [`TENANT`], sealed secrets, and retries short
/// enough for a test to watch.
pub fn isolated_settings() -> Settings {
    let mut s = Settings::load_from("test", std::path::Path::new("/nonexistent"), false)
        .unwrap_or_else(|e| panic!("the built-in settings load: {e}"));
    let id = Uuid::new_v4().simple().to_string();
    s.http.addr = "127.0.0.1:0".into();
    s.database.url = Secret::new(format!("{}/sluice_test_{id}", pg_server()));
    s.database.max_connections = 10;
    s.broker.url = Secret::new(format!("{}?heartbeat=5", amqp()));
    s.broker.prefix = format!("t{}", &id[..12]);
    s.broker.reconnect_max_ms = 500;
    s.auth.bootstrap_key = Secret::new(format!("test-bootstrap-{id}"));
    s.auth.bootstrap_tenant = TENANT.into();
    s.secrets.keys = Secret::new(crate::secrets::generate_key("t1"));
    s.worker.retry_tiers_ms = vec![100, 200, 400, 800];
    s.worker.retry_base_ms = 100;
    s.worker.retry_jitter = 0.0;
    s.worker.max_attempts = 4;
    s.log.level = "warn".into();
    s
}

/// A running sluice for one test.
pub struct TestSluice {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// An operator key of tenant [`TENANT`].
    pub key: String,
    /// A client that talks to `base` directly, whatever proxy the environment names.
    pub http: reqwest::Client,
    /// The test's own database.
    pub pool: PgPool,
    settings: Settings,
    token: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestSluice {
    /// Builds `app` (whose settings came from [`isolated_settings`]) with every role, runs it,
    /// and waits until its broker connections are up.
    pub async fn start(app: AppBuilder) -> Self {
        crate::telemetry::init_tracing(&app.settings().log);
        crate::telemetry::metrics_handle();
        let settings = app.settings().clone();
        let built = app.build(Roles::All).await.unwrap_or_else(|e| panic!("sluice builds: {e:#}"));
        let base = format!("http://127.0.0.1:{}", built.port());
        let token = built.shutdown_token();
        let links = [Some(built.broker().clone()), built.worker_broker().cloned()];
        let pool = built.pool().clone();
        let handle = tokio::spawn(built.run_until_stopped());
        for broker in links.iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(10), broker.wait_link(&token)).await;
        }
        Self {
            base,
            key: settings.auth.bootstrap_key.expose().to_owned(),
            http: reqwest::Client::builder().no_proxy().build().unwrap_or_default(),
            pool,
            settings,
            token,
            handle: Some(handle),
        }
    }

    /// POST /v1/commands with [`TestSluice::key`] and, if given, an idempotency key.
    pub async fn submit(&self, kind: &str, payload: Value, idempotency_key: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/v1/commands", self.base))
            .bearer_auth(&self.key)
            .json(&json!({"type": kind, "payload": payload}));
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        req.send().await.unwrap_or_else(|e| panic!("POST /v1/commands: {e}"))
    }

    /// Submits and returns the accepted command's id; panics unless the answer is 202.
    pub async fn accept(&self, kind: &str, payload: Value) -> Uuid {
        let r = self.submit(kind, payload, None).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or_default();
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).unwrap_or_else(|| panic!("no id in {body}"))
    }

    /// GET `path` with [`TestSluice::key`], as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await;
        let r = r.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        r.json().await.unwrap_or_else(|e| panic!("GET {path} answered no JSON: {e}"))
    }

    /// The command once it is final (succeeded, rejected) or dead.
    pub async fn settled(&self, id: Uuid) -> Value {
        let path = format!("/v1/commands/{id}");
        eventually(DEADLINE, || async {
            let v = self.get_json(&path).await;
            matches!(v["status"].as_str(), Some("succeeded" | "rejected" | "dead")).then_some(v)
        })
        .await
    }

    /// The sum of the `/metrics` series named `name` whose labels include every one of
    /// `labels` (`key="value"`), or 0.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let r = self.http.get(format!("{}/metrics", self.base)).send().await;
        let text = match r {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    /// Stops it gracefully and returns what it returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.token.cancel();
        match self.handle.take() {
            Some(h) => h.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestSluice {
    fn drop(&mut self) {
        self.token.cancel();
        remove_resources(&self.settings);
    }
}

/// Deletes the broker names and the database `settings` name, blocking until done. Drop
/// cannot await, and this also runs when a test panics, so it runs on a thread with its own
/// runtime.
pub fn remove_resources(settings: &Settings) {
    let s = settings;
    let queues = crate::broker::Topology::new(&s.broker.prefix, &s.worker.retry_tiers_ms, s.broker.delivery_limit)
        .with_partitions(s.ordering.partitions);
    // The test's own addresses may be proxies it cut; the shared broker comes last.
    let urls: Vec<String> =
        s.broker.addresses().iter().map(|u| u.expose().to_owned()).chain(std::iter::once(amqp())).collect();
    let db = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(s.database.url.expose())
        .ok()
        .and_then(|o| o.get_database().map(str::to_owned));
    let cleanup = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            // The first address that answers (a cluster may have lost a node).
            for url in &urls {
                if let Ok(conn) = Connection::connect(url, ConnectionProperties::default()).await {
                    if let Ok(ch) = conn.create_channel().await {
                        queues.delete(&ch).await;
                    }
                    let _ = conn.close(200, "test done".into()).await;
                    break;
                }
            }
            let (Some(db), Ok(mut admin)) = (db, PgConnection::connect(&format!("{}/postgres", pg_server())).await)
            else {
                return;
            };
            let Ok(quoted) =
                sqlx::query_scalar::<_, String>("SELECT quote_ident($1)").bind(&db).fetch_one(&mut admin).await
            else {
                return;
            };
            // Identifiers cannot be bound; the server quoted the name.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")).execute(&mut admin).await;
        });
    });
    let _ = cleanup.join();
}

/// Polls `probe` until it yields a value, or panics once `deadline` has passed.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "condition not met within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
