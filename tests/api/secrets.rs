//! Secrets at rest: a dump of the database holds no webhook or callback secret in clear, and
//! `sluice secrets rotate` reseals every stored secret with the new first key.

use crate::helpers::{spawn_app, TestApp};
use serde_json::json;
use sluice::secrets::{generate_key, Sealer};

const CALLBACK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn store_some_secrets(app: &TestApp) {
    let source = json!({"scheme": "github", "secrets": ["gh-secret-one-1234", "gh-secret-two-5678"]});
    let r = app.http.put(format!("{}/v1/webhook-sources/gh", app.base)).bearer_auth(&app.key).json(&source);
    assert_eq!(r.send().await.unwrap().status(), 200);
    let batch = json!({"commands": [{"type": "event.record", "payload": {"name": "n", "data": 1}}],
                       "callback_url": "http://127.0.0.1:9/cb", "callback_secret": CALLBACK_SECRET});
    let r = app.http.post(format!("{}/v1/batches", app.base)).bearer_auth(&app.key).json(&batch);
    assert_eq!(r.send().await.unwrap().status(), 202);
}

fn db_name(app: &TestApp) -> String {
    app.settings.database.url.expose().rsplit('/').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_the_database_holds_no_webhook_or_callback_secret_in_clear() {
    let app = spawn_app().await;
    store_some_secrets(&app).await;
    let out = std::process::Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", "--data-only", &db_name(&app)])
        .output()
        .expect("pg_dump runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(dump.contains("sealed:v1:t1:"), "the secrets are in the dump, sealed");
    for secret in ["gh-secret-one-1234", "gh-secret-two-5678", CALLBACK_SECRET, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
        assert!(!dump.contains(secret), "{secret} is not in the dump in clear");
    }
    // And the source still works: a delivery signed with one of its secrets verifies.
    let body = br#"{"zen": "sealed"}"#;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"gh-secret-two-5678").unwrap();
    mac.update(body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let r = app
        .http
        .post(format!("{}/v1/webhooks/gh", app.base))
        .header("x-github-delivery", "d-1")
        .header("x-hub-signature-256", sig)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_reseals_every_stored_secret_with_the_new_first_key() {
    let app = spawn_app().await;
    store_some_secrets(&app).await;
    // One source stored before keys were configured: in clear.
    sqlx::query(
        "INSERT INTO webhook_sources (name, tenant, scheme, secrets, tolerance_secs, command_type)
                 VALUES ('old', 'acme', 'github', ARRAY['clear-secret-9999'], 300, 'webhook.received')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let keys = format!("{},{}", generate_key("t2"), app.settings.secrets.keys.expose());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["secrets", "rotate"])
        .env("SLUICE_ENV", "test")
        .env("SLUICE__DATABASE__URL", app.settings.database.url.expose())
        .env("SLUICE__BROKER__URL", app.settings.broker.url.expose())
        .env("SLUICE__BROKER__PREFIX", &app.settings.broker.prefix)
        .env("SLUICE_SECRETS_KEYS", &keys)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("resealed 4, already current 0"), "{stdout}");
    let sealer = Sealer::from_spec(&keys).unwrap();
    let sources: Vec<(String, Vec<String>)> =
        sqlx::query_as("SELECT name, secrets FROM webhook_sources ORDER BY name").fetch_all(&app.pool).await.unwrap();
    let mut opened = Vec::new();
    for (_, secrets) in &sources {
        for s in secrets {
            assert!(s.starts_with("sealed:v1:t2:"), "{s}");
            opened.push(sealer.open(s).unwrap());
        }
    }
    assert_eq!(opened, ["gh-secret-one-1234", "gh-secret-two-5678", "clear-secret-9999"]);
    let callback: String =
        sqlx::query_scalar("SELECT callback_secret FROM batches").fetch_one(&app.pool).await.unwrap();
    assert_eq!(sealer.open(&callback).unwrap(), CALLBACK_SECRET);
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'secrets.rotate'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(audited, 1);
}

#[test]
fn types_holding_secrets_do_not_show_them_in_debug() {
    let source = sluice::store::webhooks::Source {
        name: "s".into(),
        tenant: "t".into(),
        scheme: "github".into(),
        secrets: vec!["do-not-print-me".into()],
        tolerance_secs: 300,
        command_type: "webhook.received".into(),
        signature_header: None,
        id_header: None,
    };
    assert!(!format!("{source:?}").contains("do-not-print-me"));
    let secret = sluice::config::Secret::new("do-not-print-me");
    assert!(!format!("{secret:?}").contains("do-not-print-me"));
    let entry = generate_key("k1");
    let sealer = Sealer::from_spec(&entry).unwrap();
    let shown = format!("{sealer:?}");
    assert!(shown.contains("k1") && !shown.contains(entry.split_once(':').unwrap().1), "{shown}");
}
