//! Per-key ordering: commands with one `ordering_key` are applied one at a time in the order
//! accepted, a failing one holds back only its own key, and a dead one halts the key (until an
//! operator replays or discards it) or is skipped, by its type's policy.

use crate::helpers::{eventually, spawn_app, spawn_app_with, Probe, TestApp, DEADLINE};
use crate::scheduling::post;
use serde_json::{json, Value};
use sluice::auth::create_key;
use uuid::Uuid;

fn ordered(kind: &str, key: &str, payload: Value) -> Value {
    json!({"type": kind, "payload": payload, "ordering_key": key})
}

fn event(key: &str, seq: usize) -> Value {
    ordered("event.record", key, json!({"name": key, "data": {"seq": seq}}))
}

async fn accept_as(app: &TestApp, api_key: &str, body: &Value) -> Uuid {
    let (status, answer) = post(app, api_key, "/v1/commands", body).await;
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).expect("id")
}

async fn accept(app: &TestApp, body: &Value) -> Uuid {
    accept_as(app, &app.key, body).await
}

/// The `seq` of the events named `key` of `tenant`, in the order they were applied.
async fn applied_order(app: &TestApp, tenant: &str, key: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT (data->>'seq')::bigint FROM events WHERE tenant = $1 AND name = $2 ORDER BY recorded_at, id",
    )
    .bind(tenant)
    .bind(key)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn events_applied(app: &TestApp, tenant: &str, key: &str, n: usize) -> Vec<i64> {
    eventually(DEADLINE, || async { Some(applied_order(app, tenant, key).await).filter(|o| o.len() >= n) }).await
}

/// The blocked key's row: (halted, commands waiting behind its head).
async fn block_of(app: &TestApp, tenant: &str, key: &str) -> Option<(bool, i64)> {
    sqlx::query_as(
        "SELECT b.halted, (SELECT count(*) FROM ordering_held h WHERE h.tenant = b.tenant
                AND h.ordering_key = b.ordering_key AND h.command_id <> b.command_id)
         FROM ordering_blocks b WHERE tenant = $1 AND ordering_key = $2",
    )
    .bind(tenant)
    .bind(key)
    .fetch_optional(&app.pool)
    .await
    .unwrap()
}

