//! Test harness: one sluice per test on port 0, with its own database and broker names.

use serde_json::{json, Value};
use sluice::app::{Application, Catalog, Roles};
use sluice::config::{Secret, Settings};
use sluice::handlers::{Handler, HandlerError, HandlerFuture, Outcome};
use sqlx::{Connection as _, PgConnection, PgPool};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default deadline for conditions a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running sluice and what a test needs to talk to it.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub key: String,
    pub settings: Settings,
    /// Whether dropping this app deletes its database and broker names (false for a second
    /// app sharing another's).
    pub owns_resources: bool,
    token: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Settings for a test: the test profile, a fresh database name and broker prefix.
pub fn test_settings() -> (Settings, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut s = Settings::load_from("test", &dir, false).expect("test settings");
    let id = Uuid::new_v4().simple().to_string();
    let db_name = format!("sluice_test_{id}");
    s.http.addr = "127.0.0.1:0".into();
    s.database.url = Secret::new(format!("postgres://postgres@127.0.0.1:5432/{db_name}"));
    s.database.max_connections = 10;
    s.broker.url = Secret::new(format!("{AMQP}?heartbeat=5"));
    s.broker.prefix = format!("t{}", &id[..12]);
    s.broker.reconnect_max_ms = 500;
    s.auth.bootstrap_key = Secret::new(format!("test-bootstrap-{id}"));
    s.auth.bootstrap_tenant = "acme".into();
    // Secrets are sealed in every test, as in production.
    s.secrets.keys = Secret::new(sluice::secrets::generate_key("t1"));
    (s, db_name)
}

/// The test-only command types, registered next to the shipped ones.
pub fn test_catalog(probe: &Probe) -> Catalog {
    let mut c = Catalog::builtin().expect("catalog");
    let any = r#"{"type": "object"}"#;
    c.register("test.flaky", any, Flaky(probe.clone())).expect("flaky");
    c.register("test.poison", any, Poison).expect("poison");
    c.register("test.panic", any, Panic(probe.clone())).expect("panic");
    c.register("test.slow", any, Slow(probe.clone())).expect("slow");
    c.register("test.bad_sql", any, BadSql).expect("bad sql");
    // Dead with an ordering key, it lets the key's later commands go on.
    c.register("test.poison_skip", any, Poison).expect("poison skip");
    let skip = sluice::handlers::RetryOverride {
        ordering: Some(sluice::handlers::OrderingPolicy::Skip),
        ..Default::default()
    };
    c.handlers.set_retry("test.poison_skip", skip);
    c
}

/// Starts sluice with the test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}, &Probe::default()).await
}

/// Starts sluice after `tweak` adjusted the settings; `probe` sees the test handlers' calls.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings), probe: &Probe) -> TestApp {
    let (mut settings, db_name) = test_settings();
    tweak(&mut settings);
    create_database(&db_name).await;
    spawn_on(settings, db_name, Roles::All, probe).await
}

/// Starts sluice with given settings on an existing (or to-be-migrated) database.
pub async fn spawn_on(settings: Settings, db_name: String, roles: Roles, probe: &Probe) -> TestApp {
    install_telemetry(&settings);
    let app = Application::build(settings.clone(), roles, test_catalog(probe)).await.expect("app builds");
    serve(app, settings, &db_name).await
}

/// Logs and the metrics recorder, which must be in place before an app is built.
pub fn install_telemetry(settings: &Settings) {
    sluice::telemetry::init_tracing(&settings.log);
    sluice::telemetry::metrics_handle();
}

/// Runs a built application (built after [`install_telemetry`]) as a test's app.
pub async fn serve(app: Application, settings: Settings, db_name: &str) -> TestApp {
    let base = format!("http://127.0.0.1:{}", app.port());
    let pool = PgPool::connect(&format!("postgres://postgres@127.0.0.1:5432/{db_name}")).await.expect("test pool");
    let token = app.shutdown_token();
    let broker = app.broker().clone();
    let worker_broker = app.worker_broker().cloned();
    let handle = tokio::spawn(app.run_until_stopped());
    // Wait for the first connection when the broker is reachable; tests of an unreachable
    // broker start with it cut and do not wait.
    let _ = tokio::time::timeout(Duration::from_secs(10), broker.wait_link(&token)).await;
    if let Some(w) = &worker_broker {
        let _ = tokio::time::timeout(Duration::from_secs(10), w.wait_link(&token)).await;
    }
    let key = settings.auth.bootstrap_key.expose().to_owned();
    TestApp {
        base,
        // Tests talk to their own app directly, whatever proxy the environment names.
        http: reqwest::Client::builder().no_proxy().build().expect("client"),
        pool,
        key,
        settings,
        owns_resources: true,
        token,
        handle: Some(handle),
    }
}

