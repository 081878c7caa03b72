//! Commands for later: `run_at` and `delay_ms` hold a command in Postgres until its time, it
//! reads `scheduled` until then, survives a restart, and runs once however many dispatchers run.

use crate::helpers::{create_database, eventually, spawn_app, spawn_on, test_settings, Probe, TestApp, DEADLINE};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sluice::app::Roles;
use sluice::auth::create_key;
use uuid::Uuid;

/// POSTs `body` to `path` with `key`; the status and the JSON answer.
pub async fn post(app: &TestApp, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = app.http.post(format!("{}{path}", app.base)).bearer_auth(key).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// POSTs the command `body` with the app's key under `idempotency_key`.
async fn submit_keyed(app: &TestApp, idempotency_key: &str, body: &Value) -> reqwest::Response {
    let url = format!("{}/v1/commands", app.base);
    let r = app.http.post(url).bearer_auth(&app.key).header("Idempotency-Key", idempotency_key).json(body);
    r.send().await.unwrap()
}

fn event(name: &str) -> Value {
    json!({"type": "event.record", "payload": {"name": name, "data": {}}})
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

fn id_of(v: &Value) -> Uuid {
    v["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no id in {v}"))
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not a time: {v}"))
}

async fn events_named(app: &TestApp, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE name = $1").bind(name).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_command_reads_scheduled_with_its_run_at_then_runs_no_earlier() {
    let app = spawn_app().await;
    let (status, body) = post(&app, &app.key, "/v1/commands", &with(event("later"), "delay_ms", json!(1500))).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "scheduled");
    let id = id_of(&body);
    let run_at = time(&body["run_at"]);
    let seen = app.get_json(&format!("/v1/commands/{id}")).await;
    assert_eq!((seen["status"].as_str(), seen["type"].as_str()), (Some("scheduled"), Some("event.record")), "{seen}");
    assert_eq!(time(&seen["run_at"]), run_at);

    let done = app.settled(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(time(&done["completed_at"]) >= run_at, "ran before its time: {done}");
    assert_eq!(events_named(&app, "later").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_at_that_has_passed_is_published_at_once() {
    let app = spawn_app().await;
    let body = with(event("past"), "run_at", json!("2020-01-01T00:00:00Z"));
    let (status, accepted) = post(&app, &app.key, "/v1/commands", &body).await;
    assert_eq!((status, accepted["status"].as_str()), (202, Some("accepted")), "{accepted}");
    assert_eq!(app.settled(id_of(&accepted)).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_timing_fields_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let far = (Utc::now() + chrono::Duration::days(31)).to_rfc3339();
    let cases = [
        (with(event("x"), "run_at", json!("tomorrow")), "/run_at"),
        (with(event("x"), "run_at", json!(5)), "/run_at"),
        (with(event("x"), "delay_ms", json!(-1)), "/delay_ms"),
        (with(event("x"), "delay_ms", json!(1.5)), "/delay_ms"),
        (with(with(event("x"), "delay_ms", json!(10)), "run_at", json!("2030-01-01T00:00:00Z")), "/delay_ms"),
        (with(event("x"), "run_at", json!(far)), "/run_at"),
        (with(event("x"), "delay_ms", json!(31u64 * 86_400_000)), "/delay_ms"),
    ];
    for (body, path) in cases {
        let (status, answer) = post(&app, &app.key, "/v1/commands", &body).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert_eq!(answer["error"]["violations"][0]["path"], path, "{body} -> {answer}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM scheduled_commands").fetch_one(&app.pool).await.unwrap();
    assert_eq!(n, 0, "nothing refused was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_scheduled_submission_with_the_same_key_is_one_command() {
    let app = spawn_app().await;
    let body = with(event("once"), "delay_ms", json!(800));
    let send = || async {
        let r = submit_keyed(&app, "sched-1", &body).await;
        assert_eq!(r.status(), 202);
        id_of(&r.json().await.unwrap())
    };
    let (first, second) = (send().await, send().await);
    assert_eq!(first, second);
    assert_eq!(app.settled(first).await["status"], "succeeded");
    assert_eq!(events_named(&app, "once").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_command_survives_a_restart_of_sluice() {
    let (settings, db) = test_settings();
    create_database(&db).await;
    let mut first = spawn_on(settings.clone(), db.clone(), Roles::All, &Probe::default()).await;
    first.owns_resources = false;
    let (status, body) =
        post(&first, &first.key, "/v1/commands", &with(event("restart"), "delay_ms", json!(1500))).await;
    assert_eq!(status, 202, "{body}");
    first.stop().await.unwrap();

    let second = spawn_on(settings, db, Roles::All, &Probe::default()).await;
    assert_eq!(second.settled(id_of(&body)).await["status"], "succeeded");
    assert_eq!(events_named(&second, "restart").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_dispatch_each_scheduled_command_once() {
    let (settings, db) = test_settings();
    create_database(&db).await;
    let api = spawn_on(settings.clone(), db.clone(), Roles::All, &Probe::default()).await;
    let mut other = spawn_on(settings, db, Roles::Worker, &Probe::default()).await;
    other.owns_resources = false;
    let mut items = Vec::new();
    for i in 0..200 {
        items.push(json!({"type": "event.record", "payload": {"name": "twice", "data": {"i": i}}, "delay_ms": 1000}));
    }
    let (status, batch) = post(&api, &api.key, "/v1/batches", &json!({"commands": items})).await;
    assert_eq!((status, batch["accepted"].as_u64()), (202, Some(200)), "{batch}");
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());
    let done = eventually(DEADLINE, || async {
        let v = api.get_json(&path).await;
        v["finished_at"].is_string().then_some(v)
    })
    .await;
    assert_eq!(done["succeeded"], 200, "{done}");
    assert_eq!(events_named(&api, "twice").await, 200);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM scheduled_commands").fetch_one(&api.pool).await.unwrap();
    assert_eq!(left, 0);
    other.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_key_cannot_read_a_scheduled_command() {
    let app = spawn_app().await;
    let other = create_key(&app.pool, "test", "globex", &["admin".into()]).await.unwrap().key;
    let (_, body) = post(&app, &app.key, "/v1/commands", &with(event("private"), "delay_ms", json!(60_000))).await;
    let id = id_of(&body);
    let r = app.http.get(format!("{}/v1/commands/{id}", app.base)).bearer_auth(&other).send().await.unwrap();
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["status"], "pending", "another tenant learns nothing: {seen}");
    assert!(seen.get("run_at").is_none() && seen.get("type").is_none(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_write_cut_off_mid_statement_is_outcome_unknown_and_a_retry_schedules_it_once() {
    let app = spawn_app().await;
    let body = with(event("cut"), "delay_ms", json!(3_600_000));
    let send = || async {
        let r = submit_keyed(&app, "cut-mid-write", &body).await;
        let retry_after = r.headers().contains_key("retry-after");
        (r.status().as_u16(), retry_after, r.json::<Value>().await.unwrap())
    };
    // Inserts into `scheduled_commands` wait behind this lock, so the API's statement is in the
    // database, unanswered, when its connection is killed: the crash of a primary mid-commit.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE scheduled_commands IN SHARE MODE").execute(&mut *lock).await.unwrap();
    let (answer, ()) = tokio::join!(send(), async {
        let killed: bool = eventually(DEADLINE, || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' \
                 AND query LIKE 'INSERT INTO scheduled_commands%'",
            )
            .fetch_optional(&app.pool)
            .await
            .unwrap()
        })
        .await;
        assert!(killed);
    });
    lock.rollback().await.unwrap();
    let (status, retry_after, body) = answer;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("outcome_unknown")), "{body}");
    assert!(retry_after, "{body}");

    let (status, _, body) = send().await;
    assert_eq!((status, body["status"].as_str()), (202, Some("scheduled")), "{body}");
    let (status, _, again) = send().await;
    assert_eq!((status, again["id"].as_str()), (202, body["id"].as_str()), "{again}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM scheduled_commands").fetch_one(&app.pool).await.unwrap();
    assert_eq!(rows, 1, "scheduled once however often it was sent");
}