async fn dead_letter_of(app: &TestApp, id: Uuid) -> Uuid {
    eventually(DEADLINE, || async {
        sqlx::query_scalar("SELECT id FROM dead_letters WHERE command_id = $1 AND state = 'open'")
            .bind(id)
            .fetch_optional(&app.pool)
            .await
            .unwrap()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_with_one_key_are_applied_in_the_order_accepted_while_keys_run_side_by_side() {
    let app = spawn_app().await;
    // Four producers, one key each, each submitting sequentially (202 before the next).
    let producers = (0..4).map(|k| {
        let app = &app;
        async move {
            let key = format!("account-{k}");
            for seq in 0..40 {
                accept(app, &event(&key, seq)).await;
            }
        }
    });
    futures_util::future::join_all(producers).await;
    for k in 0..4 {
        let order = events_applied(&app, "acme", &format!("account-{k}"), 40).await;
        assert_eq!(order, (0..40).collect::<Vec<i64>>(), "key account-{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_items_of_a_batch_with_one_key_are_applied_in_their_position() {
    let app = spawn_app().await;
    let items: Vec<Value> = (0..300).map(|seq| event("cart-7", seq)).collect();
    let (status, body) = post(&app, &app.key, "/v1/batches", &json!({"commands": items})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(events_applied(&app, "acme", "cart-7", 300).await, (0..300).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_holds_back_only_the_later_commands_of_its_key() {
    let probe = Probe::default();
    let app = spawn_app_with(|_| {}, &probe).await; // tiers 100..800 ms; 4 attempts
    let flaky = accept(&app, &ordered("test.flaky", "k", json!({"fail_times": 2}))).await;
    let after = accept(&app, &event("k", 1)).await;
    let other = accept(&app, &event("other", 1)).await;
    // The other key is not held up by k's failing head.
    assert_eq!(app.settled(other).await["status"], "succeeded");
    let (halted, waiting) = eventually(DEADLINE, || async { block_of(&app, "acme", "k").await }).await;
    assert!(!halted, "a retrying head does not halt its key");
    assert!(waiting <= 1);
    // Two failed calls, then success: attempt 2 or 3 (a failure inside a transaction shared
    // with other commands is rolled back and tried again on its own, as the same attempt).
    let head = app.settled(flaky).await;
    assert_eq!(head["status"], "succeeded");
    assert!(head["attempts"].as_i64().is_some_and(|a| a >= 2), "{head}");
    assert_eq!(app.settled(after).await["status"], "succeeded");
    // Applied after the head's third, successful call.
    let head_done: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT completed_at FROM commands WHERE id = $1")
            .bind(flaky)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let event_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT recorded_at FROM events WHERE id = $1")
        .bind(after)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(event_at >= head_done, "the later command ran at {event_at}, before its head finished at {head_done}");
    assert!(probe.calls_of(flaky).len() >= 3);
    eventually(DEADLINE, || async { block_of(&app, "acme", "k").await.is_none().then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_command_halts_its_key_until_its_dead_letter_is_replayed_first_or_discarded() {
    let app = spawn_app().await;
    let poison = accept(&app, &ordered("test.poison", "acct", json!({}))).await;
    let first = accept(&app, &event("acct", 1)).await;
    let second = accept(&app, &event("acct", 2)).await;
    assert_eq!(app.settled(poison).await["status"], "dead");
    let (halted, waiting) =
        eventually(DEADLINE, || async { block_of(&app, "acme", "acct").await.filter(|(_, waiting)| *waiting == 2) })
            .await;
    assert!(halted);
    assert_eq!(waiting, 2);
    for id in [first, second] {
        assert_eq!(app.get_json(&format!("/v1/commands/{id}")).await["status"], "pending", "held behind the dead one");
    }
    // The dashboard lists the halted key.
    let http =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login =
        http.post(format!("{}/dashboard/login", app.base)).form(&[("key", app.key.as_str())]).send().await.unwrap();
    assert_eq!(login.status(), 303);
    let page = http.get(format!("{}/dashboard/ordering", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("data-ordering-key=\"acct\"") && page.contains("halted"), "{page}");

    // A replay goes to the head of the line: it dies again, and the key stays halted.
    let dl = dead_letter_of(&app, poison).await;
    let (status, body) = post(&app, &app.key, &format!("/v1/dead-letters/{dl}/replay"), &json!({})).await;
    assert_eq!(status, 202, "{body}");
    let dl2 = eventually(DEADLINE, || async {
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM dead_letters WHERE command_id = $1 AND state = 'open'")
            .bind(poison)
            .fetch_optional(&app.pool)
            .await
            .unwrap()
            .filter(|id| *id != dl)
    })
    .await;
    assert_eq!(block_of(&app, "acme", "acct").await, Some((true, 2)));
    assert!(applied_order(&app, "acme", "acct").await.is_empty(), "nothing ran past the replayed head");

    // Discarding it lets the key go on, in order.
    let (status, body) = post(&app, &app.key, &format!("/v1/dead-letters/{dl2}/discard"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(events_applied(&app, "acme", "acct", 2).await, vec![1, 2]);
    eventually(DEADLINE, || async { block_of(&app, "acme", "acct").await.is_none().then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_skip_policy_a_dead_command_lets_its_key_go_on() {
    let app = spawn_app().await;
    accept(&app, &event("s", 0)).await;
    let poison = accept(&app, &ordered("test.poison_skip", "s", json!({}))).await;
    accept(&app, &event("s", 2)).await;
    assert_eq!(events_applied(&app, "acme", "s", 2).await, vec![0, 2]);
    assert_eq!(app.settled(poison).await["status"], "dead");
    assert!(block_of(&app, "acme", "s").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_halted_in_one_tenant_does_not_hold_back_the_same_key_of_another() {
    let app = spawn_app().await;
    let globex = create_key(&app.pool, "test", "globex", &["admin".into()]).await.unwrap().key;
    let poison = accept(&app, &ordered("test.poison", "shared", json!({}))).await;
    assert_eq!(app.settled(poison).await["status"], "dead");
    let held = accept(&app, &event("shared", 1)).await;
    accept_as(&app, &globex, &event("shared", 1)).await;
    assert_eq!(events_applied(&app, "globex", "shared", 1).await, vec![1]);
    eventually(DEADLINE, || async { (block_of(&app, "acme", "shared").await == Some((true, 1))).then_some(()) }).await;
    assert_eq!(app.get_json(&format!("/v1/commands/{held}")).await["status"], "pending");
    // Nor can the other tenant release it: acme's dead letter is not globex's to discard.
    let dl = dead_letter_of(&app, poison).await;
    let (status, _) = post(&app, &globex, &format!("/v1/dead-letters/{dl}/discard"), &json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(block_of(&app, "acme", "shared").await, Some((true, 1)));
    // Cancelling the dead command releases its key.
    let (status, body) = post(&app, &app.key, &format!("/v1/commands/{poison}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(events_applied(&app, "acme", "shared", 1).await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ordering_key_or_one_with_a_priority_is_refused_with_where() {
    let app = spawn_app().await;
    for (body, pointer) in [
        (json!({"type": "event.record", "payload": {"name": "x", "data": {}}, "ordering_key": 7}), "/ordering_key"),
        (json!({"type": "event.record", "payload": {"name": "x", "data": {}}, "ordering_key": ""}), "/ordering_key"),
        (
            json!({"type": "event.record", "payload": {"name": "x", "data": {}}, "ordering_key": "a\u{7}b"}),
            "/ordering_key",
        ),
        (
            json!({"type": "event.record", "payload": {"name": "x", "data": {}}, "ordering_key": "k", "priority": "high"}),
            "/priority",
        ),
    ] {
        let (status, answer) = post(&app, &app.key, "/v1/commands", &body).await;
        assert_eq!(status, 422, "{answer}");
        let text = answer.to_string();
        assert!(text.contains(pointer), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_key_cannot_open_the_blocked_keys_page() {
    let app = spawn_app().await;
    let admin = create_key(&app.pool, "test", "globex", &["admin".into()]).await.unwrap().key;
    let http =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login =
        http.post(format!("{}/dashboard/login", app.base)).form(&[("key", admin.as_str())]).send().await.unwrap();
    assert_eq!(login.status(), 403);
    let page = http.get(format!("{}/dashboard/ordering", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 303, "no session, no page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_holds_its_key_back_instead_of_letting_the_next_command_pass() {
    let probe = Probe::default();
    let app = spawn_app_with(|_| {}, &probe).await;
    let panics = accept(&app, &ordered("test.panic", "p", json!({}))).await;
    let next = accept(&app, &event("p", 1)).await;
    // Retried like a transient failure until its attempts run out, then dead: the key halts.
    assert_eq!(app.settled(panics).await["status"], "dead");
    eventually(DEADLINE, || async { (block_of(&app, "acme", "p").await == Some((true, 1))).then_some(()) }).await;
    assert_eq!(app.get_json(&format!("/v1/commands/{next}")).await["status"], "pending");
    assert!(applied_order(&app, "acme", "p").await.is_empty(), "nothing ran past the panicking head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_share_the_ordered_partitions_and_keep_every_keys_order() {
    use crate::helpers::{create_database, spawn_on, test_settings};
    use sluice::app::Roles;
    let (settings, db) = test_settings();
    create_database(&db).await;
    let api = spawn_on(settings.clone(), db.clone(), Roles::Api, &Probe::default()).await;
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut w = spawn_on(settings.clone(), db.clone(), Roles::Worker, &Probe::default()).await;
        w.owns_resources = false;
        workers.push(w);
    }
    // Each worker's share of the 16 partitions is 8 once both are seen alive.
    let holders = eventually(DEADLINE, || async {
        let held: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT pid, count(*) FROM pg_locks
              WHERE locktype = 'advisory' AND objsubid = 2 AND granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
              GROUP BY pid",
        )
        .fetch_all(&api.pool)
        .await
        .unwrap();
        (held.len() == 2 && held.iter().all(|(_, n)| *n == 8)).then_some(held)
    })
    .await;
    assert_eq!(holders.len(), 2);
    let producers = (0..8).map(|k| {
        let api = &api;
        async move {
            for seq in 0..15 {
                accept(api, &event(&format!("spread-{k}"), seq)).await;
            }
        }
    });
    futures_util::future::join_all(producers).await;
    for k in 0..8 {
        assert_eq!(events_applied(&api, "acme", &format!("spread-{k}"), 15).await, (0..15).collect::<Vec<i64>>());
    }
    drop(workers);
}
