//! The operator dashboard: login and session cookie, CSRF, escaping, and — in headless
//! Chromium — an operator seeing a dead letter, fixing and replaying it, and seeing it succeed.

use crate::helpers::{spawn_app, TestApp};
use serde_json::json;
use sluice::auth::create_key;
use std::path::Path;
use std::process::Command;

/// A client that keeps cookies and does not follow redirects, like a browser we can inspect.
fn browser_like() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn login(app: &TestApp, http: &reqwest::Client, key: &str) -> reqwest::Response {
    http.post(format!("{}/dashboard/login", app.base)).form(&[("key", key)]).send().await.unwrap()
}

/// The CSRF token of a logged-in page (from its hidden form field).
async fn csrf_of(app: &TestApp, http: &reqwest::Client, path: &str) -> String {
    let html = http.get(format!("{}{path}", app.base)).send().await.unwrap().text().await.unwrap();
    let at = html.find("name=\"csrf\" value=\"").expect("a form with a CSRF field") + 19;
    html[at..at + 64].to_owned()
}

/// An operator signed in, and the id of an open dead letter (of an event with `marker`).
async fn signed_in_with_a_dead_letter(app: &TestApp, marker: i64) -> (reqwest::Client, String) {
    let id = app.dead_event(marker).await;
    let dl = app.dead_letter_of(id).await["id"].as_str().unwrap().to_owned();
    let http = browser_like();
    login(app, &http, &app.key).await;
    (http, dl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_needs_an_operator_login_and_sets_a_strict_http_only_session_cookie() {
    let app = spawn_app().await;
    let http = browser_like();
    let r = http.get(format!("{}/dashboard", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/dashboard/login");

    assert_eq!(login(&app, &http, "not-a-key").await.status(), 401);
    let reader = create_key(&app.pool, "test", "acme", &["read".into()]).await.unwrap();
    assert_eq!(login(&app, &http, &reader.key).await.status(), 403, "read keys do not open the dashboard");

    let r = login(&app, &http, &app.key).await;
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("sluice_session="), "{cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(cookie.contains(flag), "{flag} missing from {cookie}");
    }
    let page = http.get(format!("{}/dashboard", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM dashboard_sessions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored, 1);
    let token = cookie.trim_start_matches("sluice_session=").split(';').next().unwrap().to_owned();
    let in_clear: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dashboard_sessions WHERE encode(token_hash, 'hex') = $1")
            .bind(&token)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(in_clear, 0, "only the token's hash is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_without_the_session_csrf_token_is_refused_and_does_nothing() {
    let app = spawn_app().await;
    let (http, dl) = signed_in_with_a_dead_letter(&app, 3).await;
    let url = format!("{}/dashboard/dead-letters/{dl}/discard", app.base);
    let r = http.post(&url).form(&[("csrf", "0".repeat(64))]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.get_json(&format!("/v1/dead-letters/{dl}")).await["state"], "open");
    let csrf = csrf_of(&app, &http, &format!("/dashboard/dead-letters/{dl}")).await;
    let r = http.post(&url).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(app.get_json(&format!("/v1/dead-letters/{dl}")).await["state"], "discarded");
    let audit = app.get_json("/v1/audit").await;
    assert_eq!(audit["entries"][0]["actor"], "dashboard:key:bootstrap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_edited_in_the_dashboard_may_be_larger_than_a_single_commands_body_limit() {
    let app = spawn_app().await;
    let (http, dl) = signed_in_with_a_dead_letter(&app, 4).await;
    let csrf = csrf_of(&app, &http, &format!("/dashboard/dead-letters/{dl}")).await;
    // Six strings of 60,000 bytes: within the string limit, past the API's 256 KiB body limit.
    let data: serde_json::Map<String, serde_json::Value> =
        (0..6).map(|i| (format!("part{i}"), json!("x".repeat(60_000)))).collect();
    let payload = json!({"name": "fixed.large", "data": data}).to_string();
    assert!(payload.len() > 262_144, "{} bytes", payload.len());
    let url = format!("{}/dashboard/dead-letters/{dl}/replay", app.base);
    let r = http.post(&url).form(&[("csrf", csrf.as_str()), ("payload", payload.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(app.get_json(&format!("/v1/dead-letters/{dl}")).await["state"], "replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_messages_is_escaped_in_pages() {
    let app = spawn_app().await;
    let cmd =
        sluice::command::Envelope::new("acme", "event.record", json!({"data": "<script>alert(1)</script>"}), None);
    crate::retries::publish_raw(&app, &cmd.encode(), &cmd.id.to_string()).await;
    app.status_becomes(cmd.id, "dead").await;
    let dl = app.dead_letter_of(cmd.id).await["id"].as_str().unwrap().to_owned();
    let http = browser_like();
    login(&app, &http, &app.key).await;
    let html =
        http.get(format!("{}/dashboard/dead-letters/{dl}", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(!html.contains("<script>alert(1)"), "raw markup from a message reached the page");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_an_operator_sees_a_dead_letter_fixes_and_replays_it_and_sees_it_succeed() {
    let app = spawn_app().await;
    // An event.record with no name, published past the API: dead at once.
    let cmd = sluice::command::Envelope::new("acme", "event.record", json!({"data": {"order": 42}}), None);
    crate::retries::publish_raw(&app, &cmd.encode(), &cmd.id.to_string()).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let artifacts = root.join("target/browser-artifacts");
    let out = Command::new("node")
        .arg(root.join("tests/browser/dashboard.mjs"))
        .env("SLUICE_URL", &app.base)
        .env("SLUICE_ADMIN_KEY", &app.key)
        .env("DEAD_COMMAND_ID", cmd.id.to_string())
        .env("FIXED_PAYLOAD", r#"{"name": "order.placed", "data": {"order": 42}}"#)
        .env("SCREENSHOT_DIR", &artifacts)
        .output()
        .expect("node runs (scripts/test installs tests/browser's packages; .ci/run installs chromium)");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser test failed:\n{log}");
    assert!(artifacts.join("dashboard-replay.png").exists(), "the screenshot is kept as an artifact");
    let status = app.get_json(&format!("/v1/commands/{}", cmd.id)).await;
    assert_eq!(status["status"], "succeeded");
    let name: String =
        sqlx::query_scalar("SELECT name FROM events WHERE id = $1").bind(cmd.id).fetch_one(&app.pool).await.unwrap();
    assert_eq!(name, "order.placed", "the edited payload was applied");
    let audit = app.get_json("/v1/audit").await;
    assert_eq!(audit["entries"][0]["action"], "dead_letter.edit_replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_key_ends_its_dashboard_sessions() {
    let app = spawn_app().await;
    let operator = create_key(&app.pool, "test", "acme", &["operator".into()]).await.unwrap();
    let http = browser_like();
    assert_eq!(login(&app, &http, &operator.key).await.status(), 303);
    assert_eq!(http.get(format!("{}/dashboard", app.base)).send().await.unwrap().status(), 200);
    assert!(sluice::store::api_keys::revoke(&app.pool, &operator.key_id).await.unwrap());
    let r = http.get(format!("{}/dashboard", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/dashboard/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_page_lists_recent_batches_with_their_progress() {
    let app = spawn_app().await;
    let body = json!({"commands": [{"type": "event.record", "payload": {"name": "b", "data": 1}}]});
    let r: serde_json::Value = app.post_batch(body, None).await.json().await.unwrap();
    let id = r["id"].as_str().unwrap().to_owned();
    app.batch_finished(&id).await;
    let http = browser_like();
    login(&app, &http, &app.key).await;
    let html = http.get(format!("{}/dashboard/commands", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(html.contains(&format!("data-batch-id=\"{id}\"")), "the batch is listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cancels_a_scheduled_command_from_its_page_and_the_cancel_is_audited() {
    let app = spawn_app().await;
    let body = json!({"type": "event.record", "payload": {"name": "dash", "data": {}}, "delay_ms": 60_000});
    let r = app.http.post(format!("{}/v1/commands", app.base)).bearer_auth(&app.key).json(&body).send().await.unwrap();
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let http = browser_like();
    login(&app, &http, &app.key).await;
    let page = http.get(format!("{}/dashboard/commands/{id}", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("scheduled") && page.contains("data-cancel-command"), "{page}");
    let csrf = csrf_of(&app, &http, &format!("/dashboard/commands/{id}")).await;
    let url = format!("{}/dashboard/commands/{id}/cancel", app.base);
    assert_eq!(http.post(&url).form(&[("csrf", "0".repeat(64))]).send().await.unwrap().status(), 403);
    assert_eq!(app.get_json(&format!("/v1/commands/{id}")).await["status"], "scheduled");
    assert_eq!(http.post(&url).form(&[("csrf", csrf)]).send().await.unwrap().status(), 303);
    assert_eq!(app.get_json(&format!("/v1/commands/{id}")).await["status"], "cancelled");
    let page = http.get(format!("{}/dashboard/commands/{id}", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("data-cancel-command"), "no button once cancelled");
    let audit = app.get_json("/v1/audit").await;
    assert_eq!(
        (audit["entries"][0]["action"].as_str(), audit["entries"][0]["actor"].as_str()),
        (Some("command.cancel"), Some("dashboard:key:bootstrap"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_page_shows_next_ticks_and_outcomes_and_pauses_a_schedule() {
    let app = spawn_app().await;
    let body =
        json!({"cron": "* * * * * *", "command": {"type": "event.record", "payload": {"name": "dash", "data": {}}}});
    let r = app
        .http
        .put(format!("{}/v1/schedules/pulse", app.base))
        .bearer_auth(&app.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let http = browser_like();
    let page = format!("{}/dashboard/schedules", app.base);
    assert_eq!(http.get(&page).send().await.unwrap().status(), 303, "no session, no page");
    let tenant_key = create_key(&app.pool, "test", "globex", &["read".into(), "submit".into()]).await.unwrap();
    assert_eq!(login(&app, &http, &tenant_key.key).await.status(), 403, "a tenant's key does not open it");
    login(&app, &http, &app.key).await;
    let html = crate::helpers::eventually(crate::helpers::DEADLINE, || async {
        let html = http.get(&page).send().await.unwrap().text().await.unwrap();
        html.contains("badge succeeded").then_some(html)
    })
    .await;
    assert!(html.contains("data-schedule=\"pulse\"") && html.contains("* * * * * *"), "{html}");
    let csrf = csrf_of(&app, &http, "/dashboard/schedules").await;
    let url = format!("{}/dashboard/schedules/acme/pulse/pause", app.base);
    assert_eq!(http.post(&url).form(&[("csrf", csrf)]).send().await.unwrap().status(), 303);
    let s = app.get_json("/v1/schedules/pulse").await;
    assert_eq!(s["paused"], true, "{s}");
    let audit = app.get_json("/v1/audit").await;
    assert_eq!(audit["entries"][0]["actor"], "dashboard:key:bootstrap");
}
