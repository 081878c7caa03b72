//! Declared types at start-up (every problem refused, one line each) and where operators and
//! producers see them: /openapi.json and the dashboard's list of types.

use crate::declared_http::SECRET;
use crate::helpers::{commands_dir, declare, spawn_app_with, test_settings, Probe};
use sluice::app::{Application, Catalog, Roles};
use sluice::auth::create_key;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_bad_declarations_with_one_line_per_problem() {
    let dir = commands_dir();
    std::fs::write(dir.join("bad.schema.json"), r#"{"type": 7}"#).unwrap();
    std::fs::write(dir.join("broken.toml"), "type = \"broken\nschema").unwrap();
    declare(&dir, "event.record", "[sql]\nfunction = \"record\"");
    declare(&dir, "order.place", "[http]\nurl = \"http://127.0.0.1:9/x\"\nsecret_env = \"SLUICE_TEST_UNSET_SECRET\"");
    std::fs::write(
        dir.join("crm.sync.toml"),
        "type = \"crm.sync\"\nschema = \"bad.schema.json\"\n[sql]\nfunction = \"f\"\n",
    )
    .unwrap();
    let (mut settings, _) = test_settings();
    settings.commands.dir = dir;
    let err = Application::build(settings, Roles::All, Catalog::builtin().unwrap()).await.err().expect("refused");
    let text = format!("{err:#}");
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("broken.toml: is not a valid declaration"), "{text}");
    assert!(lines[1].starts_with("crm.sync.toml: schema \"bad.schema.json\" does not compile"), "{text}");
    assert!(lines[2].starts_with("order.place.toml: http.secret_env names \"SLUICE_TEST_UNSET_SECRET\""), "{text}");
    assert!(lines[3].starts_with("event.record.toml: type \"event.record\" is already a built-in"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_name_that_is_built_in_or_a_function_that_does_not_exist_stops_start_up() {
    let dir = commands_dir();
    declare(&dir, "event.record", "[sql]\nfunction = \"record\"");
    let (mut settings, _) = test_settings();
    settings.commands.dir = dir.clone();
    let err = Application::build(settings, Roles::All, Catalog::builtin().unwrap()).await.err().expect("refused");
    assert!(
        format!("{err:#}").contains("event.record.toml: type \"event.record\" is already a built-in command type"),
        "{err:#}"
    );

    std::fs::remove_file(dir.join("event.record.toml")).unwrap();
    declare(&dir, "invoice.apply", "[sql]\nfunction = \"billing.apply_invoice\"");
    let (mut settings, db_name) = test_settings();
    settings.commands.dir = dir;
    crate::helpers::create_database(&db_name).await;
    let err =
        Application::build(settings.clone(), Roles::All, Catalog::builtin().unwrap()).await.err().expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("invoice.apply.toml: function billing.apply_invoice(jsonb, uuid, text) does not exist"),
        "{text}"
    );
    crate::helpers::remove_test_resources(&settings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sluice_binary_exits_non_zero_naming_each_bad_declaration() {
    let dir = commands_dir();
    declare(&dir, "order.place", "[http]\nurl = \"ftp://x\"\nsecret = \"whsec_short\"");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .env("SLUICE_ENV", "test")
        .env("SLUICE__HTTP__ADDR", "127.0.0.1:0")
        .env("SLUICE__COMMANDS__DIR", &dir)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("order.place.toml: http.url \"ftp://x\" must be an http or https URL"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_types_are_in_openapi_and_on_the_dashboard_for_operators_only() {
    let dir = commands_dir();
    std::fs::write(
        dir.join("order.schema.json"),
        r#"{"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string", "title": "Stock keeping unit"}}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("order.place.toml"),
        format!("type = \"order.place\"\nschema = \"order.schema.json\"\n[retry]\nmax_attempts = 9\n[http]\nurl = \"http://127.0.0.1:9/x\"\nsecret = \"{SECRET}\"\n"),
    )
    .unwrap();
    let app = spawn_app_with(|s| s.commands.dir = dir, &Probe::default()).await;

    let doc = app.get_json("/openapi.json").await;
    let schema = &doc["components"]["schemas"]["payload.order.place"];
    assert_eq!(schema["properties"]["sku"]["title"], "Stock keeping unit", "{schema}");
    let r = app.submit("order.place", serde_json::json!({"sku": 7})).await;
    assert_eq!(r.status(), 422, "validated at the edge like any type");

    let http =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = format!("{}/dashboard/types", app.base);
    assert_eq!(http.get(&page).send().await.unwrap().status(), 303, "no session, no page");
    let reader = create_key(&app.pool, "other", "globex", &["read".into(), "submit".into()]).await.unwrap();
    let login = |key: String| {
        let http = http.clone();
        let url = format!("{}/dashboard/login", app.base);
        async move { http.post(url).form(&[("key", key)]).send().await.unwrap().status() }
    };
    assert_eq!(login(reader.key.clone()).await, 403, "a tenant's key does not open the dashboard");
    assert_eq!(http.get(&page).send().await.unwrap().status(), 303);
    assert_eq!(login(app.key.clone()).await, 303);
    let html = http.get(&page).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("order.place") && html.contains("HTTP POST http://127.0.0.1:9/x"), "{html}");
    assert!(html.contains("9 attempts"), "{html}");
    assert!(html.contains("Stock keeping unit"), "the schema is shown");
    assert!(html.contains("event.record") && html.contains("Rust handler"), "built-in types too");
}
