//! Happy paths of each command type, idempotency, status and reads.

use crate::helpers::{spawn_app, spawn_app_with, Probe};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_account_shows_its_opening_balance() {
    let app = spawn_app().await;
    let id = app.accept("account.open", json!({"account_id": "alice", "initial_balance_cents": 1234})).await;
    let status = app.settled(id).await;
    assert_eq!(status["status"], "succeeded");
    assert_eq!(status["attempts"], 1);
    assert_eq!(status["type"], "account.open");
    assert_eq!(app.balance("alice").await, 1234);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_moves_money_between_two_accounts() {
    let app = spawn_app().await;
    app.open_account("a", 1000).await;
    app.open_account("b", 0).await;
    let id = app.accept("ledger.transfer", json!({"from": "a", "to": "b", "amount_cents": 250})).await;
    let status = app.settled(id).await;
    assert_eq!(status["status"], "succeeded", "{status}");
    assert_eq!(status["result"]["from_balance_cents"], 750);
    assert_eq!((app.balance("a").await, app.balance("b").await), (750, 250));
    let entries: (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(amount_cents)::bigint FROM ledger_entries WHERE command_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(entries, (2, 0), "a transfer writes a debit and a credit that cancel out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_with_insufficient_funds_is_rejected_not_retried() {
    let app = spawn_app().await;
    app.open_account("poor", 10).await;
    app.open_account("rich", 0).await;
    let id = app.accept("ledger.transfer", json!({"from": "poor", "to": "rich", "amount_cents": 11})).await;
    let status = app.settled(id).await;
    assert_eq!(status["status"], "rejected");
    assert_eq!(status["attempts"], 1);
    assert_eq!(status["result"]["reason"], "insufficient_funds");
    assert!(status["last_error"].as_str().unwrap().contains("10 cents"), "{status}");
    assert_eq!(app.balance("poor").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_an_unknown_account_is_rejected() {
    let app = spawn_app().await;
    app.open_account("a", 100).await;
    let id = app.accept("ledger.transfer", json!({"from": "a", "to": "ghost", "amount_cents": 1})).await;
    let status = app.settled(id).await;
    assert_eq!(
        (status["status"].as_str(), status["result"]["reason"].as_str()),
        (Some("rejected"), Some("unknown_account"))
    );
    assert_eq!(app.balance("a").await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_an_account_twice_is_rejected_the_second_time() {
    let app = spawn_app().await;
    app.open_account("dup", 5).await;
    let id = app.accept("account.open", json!({"account_id": "dup", "initial_balance_cents": 999})).await;
    assert_eq!(app.settled(id).await["result"]["reason"], "account_exists");
    assert_eq!(app.balance("dup").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_returns_the_same_id_and_applies_once() {
    let app = spawn_app().await;
    app.open_account("a", 1000).await;
    app.open_account("b", 0).await;
    let payload = json!({"from": "a", "to": "b", "amount_cents": 100});
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = app.submit_as(&app.key, "ledger.transfer", payload.clone(), Some("order-42")).await;
        assert_eq!(r.status(), 202);
        ids.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let id = uuid::Uuid::parse_str(&ids[0]).unwrap();
    assert_eq!(app.settled(id).await["status"], "succeeded");
    // Every duplicate reaches a worker and is absorbed by the inbox.
    app.metric_reaches("sluice_commands_processed_total{type=\"ledger.transfer\",outcome=\"duplicate\"}", 2.0).await;
    assert_eq!((app.balance("a").await, app.balance("b").await), (900, 100));
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_entries").fetch_one(&app.pool).await.unwrap();
    assert_eq!(entries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_events_are_listed_by_name_and_time_range_in_pages() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for (i, name) in ["click", "view", "click", "click", "view"].iter().enumerate() {
        let time = format!("2026-01-01T00:00:0{i}Z");
        ids.push(app.accept("event.record", json!({"name": name, "data": {"i": i}, "time": time})).await);
    }
    for id in ids {
        assert_eq!(app.settled(id).await["status"], "succeeded");
    }
    let page1 = app.get_json("/v1/events?name=click&limit=2").await;
    let got: Vec<i64> = page1["events"].as_array().unwrap().iter().map(|e| e["data"]["i"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![0, 2]);
    let cursor = page1["next_cursor"].as_str().expect("a full page has a cursor");
    let page2 = app.get_json(&format!("/v1/events?name=click&limit=2&cursor={cursor}")).await;
    assert_eq!(page2["events"][0]["data"]["i"], 3);
    assert_eq!(page2["events"].as_array().unwrap().len(), 1);
    let ranged = app.get_json("/v1/events?from=2026-01-01T00:00:01Z&to=2026-01-01T00:00:04Z").await;
    let got: Vec<i64> = ranged["events"].as_array().unwrap().iter().map(|e| e["data"]["i"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![1, 2, 3], "from is inclusive, to exclusive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_events_stops_at_its_byte_budget_and_the_cursor_goes_on_from_there() {
    let app = crate::helpers::spawn_app_with(|s| s.limits.max_page_bytes = 25_000, &Default::default()).await;
    let big = "x".repeat(10_000);
    for i in 0..5 {
        let time = format!("2026-01-01T00:00:0{i}Z");
        let id = app.accept("event.record", json!({"name": "big", "data": big, "time": time})).await;
        assert_eq!(app.settled(id).await["status"], "succeeded");
    }
    // Each event's data is 10,002 bytes of JSON text: the third crosses 25,000 and ends the page.
    let page1 = app.get_json("/v1/events?name=big&limit=100").await;
    assert_eq!(page1["events"].as_array().unwrap().len(), 3, "stopped at the budget, not the limit");
    let cursor = page1["next_cursor"].as_str().expect("a page cut by its budget has a cursor");
    let page2 = app.get_json(&format!("/v1/events?name=big&limit=100&cursor={cursor}")).await;
    assert_eq!(page2["events"].as_array().unwrap().len(), 2);
    assert!(page2["next_cursor"].is_null(), "the end of the log has no cursor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_no_worker_has_taken_reads_as_pending() {
    let app = spawn_app().await;
    let v = app.get_json(&format!("/v1/commands/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(v["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_command_has_a_status_url_and_location() {
    let app = spawn_app().await;
    let r = app.submit("event.record", json!({"name": "n", "data": null})).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status_url"], location);
    assert_eq!(location, format!("/v1/commands/{}", body["id"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_style_shutdown_finishes_in_flight_work_and_acks_it() {
    let probe = Probe::default();
    let mut app = spawn_app_with(|_| {}, &probe).await;
    let id = app.accept("test.slow", json!({"millis": 1500})).await;
    // Wait until a worker is inside the handler, then ask for shutdown mid-handler.
    crate::helpers::eventually(crate::helpers::DEADLINE, || async { (!probe.calls_of(id).is_empty()).then_some(()) })
        .await;
    app.stop().await.expect("clean exit");
    let status: String =
        sqlx::query_scalar("SELECT status FROM commands WHERE id = $1").bind(id).fetch_one(&app.pool).await.unwrap();
    assert_eq!(status, "succeeded", "in-flight work finished during the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_page_of_commands_stops_at_its_byte_budget_and_says_more_follow() {
    use sluice::store::commands::{search, Search};
    let app = spawn_app().await;
    for i in 0..3 {
        let id = app.accept("event.record", json!({"name": "paged", "data": i})).await;
        assert_eq!(app.settled(id).await["status"], "succeeded");
    }
    let all = search(&app.pool, &Search::default(), None, 50, i64::MAX).await.unwrap();
    assert_eq!((all.rows.len(), all.more), (3, false));
    // One byte: the first row crosses it, and the page ends there with more to come.
    let cut = search(&app.pool, &Search::default(), None, 50, 1).await.unwrap();
    assert_eq!((cut.rows.len(), cut.more), (1, true));
    assert_eq!(cut.rows[0].command.id, all.rows[0].command.id, "the newest first");
}
