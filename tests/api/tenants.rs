//! Tenants stay apart: tenant A's admin key cannot read, change or replay anything of tenant
//! B's, on any route, while an operator key reaches every tenant.

use crate::helpers::{eventually, spawn_app, TestApp, DEADLINE};
use reqwest::Method;
use serde_json::{json, Value};
use sluice::auth::create_key;

async fn call(app: &TestApp, key: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.http.request(method, format!("{}{path}", app.base)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("answered");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_cannot_read_change_or_replay_anything_of_another_tenant_on_any_route() {
    let app = spawn_app().await;
    let a = create_key(&app.pool, "test", "acme", &["admin".into()]).await.unwrap().key;
    let b = create_key(&app.pool, "test", "globex", &["admin".into()]).await.unwrap().key;

    // Tenant B's things: an account, an event, a command, a batch, a dead letter, a webhook source.
    let (s, open) = call(
        &app,
        &b,
        Method::POST,
        "/v1/commands",
        Some(json!({"type": "account.open",
        "payload": {"account_id": "b-acct", "initial_balance_cents": 5}})),
    )
    .await;
    assert_eq!(s, 202, "{open}");
    let b_cmd = open["id"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &app,
        &b,
        Method::POST,
        "/v1/commands",
        Some(json!({"type": "event.record",
        "payload": {"name": "b.secret", "data": 1}})),
    )
    .await;
    assert_eq!(s, 202);
    let (s, batch) = call(
        &app,
        &b,
        Method::POST,
        "/v1/batches",
        Some(json!({"commands": [
        {"type": "event.record", "payload": {"name": "b.batch", "data": 2}}]})),
    )
    .await;
    assert_eq!(s, 202, "{batch}");
    let b_batch = batch["id"].as_str().unwrap().to_owned();
    let (s, _) =
        call(&app, &b, Method::POST, "/v1/commands", Some(json!({"type": "test.poison", "payload": {}}))).await;
    assert_eq!(s, 202);
    let source = json!({"scheme": "github", "secrets": ["b-secret-123456"]});
    let (s, put) = call(&app, &b, Method::PUT, "/v1/webhook-sources/globex-hooks", Some(source)).await;
    assert_eq!(s, 200, "{put}");
    assert_eq!(put["source"]["tenant"], "globex", "a source belongs to the tenant that created it");
    let b_dead = eventually(DEADLINE, || async {
        let (_, list) = call(&app, &b, Method::GET, "/v1/dead-letters", None).await;
        list["dead_letters"].as_array()?.first()?["id"].as_str().map(str::to_owned)
    })
    .await;
    eventually(DEADLINE, || async {
        let (_, st) = call(&app, &b, Method::GET, &format!("/v1/commands/{b_cmd}"), None).await;
        (st["status"] == "succeeded").then_some(())
    })
    .await;

    // Reads: nothing of B's shows.
    let (_, st) = call(&app, &a, Method::GET, &format!("/v1/commands/{b_cmd}"), None).await;
    assert_eq!(st["status"], "pending", "another tenant's command reads as unknown: {st}");
    assert_eq!(call(&app, &a, Method::GET, "/v1/accounts/b-acct", None).await.0, 404);
    let (_, events) = call(&app, &a, Method::GET, "/v1/events?name=b.secret", None).await;
    assert_eq!(events["events"], json!([]));
    assert_eq!(call(&app, &a, Method::GET, &format!("/v1/batches/{b_batch}"), None).await.0, 404);
    for path in ["/v1/dead-letters", "/v1/dead-letters?tenant=globex", "/v1/dead-letters?state=open&tenant=globex"] {
        let (s, list) = call(&app, &a, Method::GET, path, None).await;
        assert_eq!((s, list["dead_letters"].clone()), (200, json!([])), "{path}");
    }
    let (_, groups) = call(&app, &a, Method::GET, "/v1/dead-letters/groups", None).await;
    assert_eq!(groups["groups"], json!([]), "{groups}");
    assert_eq!(call(&app, &a, Method::GET, &format!("/v1/dead-letters/{b_dead}"), None).await.0, 404);
    let (_, sources) = call(&app, &a, Method::GET, "/v1/webhook-sources", None).await;
    assert_eq!(sources["sources"], json!([]));
    assert_eq!(call(&app, &a, Method::GET, "/v1/webhooks/globex-hooks/deliveries", None).await.0, 404);

    // Changes: refused, and B's things are as they were.
    for path in [format!("/v1/dead-letters/{b_dead}/replay"), format!("/v1/dead-letters/{b_dead}/discard")] {
        assert_eq!(call(&app, &a, Method::POST, &path, None).await.0, 404, "{path}");
    }
    let everything = json!({"filter": {"tenant": "globex"}, "limit": 100});
    let (_, r) = call(&app, &a, Method::POST, "/v1/dead-letters/replay", Some(everything.clone())).await;
    assert_eq!(r["replayed"], 0, "{r}");
    let (_, r) = call(&app, &a, Method::POST, "/v1/dead-letters/discard", Some(everything)).await;
    assert_eq!(r["discarded"], 0, "{r}");
    let (_, still) = call(&app, &b, Method::GET, &format!("/v1/dead-letters/{b_dead}"), None).await;
    assert_eq!((still["state"].as_str(), still["replay_count"].as_i64()), (Some("open"), Some(0)), "{still}");
    let takeover = json!({"scheme": "github", "secrets": ["attacker-secret-1"]});
    assert_eq!(call(&app, &a, Method::PUT, "/v1/webhook-sources/globex-hooks", Some(takeover)).await.0, 404);
    let foreign = json!({"scheme": "github", "secrets": ["attacker-secret-1"], "tenant": "globex"});
    assert_eq!(call(&app, &a, Method::PUT, "/v1/webhook-sources/new-one", Some(foreign)).await.0, 400);
    assert_eq!(call(&app, &a, Method::DELETE, "/v1/webhook-sources/globex-hooks", None).await.0, 404);
    let kept = sluice::store::webhooks::get(&app.pool, "globex-hooks").await.unwrap().expect("still there");
    let sealer = sluice::secrets::Sealer::from_spec(app.settings.secrets.keys.expose()).unwrap();
    let secrets: Vec<String> = kept.secrets.iter().map(|s| sealer.open(s).unwrap()).collect();
    assert_eq!((kept.tenant.as_str(), secrets), ("globex", vec!["b-secret-123456".to_owned()]));

    // Operator routes are not an admin's.
    for (method, path) in [
        (Method::GET, "/v1/audit"),
        (Method::GET, "/v1/queues"),
        (Method::POST, "/v1/queues/work/pause"),
        (Method::POST, "/v1/queues/work/resume"),
    ] {
        let (s, body) = call(&app, &a, method, path, None).await;
        assert_eq!((s, body["error"]["required_scope"].as_str()), (403, Some("operator")), "{path}");
    }
    let login = app.http.post(format!("{}/dashboard/login", app.base)).form(&[("key", &a)]).send().await.unwrap();
    assert_eq!(login.status(), 403, "the dashboard is the operators'");

    // An operator key (the bootstrap key is one) reaches every tenant.
    let (s, seen) = call(&app, &app.key, Method::GET, &format!("/v1/dead-letters/{b_dead}"), None).await;
    assert_eq!((s, seen["tenant"].as_str()), (200, Some("globex")));
    let (_, sources) = call(&app, &app.key, Method::GET, "/v1/webhook-sources", None).await;
    assert_eq!(sources["sources"][0]["name"], "globex-hooks");
}