pub async fn create_database(name: &str) {
    let mut admin = PgConnection::connect(PG_ADMIN).await.expect("postgres is running on 127.0.0.1:5432");
    // Identifiers cannot be bound as parameters; the name is generated by the harness.
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.expect("create database");
}

impl TestApp {
    /// POST /v1/commands with the bootstrap (admin) key.
    pub async fn submit(&self, kind: &str, payload: Value) -> reqwest::Response {
        self.submit_as(&self.key, kind, payload, None).await
    }

    /// POST /v1/commands with a given key and optional idempotency key.
    pub async fn submit_as(&self, key: &str, kind: &str, payload: Value, idem: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/v1/commands", self.base))
            .bearer_auth(key)
            .json(&json!({"type": kind, "payload": payload}));
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        req.send().await.expect("request sent")
    }

    /// Submits and returns the accepted id; panics unless the answer is 202.
    pub async fn accept(&self, kind: &str, payload: Value) -> Uuid {
        let r = self.submit(kind, payload).await;
        let status = r.status();
        let body: Value = r.json().await.expect("json body");
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).expect("id")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await.expect("request sent")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("json body")
    }

    /// Waits until the command has reached a final or dead status, and returns it.
    pub async fn settled(&self, id: Uuid) -> Value {
        let path = format!("/v1/commands/{id}");
        eventually(DEADLINE, || async {
            let v = self.get_json(&path).await;
            matches!(v["status"].as_str(), Some("succeeded" | "rejected" | "dead")).then_some(v)
        })
        .await
    }

    /// The command's status once it equals `status`.
    pub async fn status_becomes(&self, id: Uuid, status: &str) -> Value {
        let path = format!("/v1/commands/{id}");
        eventually(DEADLINE, || async {
            let v = self.get_json(&path).await;
            (v["status"] == status).then_some(v)
        })
        .await
    }

    pub async fn open_account(&self, id: &str, cents: i64) {
        let cmd = self.accept("account.open", json!({"account_id": id, "initial_balance_cents": cents})).await;
        assert_eq!(self.settled(cmd).await["status"], "succeeded");
    }

    pub async fn balance(&self, id: &str) -> i64 {
        self.get_json(&format!("/v1/accounts/{id}")).await["balance_cents"].as_i64().expect("balance")
    }

    /// Rows in `dead_letters` for a command.
    pub async fn dead_letters_of(&self, id: Uuid) -> Vec<(String, String, i32)> {
        sqlx::query_as("SELECT error_kind, error, attempts FROM dead_letters WHERE command_id = $1")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .expect("query dead letters")
    }

    /// The value of a metric line (name with labels, as rendered), or 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        text.lines().filter_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse::<f64>().ok())).sum()
    }

    /// Waits until a metric reaches at least `value`. Metrics are per process, and nextest
    /// runs each test in its own process.
    pub async fn metric_reaches(&self, series: &str, value: f64) {
        eventually(DEADLINE, || async { (self.metric(series).await >= value).then_some(()) }).await;
    }

    /// Graceful shutdown; returns what `run_until_stopped` returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.token.cancel();
        match self.handle.take() {
            Some(h) => h.await.expect("app task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.token.cancel();
        if !self.owns_resources {
            return;
        }
        remove_test_resources(&self.settings);
    }
}

/// Deletes a test's broker names and database (the one `settings` names), blocking until done.
pub fn remove_test_resources(settings: &Settings) {
    sluice::testkit::remove_resources(settings);
}

pub use sluice::testkit::eventually;

