//! Recurring schedules: created, read, replaced and deleted per tenant; one command per tick
//! however many worker processes run; catch-up after an outage; refusals that name the field.

use crate::helpers::{create_database, eventually, spawn_app, spawn_on, test_settings, Probe, TestApp, DEADLINE};
use reqwest::Method;
use serde_json::{json, Value};
use sluice::app::Roles;
use sluice::auth::create_key;

async fn call(app: &TestApp, key: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.http.request(method, format!("{}{path}", app.base)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn every_second(name: &str) -> Value {
    json!({"cron": "* * * * * *", "command": {"type": "event.record", "payload": {"name": name, "data": {}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_created_read_listed_replaced_and_deleted_and_each_change_is_audited() {
    let app = spawn_app().await;
    let body = json!({"cron": "*/5 * * * *", "timezone": "Europe/Paris", "catch_up": "once",
                      "command": {"type": "event.record", "payload": {"name": "tick", "data": {}}, "priority": "low"}});
    let (status, created) = call(&app, &app.key, Method::PUT, "/v1/schedules/reports", Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!((created["cron"].as_str(), created["catch_up"].as_str()), (Some("*/5 * * * *"), Some("once")));
    assert_eq!(created["command"]["priority"], "low");
    let upcoming = created["upcoming"].as_array().unwrap();
    assert_eq!(upcoming.len(), 5, "{created}");
    assert_eq!(upcoming[0], created["next_fire_at"]);
    let (status, read) = call(&app, &app.key, Method::GET, "/v1/schedules/reports", None).await;
    assert_eq!((status, read["timezone"].as_str()), (200, Some("Europe/Paris")));
    let mut paused = body.clone();
    paused["paused"] = json!(true);
    let (status, replaced) = call(&app, &app.key, Method::PUT, "/v1/schedules/reports", Some(paused)).await;
    assert_eq!((status, replaced["paused"].as_bool()), (200, Some(true)), "{replaced}");
    assert!(replaced["next_fire_at"].is_null() && replaced["upcoming"] == json!([]), "{replaced}");
    let (_, list) = call(&app, &app.key, Method::GET, "/v1/schedules", None).await;
    assert_eq!(list["schedules"].as_array().map(Vec::len), Some(1), "{list}");
    let (status, _) = call(&app, &app.key, Method::DELETE, "/v1/schedules/reports", None).await;
    assert_eq!(status, 200);
    let (status, gone) = call(&app, &app.key, Method::GET, "/v1/schedules/reports", None).await;
    assert_eq!(status, 404, "{gone}");
    let audit = app.get_json("/v1/audit").await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["schedule.delete", "schedule.put", "schedule.put"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let event = json!({"type": "event.record", "payload": {"name": "x", "data": {}}});
    let cases = [
        (json!({"cron": "* * *", "command": event}), "/cron"),
        (json!({"cron": "99 * * * *", "command": event}), "/cron"),
        (json!({"cron": "* * * * *", "timezone": "Moon/Base", "command": event}), "/timezone"),
        (
            json!({"cron": "* * * * *", "command": {"type": "event.record", "payload": {"data": {}}}}),
            "/command/payload",
        ),
        (json!({"cron": "* * * * *", "command": {"type": "no.such", "payload": {}}}), "/command/type"),
        (
            json!({"cron": "* * * * *", "command": {"type": "event.record", "payload": {"name": "x", "data": {}},
                                                  "delay_ms": 5}}),
            "/command",
        ),
    ];
    for (body, path) in cases {
        let (status, answer) = call(&app, &app.key, Method::PUT, "/v1/schedules/bad", Some(body.clone())).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        let got = answer["error"]["violations"][0]["path"].as_str().unwrap_or_default().to_owned();
        assert!(got.starts_with(path), "{body} -> {answer}");
    }
    let (status, answer) = call(
        &app,
        &app.key,
        Method::PUT,
        "/v1/schedules/bad",
        Some(json!({"cron": "* * * * *", "command": event, "x": 1})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = call(&app, &app.key, Method::PUT, "/v1/schedules/-bad", Some(every_second("x"))).await;
    assert_eq!(status, 400, "{answer}");
    let (_, list) = call(&app, &app.key, Method::GET, "/v1/schedules", None).await;
    assert_eq!(list["schedules"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_worker_processes_each_tick_submits_exactly_one_command() {
    let (settings, db) = test_settings();
    create_database(&db).await;
    let app = spawn_on(settings.clone(), db.clone(), Roles::All, &Probe::default()).await;
    let mut other = spawn_on(settings, db, Roles::Worker, &Probe::default()).await;
    other.owns_resources = false;
    let (status, body) = call(&app, &app.key, Method::PUT, "/v1/schedules/heartbeat", Some(every_second("beat"))).await;
    assert_eq!(status, 201, "{body}");
    eventually(DEADLINE, || async {
        let (_, s) = call(&app, &app.key, Method::GET, "/v1/schedules/heartbeat", None).await;
        (s["recent"].as_array().map_or(0, Vec::len) >= 5).then_some(())
    })
    .await;
    let mut stop = every_second("beat");
    stop["paused"] = json!(true);
    call(&app, &app.key, Method::PUT, "/v1/schedules/heartbeat", Some(stop)).await;
    let ticks: Vec<(chrono::DateTime<chrono::Utc>, uuid::Uuid)> =
        sqlx::query_as("SELECT tick, command_id FROM schedule_fires ORDER BY tick").fetch_all(&app.pool).await.unwrap();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, chrono::Duration::seconds(1), "one fire per tick, none skipped: {ticks:?}");
    }
    for (_, id) in &ticks {
        assert_eq!(app.settled(*id).await["status"], "succeeded");
    }
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE name = 'beat'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(events as usize, ticks.len(), "one command applied per tick");
    other.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_catch_up_once_fires_the_latest_missed_tick_and_skip_fires_none_of_them() {
    let (settings, db) = test_settings();
    create_database(&db).await;
    let api = spawn_on(settings.clone(), db.clone(), Roles::Api, &Probe::default()).await;
    for (name, catch_up) in [("once", "once"), ("skip", "skip")] {
        let body = json!({"cron": "* * * * *", "catch_up": catch_up,
                          "command": {"type": "event.record", "payload": {"name": name, "data": {}}}});
        assert_eq!(call(&api, &api.key, Method::PUT, &format!("/v1/schedules/{name}"), Some(body)).await.0, 201);
    }
    // No worker ran for the last ten minutes.
    let outage_end: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "UPDATE schedules SET next_fire_at = date_trunc('minute', now()) - interval '10 minutes'
         RETURNING date_trunc('minute', now())",
    )
    .fetch_one(&api.pool)
    .await
    .unwrap();
    let mut worker = spawn_on(settings, db, Roles::Worker, &Probe::default()).await;
    worker.owns_resources = false;
    let moved_on = || async {
        let future: i64 = sqlx::query_scalar("SELECT count(*) FROM schedules WHERE next_fire_at > now()")
            .fetch_one(&api.pool)
            .await
            .unwrap();
        (future == 2).then_some(())
    };
    eventually(DEADLINE, moved_on).await;
    let fires: Vec<(String, i32, chrono::DateTime<chrono::Utc>, uuid::Uuid)> =
        sqlx::query_as("SELECT name, missed, tick, command_id FROM schedule_fires ORDER BY name, tick")
            .fetch_all(&api.pool)
            .await
            .unwrap();
    // Of the ten ticks before the outage's end, once fires the latest in their stead, once; skip
    // fires none of them. The current minute's tick is within the 60 s grace, so it fires for
    // both as on time (missed 0), and so does the next minute's if the test runs across one.
    let catch_ups: Vec<_> = fires.iter().filter(|f| f.1 > 0).collect();
    assert_eq!(catch_ups.len(), 1, "{fires:?}");
    let (name, missed, caught_up_tick, id) = catch_ups[0];
    assert_eq!(name, "once", "{fires:?}");
    assert!(*missed >= 9, "it stood for the missed ticks: {fires:?}");
    assert!(*caught_up_tick < outage_end + chrono::Duration::minutes(1), "{fires:?}");
    assert_eq!(api.settled(*id).await["status"], "succeeded");
    for (name, _, tick, _) in fires.iter().filter(|f| f.1 == 0) {
        assert!(*tick >= outage_end, "{name} fired a missed tick as on time: {fires:?}");
        if name == "once" {
            assert!(tick > caught_up_tick, "once fired a tick twice: {fires:?}");
        }
    }
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_key_cannot_read_change_or_delete_a_schedule() {
    let app = spawn_app().await;
    let other = create_key(&app.pool, "test", "globex", &["admin".into()]).await.unwrap().key;
    let mut body = every_second("mine");
    body["paused"] = json!(true);
    assert_eq!(call(&app, &app.key, Method::PUT, "/v1/schedules/mine", Some(body)).await.0, 201);
    assert_eq!(call(&app, &other, Method::GET, "/v1/schedules/mine", None).await.0, 404);
    assert_eq!(call(&app, &other, Method::DELETE, "/v1/schedules/mine", None).await.0, 404);
    let (_, list) = call(&app, &other, Method::GET, "/v1/schedules", None).await;
    assert_eq!(list["schedules"], json!([]));
    // The same name for the other tenant is a schedule of its own.
    let mut theirs = every_second("theirs");
    theirs["paused"] = json!(true);
    assert_eq!(call(&app, &other, Method::PUT, "/v1/schedules/mine", Some(theirs)).await.0, 201);
    let (_, mine) = call(&app, &app.key, Method::GET, "/v1/schedules/mine", None).await;
    assert_eq!(mine["command"]["payload"]["name"], "mine", "{mine}");
}
