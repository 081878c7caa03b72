//! API keys: every /v1 route needs one, scopes are enforced, tenants are isolated.

use crate::helpers::{spawn_app, spawn_app_with, Probe};
use serde_json::{json, Value};
use sluice::auth::create_key;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_route_answers_401_without_a_key() {
    let app = spawn_app().await;
    for (method, path) in [
        ("POST", "/v1/commands"),
        ("GET", "/v1/commands/01a20c09-b7b0-73bf-978d-390b095395d4"),
        ("GET", "/v1/accounts/a"),
        ("GET", "/v1/events"),
    ] {
        let req = app.http.request(method.parse().unwrap(), format!("{}{path}", app.base));
        let r = req.header("content-type", "application/json").body("{}").send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    assert_eq!(app.get("/healthz").await.status(), 200, "health needs no key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_malformed_key_is_a_401() {
    let app = spawn_app().await;
    let valid = create_key(&app.pool, "test", "acme", &["admin".into()]).await.unwrap();
    let tampered = format!("{}x", valid.key);
    for key in ["nonsense", "sk_0123456789ab_wrongsecret", tampered.as_str()] {
        let r = app.submit_as(key, "event.record", json!({"name": "n", "data": 1}), None).await;
        assert_eq!(r.status(), 401, "{key}");
    }
    let r = app.submit_as(&valid.key, "event.record", json!({"name": "n", "data": 1}), None).await;
    assert_eq!(r.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_the_needed_scope_is_a_403_naming_the_scope() {
    let app = spawn_app().await;
    let reader = create_key(&app.pool, "test", "acme", &["read".into()]).await.unwrap();
    let r = app.submit_as(&reader.key, "event.record", json!({"name": "n", "data": 1}), None).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["required_scope"], "submit");
    let submitter = create_key(&app.pool, "test", "acme", &["submit".into()]).await.unwrap();
    let r = app.http.get(format!("{}/v1/events", app.base)).bearer_auth(&submitter.key).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_working() {
    let app = spawn_app_with(|s| s.auth.cache_ttl_secs = 0, &Probe::default()).await;
    let k = create_key(&app.pool, "test", "acme", &["submit".into()]).await.unwrap();
    let payload = json!({"name": "n", "data": 1});
    assert_eq!(app.submit_as(&k.key, "event.record", payload.clone(), None).await.status(), 202);
    assert!(sluice::store::api_keys::revoke(&app.pool, &k.key_id).await.unwrap());
    assert_eq!(app.submit_as(&k.key, "event.record", payload, None).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_stored_hashed_never_in_the_clear() {
    let app = spawn_app().await;
    let k = create_key(&app.pool, "test", "acme", &["read,submit".into()]).await.unwrap();
    let (hash, scopes): (Vec<u8>, Vec<String>) =
        sqlx::query_as("SELECT key_hash, scopes FROM api_keys WHERE key_id = $1")
            .bind(&k.key_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(hash.len(), 32);
    assert!(!String::from_utf8_lossy(&hash).contains(&k.key));
    assert_eq!(scopes, vec!["read", "submit"]);
    assert!(create_key(&app.pool, "test", "acme", &["superuser".into()]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_only_its_own_accounts_events_and_commands() {
    let app = spawn_app().await;
    app.open_account("shared-name", 500).await;
    let id = app.accept("event.record", json!({"name": "secret", "data": {"x": 1}})).await;
    app.settled(id).await;
    let other = create_key(&app.pool, "test", "globex", &["read".into(), "submit".into()]).await.unwrap();
    let get = |path: String| app.http.get(format!("{}{path}", app.base)).bearer_auth(&other.key).send();
    assert_eq!(get("/v1/accounts/shared-name".into()).await.unwrap().status(), 404);
    let events: Value = get("/v1/events?name=secret".into()).await.unwrap().json().await.unwrap();
    assert_eq!(events["events"].as_array().unwrap().len(), 0);
    let status: Value = get(format!("/v1/commands/{id}")).await.unwrap().json().await.unwrap();
    assert_eq!(status["status"], "pending", "another tenant's command is unknown, not shown");
    assert!(status.get("result").is_none());
    // The same account id in another tenant is another account.
    let r = app
        .submit_as(&other.key, "account.open", json!({"account_id": "shared-name", "initial_balance_cents": 1}), None)
        .await;
    let cmd: Value = r.json().await.unwrap();
    let cmd = uuid::Uuid::parse_str(cmd["id"].as_str().unwrap()).unwrap();
    crate::helpers::eventually(crate::helpers::DEADLINE, || async {
        let v: Value = get(format!("/v1/commands/{cmd}")).await.unwrap().json().await.unwrap();
        (v["status"] == "succeeded").then_some(())
    })
    .await;
    assert_eq!(app.balance("shared-name").await, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_keys_from_one_address_are_throttled_with_429_without_a_lookup_and_valid_keys_still_work() {
    let app = spawn_app_with(|s| s.auth.max_failures = 5, &Probe::default()).await;
    let valid = create_key(&app.pool, "test", "acme", &["submit".into(), "read".into()]).await.unwrap();
    let cmd = json!({"name": "n", "data": 1});
    assert_eq!(app.submit_as(&valid.key, "event.record", cmd.clone(), None).await.status(), 202);
    for i in 0..5 {
        let wrong = format!("sk_0123456789ab_wrong{i}");
        assert_eq!(app.submit_as(&wrong, "event.record", cmd.clone(), None).await.status(), 401);
    }
    let lookups = app.metric("sluice_auth_lookups_total").await;
    for i in 0..20 {
        let wrong = format!("sk_0123456789ab_more{i}");
        let r = app.submit_as(&wrong, "event.record", cmd.clone(), None).await;
        assert_eq!(r.status(), 429, "attempt {i} past the bound");
        assert!(r.headers().contains_key("retry-after"));
    }
    assert_eq!(app.metric("sluice_auth_lookups_total").await, lookups, "no database lookup for throttled attempts");
    // Valid keys from the same address are unaffected: one that verified before, and the
    // bootstrap key.
    assert_eq!(app.submit_as(&valid.key, "event.record", cmd.clone(), None).await.status(), 202);
    assert_eq!(app.submit_as(&app.key, "event.record", cmd, None).await.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_creation_revocation_and_dashboard_logins_are_audited() {
    let app = spawn_app_with(|s| s.auth.max_failures = 2, &Probe::default()).await;
    let k = create_key(&app.pool, "cli:ops@host", "acme", &["admin".into()]).await.unwrap();
    assert!(sluice::auth::revoke_key(&app.pool, "cli:ops@host", &k.key_id).await.unwrap());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = |key: String| {
        let http = http.clone();
        let url = format!("{}/dashboard/login", app.base);
        async move { http.post(url).form(&[("key", key)]).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(login(app.key.clone()).await, 303);
    assert_eq!(login("wrong".into()).await, 401);
    assert_eq!(login("wrong".into()).await, 401);
    assert_eq!(login("wrong".into()).await, 429, "failed logins are throttled like failed keys");
    let entries: Vec<(String, String, String)> =
        sqlx::query_as("SELECT actor, action, target FROM audit_log ORDER BY id").fetch_all(&app.pool).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        actions,
        ["key.create", "key.revoke", "dashboard.login", "dashboard.login_failed", "dashboard.login_failed"],
        "{entries:?}"
    );
    assert_eq!((entries[0].0.as_str(), entries[0].2.as_str()), ("cli:ops@host", k.key_id.as_str()));
    assert_eq!(entries[3].2, "127.0.0.1", "a failed login names the client address");
}