/// `sluice serve` as a process of its own on `settings`' database and broker names, listening
/// on `port`, in the test profile; the caller adds its own variables and spawns it.
pub fn serve_command(settings: &Settings, port: u16) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("serve")
        .env("SLUICE_ENV", "test")
        .env("SLUICE__HTTP__ADDR", format!("127.0.0.1:{port}"))
        .env("SLUICE__DATABASE__URL", settings.database.url.expose())
        .env("SLUICE__BROKER__URL", settings.broker.url.expose())
        .env("SLUICE__BROKER__PREFIX", &settings.broker.prefix)
        .env("SLUICE_BOOTSTRAP_KEY", settings.auth.bootstrap_key.expose())
        .kill_on_drop(true);
    cmd
}

/// A fresh directory for `commands.dir`, with `{"type": "object"}` as `any.schema.json`.
pub fn commands_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-commands-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("commands dir");
    std::fs::write(dir.join("any.schema.json"), r#"{"type": "object"}"#).expect("schema");
    dir
}

/// Writes `<kind>.toml` declaring `kind` with `any.schema.json` and the handler `table`
/// (TOML text starting with `[http]` or `[sql]`).
pub fn declare(dir: &Path, kind: &str, table: &str) {
    let text = format!("type = \"{kind}\"\nschema = \"any.schema.json\"\n{table}\n");
    std::fs::write(dir.join(format!("{kind}.toml")), text).expect("declaration");
}

/// What the test handlers saw: call times per command, and how often to fail.
#[derive(Clone, Default)]
pub struct Probe {
    pub calls: Arc<Mutex<Vec<(Uuid, Instant)>>>,
}

impl Probe {
    pub fn calls_of(&self, id: Uuid) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().filter(|(c, _)| *c == id).map(|(_, t)| *t).collect()
    }
    fn record(&self, id: Uuid) -> usize {
        let mut calls = self.calls.lock().unwrap();
        calls.push((id, Instant::now()));
        calls.iter().filter(|(c, _)| *c == id).count()
    }
}

/// Fails transiently until called `payload.fail_times + 1` times, then succeeds.
pub struct Flaky(Probe);

impl Handler for Flaky {
    fn handle<'a>(&'a self, _tx: &'a mut PgConnection, cmd: &'a sluice::command::Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            let n = self.0.record(cmd.id);
            let fail_times = cmd.payload["fail_times"].as_u64().unwrap_or(0) as usize;
            if n <= fail_times {
                Err(HandlerError::Transient(format!("flaky failure {n} of {fail_times}")))
            } else {
                Ok(Outcome::Succeeded(json!({"calls": n})))
            }
        })
    }
}

/// Always fails permanently.
pub struct Poison;

impl Handler for Poison {
    fn handle<'a>(&'a self, _tx: &'a mut PgConnection, _cmd: &'a sluice::command::Envelope) -> HandlerFuture<'a> {
        Box::pin(async { Err(HandlerError::Permanent("this payload can never be handled".into())) })
    }
}

/// Runs SQL the database refuses, so the command fails with the database's own error text.
pub struct BadSql;

impl Handler for BadSql {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, _cmd: &'a sluice::command::Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            sqlx::query("SELECT * FROM no_such_table_for_sluice")
                .execute(tx)
                .await
                .map_err(|e| HandlerError::Store(sluice::store::StoreError::from(e)))?;
            Ok(Outcome::Succeeded(json!({})))
        })
    }
}

/// Panics, like a worker crashing on a message.
pub struct Panic(Probe);

impl Handler for Panic {
    fn handle<'a>(&'a self, _tx: &'a mut PgConnection, cmd: &'a sluice::command::Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            self.0.record(cmd.id);
            panic!("handler crashed on purpose");
        })
    }
}

/// Takes `payload.millis` and succeeds: work that is in flight during shutdown.
pub struct Slow(Probe);

impl Handler for Slow {
    fn handle<'a>(&'a self, _tx: &'a mut PgConnection, cmd: &'a sluice::command::Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            self.0.record(cmd.id);
            let ms = cmd.payload["millis"].as_u64().unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Outcome::Succeeded(json!({"slept_ms": ms})))
        })
    }
}
