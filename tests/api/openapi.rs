//! `/openapi.json` cannot drift: its operations are exactly the served ones, and its payload
//! schemas are the files ingest validates against.

use crate::helpers::spawn_app;
use serde_json::Value;
use sluice::api::openapi::ROUTES;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_operations_the_router_serves() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
        .collect();
    let listed: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(documented, listed);
    for (method, path) in ROUTES {
        let url = format!(
            "{}{}",
            app.base,
            path.replace("{id}", &uuid::Uuid::now_v7().to_string()).replace("{name}", "x").replace("{source}", "x")
        );
        let r = app.http.request(method.to_uppercase().parse().unwrap(), url).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path} is not served");
        // The router's own 404 has no body; a handler's 404 says what is missing.
        assert!(status != 404 || body.contains("\"error\""), "{method} {path} is not served");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payload_schemas_are_the_ones_ingest_enforces() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let kind = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let mut schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        schema.as_object_mut().unwrap().remove("$schema");
        assert_eq!(doc["components"]["schemas"][format!("payload.{kind}")], schema, "{kind}");
        files += 1;
    }
    // The test harness registers test.* types of its own next to the shipped ones.
    let variants = doc["components"]["schemas"]["Command"]["oneOf"].as_array().unwrap();
    let shipped =
        variants.iter().filter(|v| !v["properties"]["type"]["const"].as_str().unwrap().starts_with("test.")).count();
    assert_eq!(shipped, files - 1, "one command variant per submittable schema (not webhook.received)");
}
