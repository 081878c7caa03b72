//! Cancelling commands and batches: a cancel either wins (nothing is applied, ever) or loses
//! with 409 and the final status, never both; it is idempotent, audited and tenant-scoped.

use crate::helpers::{create_database, eventually, spawn_app, spawn_on, test_settings, Probe, TestApp, DEADLINE};
use crate::scheduling::post;
use serde_json::{json, Value};
use sluice::app::Roles;
use sluice::auth::create_key;
use uuid::Uuid;

fn event(name: &str, extra: Value) -> Value {
    let mut body = json!({"type": "event.record", "payload": {"name": name, "data": {}}});
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            body[k] = v;
        }
    }
    body
}

fn id_of(v: &Value) -> Uuid {
    v["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no id in {v}"))
}

async fn cancel(app: &TestApp, key: &str, id: Uuid) -> (u16, Value) {
    post(app, key, &format!("/v1/commands/{id}/cancel"), &Value::Null).await
}

async fn events_named(app: &TestApp, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE name = $1").bind(name).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_command_cancelled_before_its_time_never_runs() {
    let app = spawn_app().await;
    let (_, body) = post(&app, &app.key, "/v1/commands", &event("never", json!({"delay_ms": 1000}))).await;
    let id = id_of(&body);
    let (status, cancelled) = cancel(&app, &app.key, id).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!((cancelled["status"].as_str(), cancelled["was"].as_str()), (Some("cancelled"), Some("scheduled")));
    // A command scheduled after it has run: the cancelled one's time has passed by then.
    let (_, later) = post(&app, &app.key, "/v1/commands", &event("after", json!({"delay_ms": 1500}))).await;
    assert_eq!(app.settled(id_of(&later)).await["status"], "succeeded");
    let seen = app.get_json(&format!("/v1/commands/{id}")).await;
    assert_eq!((seen["status"].as_str(), seen["type"].as_str()), (Some("cancelled"), Some("event.record")), "{seen}");
    assert_eq!(events_named(&app, "never").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_command_cannot_be_cancelled_and_the_answer_says_why() {
    let app = spawn_app().await;
    let id = app.accept("event.record", json!({"name": "done", "data": {}})).await;
    assert_eq!(app.settled(id).await["status"], "succeeded");
    let (status, body) = cancel(&app, &app.key, id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["status"].as_str()),
        (Some("already_final"), Some("succeeded"))
    );
    assert_eq!(app.get_json(&format!("/v1/commands/{id}")).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_twice_is_harmless_and_each_cancel_is_audited_once() {
    let app = spawn_app().await;
    let (_, body) = post(&app, &app.key, "/v1/commands", &event("twice", json!({"delay_ms": 60_000}))).await;
    let id = id_of(&body);
    let first = cancel(&app, &app.key, id).await;
    let second = cancel(&app, &app.key, id).await;
    assert_eq!((first.0, first.1["already"].as_bool()), (200, Some(false)), "{}", first.1);
    assert_eq!((second.0, second.1["already"].as_bool()), (200, Some(true)), "{}", second.1);
    let audit = app.get_json("/v1/audit").await;
    let cancels: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "command.cancel").collect();
    assert_eq!(cancels.len(), 1, "{audit}");
    assert_eq!(cancels[0]["target"], id.to_string());
    assert_eq!(cancels[0]["details"]["was"], "scheduled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_command_cancelled_before_a_worker_takes_it_is_never_applied() {
    let (settings, db) = test_settings();
    create_database(&db).await;
    let api = spawn_on(settings.clone(), db.clone(), Roles::Api, &Probe::default()).await;
    let doomed = api.accept("event.record", json!({"name": "queued", "data": {}})).await;
    let kept = api.accept("event.record", json!({"name": "kept", "data": {}})).await;
    let (status, body) = cancel(&api, &api.key, doomed).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("was").is_none(), "no worker had seen it: {body}");

    let mut worker = spawn_on(settings, db, Roles::Worker, &Probe::default()).await;
    worker.owns_resources = false;
    assert_eq!(api.settled(kept).await["status"], "succeeded");
    // The worker met the cancel's row: acked, nothing applied, and the row learns its type.
    let seen = eventually(DEADLINE, || async {
        let v = api.get_json(&format!("/v1/commands/{doomed}")).await;
        (v["type"] == "event.record").then_some(v)
    })
    .await;
    assert_eq!(seen["status"], "cancelled", "{seen}");
    assert_eq!(events_named(&api, "queued").await, 0);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_command_cancelled_has_its_dead_letter_closed() {
    let app = spawn_app().await;
    let id = app.accept("test.poison", json!({})).await;
    assert_eq!(app.status_becomes(id, "dead").await["status"], "dead");
    let dead = eventually(DEADLINE, || async {
        let list = app.get_json("/v1/dead-letters").await;
        list["dead_letters"].as_array().and_then(|d| d.first().cloned())
    })
    .await;
    let (status, body) = cancel(&app, &app.key, id).await;
    assert_eq!((status, body["was"].as_str()), (200, Some("dead")), "{body}");
    let dl = app.get_json(&format!("/v1/dead-letters/{}", dead["id"].as_str().unwrap())).await;
    assert_eq!(dl["state"], "discarded", "{dl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_command_cancelled_is_not_applied_when_its_retry_comes() {
    let probe = Probe::default();
    let app = crate::helpers::spawn_app_with(|s| s.worker.retry_tiers_ms = vec![300], &probe).await;
    let id = app.accept("test.flaky", json!({"fail_times": 1})).await;
    app.status_becomes(id, "retrying").await;
    let (status, body) = cancel(&app, &app.key, id).await;
    assert_eq!((status, body["was"].as_str()), (200, Some("retrying")), "{body}");
    // The retry arrives, its handler runs, and the inbox row (cancelled) rolls it back.
    eventually(DEADLINE, || async { (probe.calls_of(id).len() >= 2).then_some(()) }).await;
    app.metric_reaches("sluice_commands_processed_total{type=\"test.flaky\",outcome=\"cancelled\"}", 1.0).await;
    let seen = app.get_json(&format!("/v1/commands/{id}")).await;
    assert_eq!(seen["status"], "cancelled", "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_a_delivery_either_wins_or_gets_409_never_both() {
    // Queued while no worker runs; the cancels then race the worker draining them.
    let (settings, db) = test_settings();
    create_database(&db).await;
    let app = spawn_on(settings.clone(), db.clone(), Roles::Api, &Probe::default()).await;
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(app.accept("event.record", json!({"name": "race", "data": {"i": i}})).await);
    }
    let mut worker = spawn_on(settings, db, Roles::Worker, &Probe::default()).await;
    worker.owns_resources = false;
    let answers = futures_util::future::join_all(ids.iter().map(|id| cancel(&app, &app.key, *id))).await;
    let mut won = 0;
    for (id, (status, body)) in ids.iter().zip(&answers) {
        let final_status = eventually(DEADLINE, || async {
            let v = app.get_json(&format!("/v1/commands/{id}")).await;
            matches!(v["status"].as_str(), Some("succeeded" | "cancelled")).then_some(v)
        })
        .await;
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE name = 'race' AND (data->>'i')::int = $1")
                .bind(ids.iter().position(|x| x == id).unwrap() as i32)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        match status {
            200 => {
                won += 1;
                assert_eq!((final_status["status"].as_str(), applied), (Some("cancelled"), 0), "{body}");
            }
            409 => {
                assert_eq!(body["error"]["status"], "succeeded", "{body}");
                assert_eq!((final_status["status"].as_str(), applied), (Some("succeeded"), 1));
            }
            other => panic!("cancel answered {other}: {body}"),
        }
    }
    eprintln!("{won} of {} cancels won the race", ids.len());
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_key_cannot_cancel_or_see_a_command() {
    let app = spawn_app().await;
    let other = create_key(&app.pool, "test", "globex", &["admin".into()]).await.unwrap().key;
    let (_, body) = post(&app, &app.key, "/v1/commands", &event("mine", json!({"delay_ms": 800}))).await;
    let id = id_of(&body);
    // Answered like an unknown id, and nothing changes for the owner.
    let (status, answer) = cancel(&app, &other, id).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(app.get_json(&format!("/v1/commands/{id}")).await["status"], "scheduled");
    assert_eq!(app.settled(id).await["status"], "succeeded");
    assert_eq!(events_named(&app, "mine").await, 1);
    // An applied command of the owner: still no 409 (it would say the id exists).
    let (status, answer) = cancel(&app, &other, id).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(app.get_json(&format!("/v1/commands/{id}")).await["status"], "succeeded");
    // Batches: another tenant's batch is not found.
    let (_, batch) =
        post(&app, &app.key, "/v1/batches", &json!({"commands": [event("b", json!({"delay_ms": 60_000}))]})).await;
    let (status, answer) =
        post(&app, &other, &format!("/v1/batches/{}/cancel", batch["id"].as_str().unwrap()), &Value::Null).await;
    assert_eq!(status, 404, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_applies_nothing_more_and_finishes_with_its_cancelled_count() {
    let (settings, db) = test_settings();
    create_database(&db).await;
    let api = spawn_on(settings.clone(), db.clone(), Roles::Api, &Probe::default()).await;
    let mut items: Vec<Value> =
        (0..20).map(|i| event("batched", json!({"payload": {"name": "batched", "data": {"i": i}}}))).collect();
    items.extend((0..5).map(|_| event("batched-later", json!({"delay_ms": 60_000}))));
    let (status, batch) = post(&api, &api.key, "/v1/batches", &json!({"commands": items})).await;
    assert_eq!((status, batch["accepted"].as_u64()), (202, Some(25)), "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let (status, cancelled) = post(&api, &api.key, &format!("/v1/batches/{batch_id}/cancel"), &Value::Null).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!((cancelled["cancelled"].as_i64(), cancelled["queued"].as_i64()), (Some(5), Some(20)), "{cancelled}");

    let mut worker = spawn_on(settings, db, Roles::Worker, &Probe::default()).await;
    worker.owns_resources = false;
    let done = eventually(DEADLINE, || async {
        let v = api.get_json(&format!("/v1/batches/{batch_id}")).await;
        v["finished_at"].is_string().then_some(v)
    })
    .await;
    assert_eq!((done["cancelled"].as_i64(), done["succeeded"].as_i64()), (Some(25), Some(0)), "{done}");
    assert!(done["cancelled_at"].is_string(), "{done}");
    assert_eq!(events_named(&api, "batched").await + events_named(&api, "batched-later").await, 0);
    let (status, again) = post(&api, &api.key, &format!("/v1/batches/{batch_id}/cancel"), &Value::Null).await;
    assert_eq!((status, again["error"]["status"].as_str()), (409, Some("finished")), "{again}");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_guesses_another_tenants_ids_can_neither_cancel_nor_uncancel_its_commands() {
    let (settings, db) = test_settings();
    create_database(&db).await;
    let api = spawn_on(settings.clone(), db.clone(), Roles::Api, &Probe::default()).await;
    let guesser = create_key(&api.pool, "test", "globex", &["admin".into()]).await.unwrap().key;
    let kept = api.accept("event.record", json!({"name": "kept", "data": {}})).await;
    let dropped = api.accept("event.record", json!({"name": "dropped", "data": {}})).await;
    // The guesser cancels both ids; the owner cancels one of them, and the guesser again.
    assert_eq!(cancel(&api, &guesser, kept).await.0, 200);
    assert_eq!(cancel(&api, &guesser, dropped).await.0, 200);
    assert_eq!(cancel(&api, &api.key, dropped).await.0, 200);
    assert_eq!(cancel(&api, &guesser, dropped).await.0, 200);
    let mut worker = spawn_on(settings, db, Roles::Worker, &Probe::default()).await;
    worker.owns_resources = false;
    assert_eq!(api.settled(kept).await["status"], "succeeded", "another tenant's cancel changed nothing");
    let seen = eventually(DEADLINE, || async {
        let v = api.get_json(&format!("/v1/commands/{dropped}")).await;
        (v["type"] == "event.record").then_some(v)
    })
    .await;
    assert_eq!(seen["status"], "cancelled", "another tenant's cancel did not undo the owner's: {seen}");
    assert_eq!((events_named(&api, "kept").await, events_named(&api, "dropped").await), (1, 0));
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_queued_item_cancelled_still_finishes() {
    let (settings, db) = test_settings();
    create_database(&db).await;
    let api = spawn_on(settings.clone(), db.clone(), Roles::Api, &Probe::default()).await;
    // One queued item cancelled by id before any worker runs.
    let items: Vec<Value> =
        (0..3).map(|i| event("second", json!({"payload": {"name": "second", "data": {"i": i}}}))).collect();
    let (_, batch) = post(&api, &api.key, "/v1/batches", &json!({"commands": items})).await;
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM commands WHERE batch_id = $1::text::uuid")
        .bind(&batch_id)
        .fetch_all(&api.pool)
        .await
        .unwrap();
    assert!(ids.is_empty(), "queued items have no rows yet");
    let first_item = {
        // Batch item 0's id, derived as ingest derives it.
        let v = api.get_json(&format!("/v1/batches/{batch_id}")).await;
        assert_eq!(v["total"], 3, "{v}");
        item_id(&batch_id, 0)
    };
    assert_eq!(cancel(&api, &api.key, first_item).await.0, 200);
    let mut worker = spawn_on(settings, db, Roles::Worker, &Probe::default()).await;
    worker.owns_resources = false;
    let done = eventually(DEADLINE, || async {
        let v = api.get_json(&format!("/v1/batches/{batch_id}")).await;
        v["finished_at"].is_string().then_some(v)
    })
    .await;
    assert_eq!((done["succeeded"].as_i64(), done["cancelled"].as_i64()), (Some(2), Some(1)), "{done}");
    worker.stop().await.unwrap();
}

/// The id ingest gives item `index` of batch `batch_id` (no idempotency key of its own).
fn item_id(batch_id: &str, index: u32) -> Uuid {
    sluice::ingest::item_id(batch_id.parse().unwrap(), None, index)
}
