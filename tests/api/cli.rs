//! `sluice dlq`: the dead-letter operations from a shell, against the same database and broker.

use crate::helpers::{spawn_app, TestApp};
use serde_json::{json, Value};
use std::process::Command;

fn sluice(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    sluice_fed(app, args, "")
}

/// The binary against the app's database and broker, with `stdin` on its standard input.
fn sluice_fed(app: &TestApp, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_SECRETS_KEYS", app.settings.secrets.keys.expose())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env("SLUICE_ENV", "test")
        .env("SLUICE__DATABASE__URL", app.settings.database.url.expose())
        .env("SLUICE__BROKER__URL", app.settings.broker.url.expose())
        .env("SLUICE__BROKER__PREFIX", &app.settings.broker.prefix)
        .env("SLUICE__LOG__LEVEL", "warn")
        .spawn()
        .expect("the sluice binary runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin written");
    let out = child.wait_with_output().expect("the sluice binary ends");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_replays_with_an_edit_and_discards_dead_letters() {
    let app = spawn_app().await;
    let fixable = app.dead_event(1).await;
    let hopeless = app.dead_event(2).await;

    let (ok, out, err) = sluice(&app, &["dlq", "list", "--json"]);
    assert!(ok, "{err}");
    let listed: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 2);
    let id_of = |cmd| listed.iter().find(|d| d["command_id"] == json!(cmd)).unwrap()["id"].as_str().unwrap().to_owned();
    let (fix_id, drop_id) = (id_of(fixable), id_of(hopeless));

    let (ok, out, err) = sluice(&app, &["dlq", "show", &fix_id]);
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["payload"], json!({"data": {"marker": 1}}));

    let (ok, out, err) = sluice(&app, &["dlq", "replay", &fix_id, "--payload", r#"{"name": "cli", "data": 1}"#]);
    assert!(ok, "{err}");
    assert!(out.contains(&fixable.to_string()), "{out}");
    app.status_becomes(fixable, "succeeded").await;

    let (ok, _, err) = sluice(&app, &["dlq", "replay", &drop_id, "--payload", r#"{"name": 1}"#]);
    assert!(!ok, "a payload breaking the schema is refused");
    assert!(err.contains("schema"), "{err}");

    let (ok, _, err) = sluice(&app, &["dlq", "discard", &drop_id]);
    assert!(ok, "{err}");
    let (_, out, _) = sluice(&app, &["dlq", "list", "--json"]);
    assert_eq!(out.trim(), "", "nothing open is left");

    let audit = app.get_json("/v1/audit").await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["actor"].as_str().unwrap().starts_with("cli:")), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_lists_and_removes_webhook_sources() {
    let app = spawn_app().await;
    let (ok, out, err) = sluice(
        &app,
        &[
            "webhooks",
            "set",
            "gh",
            "--tenant",
            "acme",
            "--scheme",
            "github",
            "--secret",
            "first-secret",
            "--secret",
            "second-secret",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("/v1/webhooks/gh"), "{out}");
    let (ok, out, _) = sluice(&app, &["webhooks", "list"]);
    assert!(ok);
    assert!(out.contains("gh\tacme\tgithub\t2 secret(s)"), "{out}");
    assert!(!out.contains("first-secret"), "secrets are not printed");
    let (ok, _, err) =
        sluice(&app, &["webhooks", "set", "bad", "--tenant", "acme", "--scheme", "smoke", "--secret", "0123456789"]);
    assert!(!ok && err.contains("scheme"), "{err}");
    let (ok, _, err) = sluice(&app, &["webhooks", "remove", "gh"]);
    assert!(ok, "{err}");
    assert_eq!(app.get_json("/v1/webhook-sources").await["sources"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_webhook_secrets_from_a_file_or_stdin_and_stores_them_sealed() {
    let app = spawn_app().await;
    let file = std::env::temp_dir().join(format!("sluice-secrets-{}", uuid::Uuid::new_v4()));
    std::fs::write(&file, "file-secret-one\n\nfile-secret-two\n").unwrap();
    let path = file.display().to_string();
    let (ok, _, err) =
        sluice(&app, &["webhooks", "set", "gh", "--tenant", "acme", "--scheme", "github", "--secret-file", &path]);
    let _ = std::fs::remove_file(&file);
    assert!(ok, "{err}");
    let (ok, _, err) = sluice_fed(
        &app,
        &["webhooks", "set", "gh2", "--tenant", "acme", "--scheme", "github", "--secret-file", "-"],
        "stdin-secret-1\n",
    );
    assert!(ok, "{err}");
    let stored: Vec<Vec<String>> =
        sqlx::query_scalar("SELECT secrets FROM webhook_sources ORDER BY name").fetch_all(&app.pool).await.unwrap();
    assert_eq!(stored.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1], "one secret per non-blank line");
    assert!(stored.iter().flatten().all(|s| s.starts_with("sealed:v1:")), "{stored:?}");
    // The second line of the file verifies a delivery.
    use hmac::Mac;
    let body = br#"{"from": "file"}"#;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"file-secret-two").unwrap();
    mac.update(body);
    let r = app
        .http
        .post(format!("{}/v1/webhooks/gh", app.base))
        .header("x-github-delivery", "d-1")
        .header("x-hub-signature-256", format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_puts_lists_pauses_shows_and_deletes_schedules() {
    let app = spawn_app().await;
    let put = [
        "schedules",
        "put",
        "nightly",
        "--tenant",
        "acme",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Europe/Paris",
        "--type",
        "event.record",
        "--payload",
        r#"{"name": "nightly", "data": {}}"#,
    ];
    let (ok, out, err) = sluice(&app, &put);
    assert!(ok, "{err}");
    assert!(out.starts_with("created nightly\t0 3 * * *\tEurope/Paris\tevent.record\t"), "{out}");
    let (ok, out, _) = sluice(&app, &["schedules", "list"]);
    assert!(ok && out.contains("nightly"), "{out}");
    let (ok, out, err) = sluice(&app, &["schedules", "pause", "nightly", "--tenant", "acme"]);
    assert!(ok && out.trim_end().ends_with("paused"), "{out}{err}");
    let (ok, out, _) = sluice(&app, &["schedules", "show", "nightly", "--tenant", "acme"]);
    assert!(ok && !out.contains("next\t"), "a paused schedule has no next ticks: {out}");
    let (ok, _, err) = sluice(
        &app,
        &["schedules", "put", "bad", "--tenant", "acme", "--cron", "nope", "--type", "event.record", "--payload", "{}"],
    );
    assert!(!ok && err.contains("cron"), "{err}");
    let (ok, out, _) = sluice(&app, &["schedules", "delete", "nightly", "--tenant", "acme"]);
    assert!(ok && out.contains("deleted nightly"), "{out}");
    let audit = app.get_json("/v1/audit").await;
    let actor = audit["entries"][0]["actor"].as_str().unwrap_or_default().to_owned();
    assert!(actor.starts_with("cli:"), "{audit}");
}
