//! A first run on a machine where sluice's database has never existed, and start-ups that
//! cannot succeed: they end with one line and a non-zero exit instead of retrying for ever.

use crate::helpers::{eventually, remove_test_resources, spawn_on, test_settings, Probe, DEADLINE, PG_ADMIN};
use serde_json::Value;
use sluice::app::{Application, Catalog, Roles};
use sluice::config::Secret;
use sluice_harness::proxy::Proxy;
use sqlx::{Connection, PgConnection};

async fn database_exists(name: &str) -> bool {
    let mut admin = PgConnection::connect(PG_ADMIN).await.expect("postgres");
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .expect("query")
}

/// Runs the binary with `env` and a deadline; returns (exit success, stderr).
async fn run_sluice(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args).env("SLUICE__LOG__LEVEL", "error").env("SLUICE__HTTP__ADDR", "127.0.0.1:0").kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(DEADLINE, cmd.output()).await.expect("sluice exited on its own").expect("runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_creates_its_database_when_it_does_not_exist_and_becomes_ready() {
    let (settings, db_name) = test_settings();
    assert!(!database_exists(&db_name).await);
    let app = spawn_on(settings, db_name.clone(), Roles::All, &Probe::default()).await;
    assert!(database_exists(&db_name).await, "the database was created");
    eventually(DEADLINE, || async { (app.get("/readyz").await.status() == 200).then_some(()) }).await;
    let id = app.accept("event.record", serde_json::json!({"name": "first", "data": 1})).await;
    assert_eq!(app.settled(id).await["status"], "succeeded", "migrated and working");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_why_while_the_database_is_unreachable_and_the_api_waits_for_it() {
    let proxy = Proxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    proxy.cut();
    let (mut settings, db_name) = test_settings();
    settings.database.url = Secret::new(format!("postgres://postgres@127.0.0.1:{}/{db_name}", proxy.port));
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    settings.http.addr = format!("127.0.0.1:{port}");
    let build_settings = settings.clone();
    let building = tokio::spawn(Application::build(build_settings, Roles::All, Catalog::builtin().expect("catalog")));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let ready: Value = eventually(DEADLINE, || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.ok()?;
        (body["reasons"].as_array()?.iter().any(|r| r == "waiting for the database server")).then_some(body)
    })
    .await;
    assert_eq!(ready["status"], "unavailable", "{ready}");
    let r = http
        .post(format!("{base}/v1/commands"))
        .bearer_auth(settings.auth.bootstrap_key.expose())
        .json(&serde_json::json!({"type": "event.record", "payload": {"name": "early", "data": 1}}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 503, "the API waits for start-up");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(http.get(format!("{base}/healthz")).send().await.expect("answered").status(), 200, "alive meanwhile");

    proxy.restore();
    let app = tokio::time::timeout(DEADLINE, building).await.expect("start-up finished").expect("task").expect("built");
    let token = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    eventually(DEADLINE, || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    token.cancel();
    let _ = running.await;
    remove_test_resources(&settings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_server_that_never_answers_ends_start_up_after_its_timeout() {
    let proxy = Proxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    proxy.cut();
    let (mut settings, db_name) = test_settings();
    settings.database.url = Secret::new(format!("postgres://postgres@127.0.0.1:{}/{db_name}", proxy.port));
    settings.database.startup_timeout_secs = 1;
    let building = Application::build(settings.clone(), Roles::All, Catalog::builtin().unwrap());
    let built = tokio::time::timeout(DEADLINE, building).await.expect("start-up gave up by itself");
    // Its broker connection declared the topology before the database was waited for.
    remove_test_resources(&settings);
    let err = format!("{:#}", built.err().expect("start-up failed"));
    assert!(err.contains("did not answer within 1 s"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_created_ends_start_up_with_one_line_and_a_failing_exit() {
    let (settings, db_name) = test_settings();
    let role = format!("nocreate_{}", &db_name[12..24]);
    let mut admin = PgConnection::connect(PG_ADMIN).await.expect("postgres");
    // Identifiers cannot be bound; the name is generated here.
    sqlx::query(&format!("CREATE ROLE {role} LOGIN NOCREATEDB")).execute(&mut admin).await.expect("role");
    let url = format!("postgres://{role}@127.0.0.1:5432/{db_name}");
    let (ok, stderr) = run_sluice(
        &["serve"],
        &[
            ("SLUICE__DATABASE__URL", url),
            ("SLUICE__BROKER__PREFIX", settings.broker.prefix.clone()),
            ("SLUICE_BOOTSTRAP_KEY", "k".repeat(40)),
        ],
    )
    .await;
    let _ = sqlx::query(&format!("DROP ROLE {role}")).execute(&mut admin).await;
    remove_test_resources(&settings);
    assert!(!ok, "exit status says it failed");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains("does not exist and could not be created"), "{stderr}");
    assert!(!database_exists(&db_name).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_to_start_with_a_bootstrap_key_under_32_characters() {
    let (ok, stderr) = run_sluice(
        &["serve"],
        &[("SLUICE_ENV", "production".into()), ("SLUICE_BOOTSTRAP_KEY", "dev-admin-key".into())],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("at least 32 characters"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let app = crate::helpers::spawn_app().await;
    for path in ["/healthz", "/v1/commands/00000000-0000-0000-0000-000000000000", "/dashboard/login", "/nowhere"] {
        let r = app.get(path).await;
        let h = r.headers();
        assert_eq!(h.get("x-content-type-options").map(|v| v.as_bytes()), Some(&b"nosniff"[..]), "{path}");
        // The dashboard sets its own (same-origin, for its forms); everything else gets none.
        let referrer = h.get("referrer-policy").map(|v| v.to_str().unwrap().to_owned());
        assert!(matches!(referrer.as_deref(), Some("no-referrer" | "same-origin")), "{path}: {referrer:?}");
        assert!(h.get("strict-transport-security").is_none(), "no HSTS over plain HTTP in development");
    }
    let https = crate::helpers::spawn_app_with(|s| s.http.hsts = true, &Probe::default()).await;
    let r = https.get("/healthz").await;
    let hsts = r.headers().get("strict-transport-security").expect("HSTS where configured");
    assert!(hsts.to_str().unwrap().starts_with("max-age="), "{hsts:?}");
}
