//! Broker or database unreachable for one app (through a proxy the test cuts): the API says
//! 503 instead of 202, workers hold their work, and everything resumes by itself.

use crate::helpers::{eventually, spawn_app_with, Probe, DEADLINE};
use serde_json::{json, Value};
use sluice::config::Secret;
use sluice_harness::proxy::Proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_gets_503_with_retry_after_and_ingest_recovers_by_itself() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=5", proxy.port);
    let app = spawn_app_with(|s| s.broker.url = Secret::new(url), &Probe::default()).await;
    app.open_account("a", 1).await;

    proxy.cut();
    // A publish racing the cut may be `outcome_unknown`; once sluice knows the link is down it
    // says plainly that nothing was published.
    let (headers, body) = eventually(DEADLINE, || async {
        let r = app.submit("event.record", json!({"name": "during", "data": 1})).await;
        assert!(matches!(r.status().as_u16(), 202 | 503), "answered {}", r.status());
        let headers = r.headers().clone();
        let body: Value = r.json().await.unwrap();
        (body["error"]["code"] == "unavailable").then_some((headers, body))
    })
    .await;
    assert!(headers.get("retry-after").is_some(), "{body}");
    assert_eq!(app.get("/readyz").await.status(), 503, "not ready without the broker");

    proxy.restore();
    let id = eventually(DEADLINE, || async {
        let r = app.submit("event.record", json!({"name": "after", "data": 1})).await;
        if r.status() == 202 {
            r.json::<Value>().await.ok()
        } else {
            None
        }
    })
    .await;
    let id = uuid::Uuid::parse_str(id["id"].as_str().unwrap()).unwrap();
    assert_eq!(app.settled(id).await["status"], "succeeded", "workers reconnected too");
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_first_listed_node_refusing_connections_sluice_starts_on_the_next_one() {
    // A port nothing listens on: the first node is gone for good.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let urls = vec![
        Secret::new(format!("amqp://guest:guest@127.0.0.1:{dead}/%2f?heartbeat=5")),
        Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=5"),
    ];
    let app = spawn_app_with(|s| s.broker.urls = urls, &Probe::default()).await;
    app.open_account("a", 1).await;
    let id = app.accept("event.record", json!({"name": "second-node", "data": 1})).await;
    assert_eq!(app.settled(id).await["status"], "succeeded");
    let failed = format!("sluice_broker_connect_failures_total{{node=\"127.0.0.1:{dead}\"}}");
    assert!(app.metric(&failed).await >= 1.0, "the dead node was tried first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_node_is_lost_each_connection_moves_to_the_next_listed_node() {
    // Two proxies stand for two cluster nodes; cutting the first for good leaves the second.
    let first = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let second = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let urls = [&first, &second]
        .iter()
        .map(|p| Secret::new(format!("amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=5", p.port)))
        .collect();
    let app = spawn_app_with(|s| s.broker.urls = urls, &Probe::default()).await;
    app.open_account("a", 1).await;
    let on = |p: &Proxy| format!("sluice_broker_connects_total{{node=\"127.0.0.1:{}\"}}", p.port);
    assert!(app.metric(&on(&first)).await >= 2.0, "API and worker connections start on the first node");

    first.cut();
    let id = eventually(DEADLINE, || async {
        let r = app.submit("event.record", json!({"name": "after", "data": 1})).await;
        (r.status() == 202).then_some(())?;
        r.json::<Value>().await.ok()
    })
    .await;
    let id = uuid::Uuid::parse_str(id["id"].as_str().unwrap()).unwrap();
    assert_eq!(app.settled(id).await["status"], "succeeded", "workers moved too");
    assert!(app.metric(&on(&second)).await >= 2.0, "both connections are now on the second node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_unreachable_workers_hold_commands_and_apply_them_once_when_it_returns() {
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let app = spawn_app_with(
        |s| {
            let db = s.database.url.expose().rsplit('/').next().unwrap().to_owned();
            s.database.url = Secret::new(format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port));
            s.database.acquire_timeout_ms = 500;
        },
        &Probe::default(),
    )
    .await;
    app.open_account("a", 1000).await;
    app.open_account("b", 0).await;

    proxy.cut();
    // Ingest does not need Postgres: commands are accepted and wait in RabbitMQ.
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.accept("ledger.transfer", json!({"from": "a", "to": "b", "amount_cents": 10})).await);
    }
    // Workers notice the outage and hold the commands instead of failing them.
    app.metric_reaches("sluice_db_unavailable_total", 1.0).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM commands WHERE type = 'ledger.transfer'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(applied, 0, "nothing is applied (or marked) while the database is away");

    proxy.restore();
    for id in &ids {
        let s = app.settled(*id).await;
        assert_eq!((s["status"].as_str(), s["attempts"].as_i64()), (Some("succeeded"), Some(1)), "{s}");
    }
    assert_eq!((app.balance("a").await, app.balance("b").await), (800, 200));
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&app.pool).await.unwrap();
    assert_eq!(dead, 0, "an outage is not the commands' fault");
    eventually(DEADLINE, || async { (app.get("/readyz").await.status() == 200).then_some(()) }).await;
}
