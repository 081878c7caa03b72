//! Operators: dead letters listed, grouped, shown, replayed (once in effect, however often),
//! edited, discarded, in bulk; every action audited; admin scope only.

use crate::helpers::{eventually, spawn_app, TestApp};
use crate::retries::publish_raw;
use serde_json::{json, Value};
use sluice::auth::create_key;
use sluice::command::Envelope;
use std::time::Duration;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(20);

impl TestApp {
    pub async fn post_json(&self, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    /// Publishes an `event.record` whose payload the handler cannot use (no `name`), as a
    /// producer bypassing the API might; it is dead-lettered at once. Returns the command id.
    pub async fn dead_event(&self, marker: i64) -> Uuid {
        let cmd = Envelope::new("acme", "event.record", json!({"data": {"marker": marker}}), None);
        publish_raw(self, &cmd.encode(), &cmd.id.to_string()).await;
        self.status_becomes(cmd.id, "dead").await;
        cmd.id
    }

    /// The open dead letter of command `id`.
    pub async fn dead_letter_of(&self, id: Uuid) -> Value {
        let list = self.get_json("/v1/dead-letters?limit=500").await;
        list["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["command_id"] == json!(id))
            .cloned()
            .unwrap_or_else(|| panic!("no open dead letter for {id}: {list}"))
    }
}

async fn events_named(app: &TestApp, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE name = $1").bind(name).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_error_reaches_the_operator_whole_and_the_tenant_only_as_its_kind() {
    let app = spawn_app().await;
    let id = app.accept("test.bad_sql", json!({})).await;
    let status = app.status_becomes(id, "dead").await;
    let shown = status["last_error"].as_str().unwrap_or_default();
    assert!(shown.contains("database error"), "the tenant learns what kind of failure: {status}");
    assert!(!status.to_string().contains("no_such_table"), "but not the database's words: {status}");
    let dl = app.dead_letter_of(id).await;
    let detail = app.get_json(&format!("/v1/dead-letters/{}", dl["id"].as_str().unwrap())).await;
    assert!(detail["error"].as_str().unwrap_or_default().contains("no_such_table"), "the operator sees it: {detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_shown_with_its_error_and_replayed_with_an_edited_payload_once() {
    let app = spawn_app().await;
    let id = app.dead_event(1).await;
    let dl = app.dead_letter_of(id).await;
    assert_eq!(dl["command_type"], "event.record");
    assert_eq!(dl["error_kind"], "permanent");
    let dl_id = dl["id"].as_str().unwrap().to_owned();

    let shown = app.get_json(&format!("/v1/dead-letters/{dl_id}")).await;
    assert_eq!(shown["payload"], json!({"data": {"marker": 1}}));
    assert!(shown["error"].as_str().unwrap().contains("name"), "{shown}");
    assert_eq!(shown["attempt_errors"].as_array().unwrap().len(), 1, "{shown}");

    let fixed = json!({"name": "fixed", "data": {"marker": 1}});
    let r = app.post_json(&format!("/v1/dead-letters/{dl_id}/replay"), Some(json!({"payload": fixed}))).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["replayed"]["command_id"], json!(id));
    assert_eq!(app.status_becomes(id, "succeeded").await["type"], "event.record");

    // A second replay republishes the same command id: acknowledged, applied no second time.
    let r = app.post_json(&format!("/v1/dead-letters/{dl_id}/replay"), Some(json!({"payload": fixed}))).await;
    assert_eq!(r.status(), 202);
    let shown = eventually(DEADLINE, || async {
        let v = app.get_json(&format!("/v1/dead-letters/{dl_id}")).await;
        (v["replay_count"] == 2).then_some(v)
    })
    .await;
    assert_eq!(shown["state"], "replayed");
    assert_eq!(shown["replayed_payload"], fixed);
    app.metric_reaches("sluice_commands_processed_total{type=\"event.record\",outcome=\"duplicate\"}", 1.0).await;
    assert_eq!(events_named(&app, "fixed").await, 1, "two replays, one effect");

    let audit = app.get_json("/v1/audit").await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["dead_letter.edit_replay", "dead_letter.edit_replay"]);
    assert_eq!(audit["entries"][0]["details"]["after"], fixed);
    assert_eq!(audit["entries"][0]["details"]["before"], json!({"data": {"marker": 1}}));
    assert!(audit["entries"][0]["actor"].as_str().unwrap().starts_with("key:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_payload_that_breaks_the_schema_is_a_422_and_replays_nothing() {
    let app = spawn_app().await;
    let id = app.dead_event(2).await;
    let dl_id = app.dead_letter_of(id).await["id"].as_str().unwrap().to_owned();
    let r = app.post_json(&format!("/v1/dead-letters/{dl_id}/replay"), Some(json!({"payload": {"name": 5}}))).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_payload");
    assert!(body["error"]["violations"].as_array().unwrap().iter().any(|v| v["path"] == "/payload/name"), "{body}");
    assert_eq!(app.get_json(&format!("/v1/dead-letters/{dl_id}")).await["state"], "open");
    assert_eq!(app.get_json("/v1/audit").await["entries"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_one_cause_form_one_group_and_are_replayed_together_by_filter() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.dead_event(i).await);
    }
    let poison = app.accept("test.poison", json!({})).await;
    app.status_becomes(poison, "dead").await;

    let groups = app.get_json("/v1/dead-letters/groups").await;
    let groups = groups["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let events = groups.iter().find(|g| g["command_type"] == "event.record").unwrap();
    assert_eq!((events["open_count"].as_i64(), events["total_count"].as_i64()), (Some(3), Some(3)));
    let fingerprint = events["fingerprint"].as_str().unwrap();

    let filtered = app.get_json(&format!("/v1/dead-letters?fingerprint={fingerprint}")).await;
    assert_eq!(filtered["dead_letters"].as_array().unwrap().len(), 3);

    // Unfixed, replayed letters die again at once and join the group anew; `until` keeps the
    // bulk replay to those that were there when it started.
    let filter = json!({"fingerprint": fingerprint, "until": chrono::Utc::now()});
    let r = app
        .post_json("/v1/dead-letters/replay", Some(json!({"filter": filter, "limit": 2, "rate_per_second": 50})))
        .await;
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    assert_eq!((first["replayed"].as_i64(), first["remaining"].as_i64()), (Some(2), Some(1)));
    let r = app.post_json("/v1/dead-letters/replay", Some(json!({"filter": filter}))).await;
    let rest: Value = r.json().await.unwrap();
    assert_eq!((rest["replayed"].as_i64(), rest["remaining"].as_i64()), (Some(1), Some(0)), "the request resumes");

    // Each died again: a fresh dead letter of the same group.
    for id in &ids {
        eventually(DEADLINE, || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE command_id = $1")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
            (n == 2).then_some(())
        })
        .await;
    }
    let groups = app.get_json("/v1/dead-letters/groups").await;
    let events = groups["groups"].as_array().unwrap().iter().find(|g| g["command_type"] == "event.record").cloned();
    assert_eq!(events.unwrap()["total_count"], 6);
    let audit = app.get_json("/v1/audit").await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2, "one entry per bulk request");
    assert_eq!(audit["entries"][1]["details"]["done"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_dead_letter_leaves_the_open_list_cannot_be_replayed_and_is_audited() {
    let app = spawn_app().await;
    let id = app.dead_event(7).await;
    let dl_id = app.dead_letter_of(id).await["id"].as_str().unwrap().to_owned();
    assert_eq!(app.post_json(&format!("/v1/dead-letters/{dl_id}/discard"), None).await.status(), 200);
    assert_eq!(app.get_json("/v1/dead-letters").await["dead_letters"], json!([]));
    let discarded = app.get_json("/v1/dead-letters?state=discarded").await;
    assert_eq!(discarded["dead_letters"][0]["id"], dl_id.as_str());
    let r = app.post_json(&format!("/v1/dead-letters/{dl_id}/replay"), None).await;
    assert_eq!(r.status(), 409);
    assert_eq!(app.post_json(&format!("/v1/dead-letters/{dl_id}/discard"), None).await.status(), 409);
    let audit = app.get_json("/v1/audit").await;
    assert_eq!(audit["entries"][0]["action"], "dead_letter.discard");
    assert_eq!(audit["entries"][0]["target"], format!("dead_letter/{dl_id}"));
    let groups = app.get_json("/v1/dead-letters/groups").await;
    assert_eq!(groups["groups"], json!([]), "a group with nothing open is not listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_need_the_admin_scope_and_reject_bad_input_with_a_4xx() {
    let app = spawn_app().await;
    let submitter = create_key(&app.pool, "test", "acme", &["submit".into(), "read".into()]).await.unwrap();
    for path in ["/v1/dead-letters", "/v1/dead-letters/groups", "/v1/audit", "/v1/queues"] {
        let r = app.http.get(format!("{}{path}", app.base)).bearer_auth(&submitter.key).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    assert_eq!(app.get(&format!("/v1/dead-letters/{}", Uuid::now_v7())).await.status(), 404);
    assert_eq!(app.get("/v1/dead-letters/not-a-uuid").await.status(), 400);
    assert_eq!(app.get("/v1/dead-letters?state=lost").await.status(), 400);
    assert_eq!(app.get("/v1/dead-letters?since=yesterday").await.status(), 400);
    let r = app.post_json("/v1/dead-letters/replay", Some(json!({"limit": 0}))).await;
    assert_eq!(r.status(), 400);
    let r = app.post_json("/v1/dead-letters/replay", Some(json!({"filtre": {}}))).await;
    assert_eq!(r.status(), 400, "unknown fields are named, not ignored");
    assert_eq!(app.post_json("/v1/queues/nope/pause", None).await.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_context_given_at_ingest_travels_with_the_command_to_its_dead_letter() {
    let app = spawn_app().await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = app
        .http
        .post(format!("{}/v1/commands", app.base))
        .bearer_auth(&app.key)
        .header("traceparent", tp)
        .json(&json!({"type": "test.poison", "payload": {}}))
        .send()
        .await
        .unwrap();
    let traced = Uuid::parse_str(r.json::<Value>().await.unwrap()["id"].as_str().unwrap()).unwrap();
    let untraced = app.accept("test.poison", json!({})).await;
    app.status_becomes(traced, "dead").await;
    app.status_becomes(untraced, "dead").await;
    let dl = app.dead_letter_of(traced).await["id"].as_str().unwrap().to_owned();
    assert_eq!(app.get_json(&format!("/v1/dead-letters/{dl}")).await["headers"]["traceparent"], tp);
    let dl = app.dead_letter_of(untraced).await["id"].as_str().unwrap().to_owned();
    let generated = app.get_json(&format!("/v1/dead-letters/{dl}")).await["headers"]["traceparent"].clone();
    assert!(
        sluice::broker::wire::trace_id(generated.as_str().unwrap()).is_some(),
        "one is made up at ingest: {generated}"
    );
}
