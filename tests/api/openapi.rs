//! `/openapi.json` is derived from the router's own list of handlers; these tests hold it to the
//! API's contract: the operations it names are the ones below and are served, and its payload
//! schemas are the files ingest validates against.

use crate::helpers::spawn_app;
use serde_json::Value;
use std::collections::BTreeSet;

/// Every operation of the HTTP API (method, path). The dashboard's HTML pages are not API.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/commands"),
    ("post", "/v1/commands/{id}/cancel"),
    ("get", "/v1/commands/{id}"),
    ("get", "/v1/accounts/{id}"),
    ("get", "/v1/events"),
    ("post", "/v1/batches"),
    ("get", "/v1/batches/{id}"),
    ("post", "/v1/batches/{id}/cancel"),
    ("get", "/v1/dead-letters"),
    ("get", "/v1/dead-letters/groups"),
    ("post", "/v1/dead-letters/replay"),
    ("post", "/v1/dead-letters/discard"),
    ("get", "/v1/dead-letters/{id}"),
    ("post", "/v1/dead-letters/{id}/replay"),
    ("post", "/v1/dead-letters/{id}/discard"),
    ("get", "/v1/schedules"),
    ("put", "/v1/schedules/{name}"),
    ("get", "/v1/schedules/{name}"),
    ("delete", "/v1/schedules/{name}"),
    ("get", "/v1/audit"),
    ("get", "/v1/queues"),
    ("post", "/v1/queues/{name}/pause"),
    ("post", "/v1/queues/{name}/resume"),
    ("get", "/v1/webhook-sources"),
    ("put", "/v1/webhook-sources/{name}"),
    ("delete", "/v1/webhook-sources/{name}"),
    ("get", "/v1/webhooks/{source}/deliveries"),
    ("post", "/v1/webhooks/{source}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_api_s_operations_and_each_is_served() {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_and_error_body_is_described_by_a_named_schema() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in ["Error", "Accepted", "CommandView", "BatchAccepted", "BatchProgress", "DeadLetterPage", "Detail"] {
        assert!(schemas.contains_key(name), "components.schemas lacks {name}");
    }
    let status = &schemas["CommandStatus"]["enum"];
    assert_eq!(
        status,
        &serde_json::json!([
            "pending",
            "pruned",
            "scheduled",
            "processing",
            "succeeded",
            "rejected",
            "retrying",
            "dead",
            "cancelled"
        ])
    );
    // Every keyed operation documents the shared failures, each with the Error body.
    let submit = &doc["paths"]["/v1/commands"]["post"]["responses"];
    for code in ["202", "400", "401", "403", "413", "415", "422", "429", "503"] {
        assert!(submit.get(code).is_some(), "POST /v1/commands lacks {code}");
    }
    let unauthorized = &submit["401"]["content"]["application/json"]["schema"];
    assert!(
        unauthorized["$ref"] == "#/components/schemas/Error"
            || unauthorized["properties"]["error"]["$ref"] == "#/components/schemas/ErrorDetail",
        "a 401 is described by the Error body: {unauthorized}"
    );
    let refs = doc.to_string();
    for (i, _) in refs.match_indices("\"$ref\":\"") {
        let target = refs[i + 8..].split('"').next().unwrap();
        let name = target.strip_prefix("#/components/schemas/").expect("a local schema reference");
        assert!(schemas.contains_key(name), "dangling reference {target}");
    }
}
