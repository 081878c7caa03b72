//! The OpenAPI 3.1 document served at `/openapi.json`. It is built here, next to the router,
//! with the command payload schemas taken from the registry (so they cannot drift from what
//! ingest enforces); a test checks its operations against [`ROUTES`], and that every one of
//! those is served.

use super::ApiState;
use crate::schemas::SchemaRegistry;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};

/// Every operation of the HTTP API (method, path). The dashboard's HTML pages are not API and
/// are left out.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/commands"),
    ("get", "/v1/commands/{id}"),
    ("get", "/v1/accounts/{id}"),
    ("get", "/v1/events"),
    ("post", "/v1/batches"),
    ("get", "/v1/batches/{id}"),
    ("get", "/v1/dead-letters"),
    ("get", "/v1/dead-letters/groups"),
    ("post", "/v1/dead-letters/replay"),
    ("post", "/v1/dead-letters/discard"),
    ("get", "/v1/dead-letters/{id}"),
    ("post", "/v1/dead-letters/{id}/replay"),
    ("post", "/v1/dead-letters/{id}/discard"),
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

/// `GET /openapi.json`
pub async fn serve(State(state): State<ApiState>) -> Json<Value> {
    Json(document(&state.schemas))
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The error statuses any authenticated operation may answer.
fn errors(extra: &[(&str, &str)]) -> Map<String, Value> {
    let mut m = Map::new();
    for (code, why) in [
        ("400", "Malformed request: the body says what is wrong and where"),
        ("401", "Missing, malformed or revoked API key"),
        ("403", "The key lacks the needed scope"),
        ("429", "Rate limit of the key exceeded, or too many failed keys from this address; see Retry-After"),
        (
            "503",
            "A dependency is unavailable or sluice is behind; see Retry-After. Code `unavailable`: nothing was \
             published; `outcome_unknown`: the command may still be applied, so retry with the same Idempotency-Key",
        ),
    ]
    .iter()
    .chain(extra)
    {
        m.insert((*code).to_owned(), error_response(why));
    }
    m
}

fn op(
    summary: &str,
    scope: Option<&str>,
    params: Value,
    body: Option<Value>,
    success: (&str, Value),
    extra: &[(&str, &str)],
) -> Value {
    let mut responses = errors(&[]);
    if scope.is_none() {
        responses.remove("401");
        responses.remove("403");
        responses.remove("429");
    }
    for (code, why) in extra {
        responses.insert((*code).to_owned(), error_response(why));
    }
    responses.insert(success.0.to_owned(), success.1);
    let mut o = json!({"summary": summary, "parameters": params, "responses": responses});
    match scope {
        Some(s) => {
            o["security"] = json!([{"bearer": []}]);
            let description = match s {
                "operator" => "Needs an API key with the `operator` scope; it acts across tenants.".to_owned(),
                "admin" => "Needs an API key with the `admin` scope (or `operator`); an admin key reaches its own \
                            tenant's dead letters and webhook sources only, an operator key every tenant's."
                    .to_owned(),
                s => format!("Needs an API key with the `{s}` scope (or `admin` or `operator`)."),
            };
            o["description"] = json!(description);
        }
        None => o["security"] = json!([]),
    }
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn path_param(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

fn query(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema})
}

fn json_body(schema: Value, required: bool) -> Value {
    json!({"required": required, "content": {"application/json": {"schema": schema}}})
}

fn any_object() -> Value {
    json!({"type": "object"})
}

/// The whole document.
pub fn document(registry: &SchemaRegistry) -> Value {
    let uuid = json!({"type": "string", "format": "uuid"});
    let id = || path_param("id", uuid.clone());
    let name = |n: &str| path_param(n, json!({"type": "string", "minLength": 1}));
    let limit = |max: i64| query("limit", json!({"type": "integer", "minimum": 1, "maximum": max}));
    let cursor = query("cursor", json!({"type": "string"}));
    let time = json!({"type": "string", "format": "date-time"});
    let idem = json!({"name": "Idempotency-Key", "in": "header", "required": false,
                      "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}});

    let mut payloads = Map::new();
    let mut commands = Vec::new();
    for kind in registry.kinds() {
        let mut schema = registry.schema(kind).cloned().unwrap_or_else(any_object);
        if let Some(obj) = schema.as_object_mut() {
            obj.remove("$schema");
        }
        let key = format!("payload.{kind}");
        payloads.insert(key.clone(), schema);
        if !registry.submittable(kind) {
            continue;
        }
        commands.push(json!({
            "type": "object",
            "properties": {"type": {"const": kind}, "payload": {"$ref": format!("#/components/schemas/{key}")}},
            "required": ["type", "payload"],
            "additionalProperties": false,
        }));
    }
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "location": {"type": "string"},
            "violations": {"type": "array", "items": {"$ref": "#/components/schemas/Violation"}},
            "limit_bytes": {"type": "integer"}, "required_scope": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object"}}
        }}}}),
    );
    schemas.insert(
        "Violation".into(),
        json!({"type": "object", "required": ["path", "message"], "properties": {"path": {"type": "string"}, "message": {"type": "string"}}}),
    );
    schemas.insert("Command".into(), json!({"oneOf": commands}));
    schemas.extend(payloads);
    schemas.insert(
        "CommandStatus".into(),
        json!({"type": "object", "required": ["id", "status"], "properties": {
            "id": uuid, "status": {"enum": ["pending", "pruned", "processing", "succeeded", "rejected", "retrying", "dead"]},
            "type": {"type": "string"}, "attempts": {"type": "integer"}, "last_error": {"type": ["string", "null"]},
            "result": {}, "errors": {"type": "array"}}}),
    );

    let accepted = json!({"type": "object", "required": ["id", "status", "status_url"],
                          "properties": {"id": uuid, "status": {"const": "accepted"}, "status_url": {"type": "string"}}});
    let page = |key: &str| json!({"type": "object", "required": [key], "properties": {key: {"type": "array", "items": {"type": "object"}}, "next_cursor": {"type": ["string", "null"]}}});
    let filter = json!({"type": "object", "additionalProperties": false, "properties": {
        "state": {"enum": ["open", "replayed", "discarded"]}, "command_type": {"type": "string"},
        "tenant": {"type": "string"}, "error_kind": {"type": "string"}, "error": {"type": "string"},
        "fingerprint": {"type": "string"}, "since": time, "until": time}});
    let bulk = |rate: bool| {
        let mut p = json!({"filter": filter, "limit": {"type": "integer", "minimum": 1, "maximum": 10000}});
        if rate {
            p["rate_per_second"] = json!({"type": "number", "exclusiveMinimum": 0});
        }
        json!({"type": "object", "additionalProperties": false, "properties": p})
    };
    let none = json!([]);

    let mut paths = Map::new();
    let mut add = |method: &str, path: &str, operation: Value| {
        let entry = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        entry[method] = operation;
    };
    add(
        "post",
        "/v1/commands",
        op(
            "Submit a command (202 once RabbitMQ confirmed it)",
            Some("submit"),
            json!([idem]),
            Some(
                json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Command"}}}}),
            ),
            ("202", ok("Accepted and durable", accepted.clone())),
            &[("413", "Body too large"), ("415", "Not JSON"), ("422", "Unknown type or invalid payload")],
        ),
    );
    add(
        "get",
        "/v1/commands/{id}",
        op(
            "A command's status",
            Some("read"),
            json!([id()]),
            None,
            ("200", ok("Status", json!({"$ref": "#/components/schemas/CommandStatus"}))),
            &[],
        ),
    );
    add(
        "get",
        "/v1/accounts/{id}",
        op(
            "An account's balance",
            Some("read"),
            json!([name("id")]),
            None,
            (
                "200",
                ok(
                    "Account",
                    json!({"type": "object", "required": ["id", "balance_cents"], "properties": {"id": {"type": "string"}, "balance_cents": {"type": "integer"}}}),
                ),
            ),
            &[("404", "No such account")],
        ),
    );
    add(
        "get",
        "/v1/events",
        op(
            "Events by name and time range, oldest first",
            Some("read"),
            json!([
                query("name", json!({"type": "string"})),
                query("from", time.clone()),
                query("to", time.clone()),
                limit(1000),
                cursor.clone()
            ]),
            None,
            ("200", ok("A page", page("events"))),
            &[],
        ),
    );
    add(
        "post",
        "/v1/batches",
        op(
            "Submit up to batches.max_commands commands (JSON or NDJSON)",
            Some("submit"),
            json!([idem]),
            Some(json!({"required": true, "content": {
            "application/json": {"schema": {"type": "object", "required": ["commands"], "additionalProperties": false, "properties": {
                "commands": {"type": "array", "items": {"type": "object"}}, "all_or_nothing": {"type": "boolean"},
                "callback_url": {"type": "string"}, "callback_secret": {"type": "string"}}}},
            "application/x-ndjson": {"schema": {"type": "string"}}}})),
            (
                "202",
                ok(
                    "Accepted (valid items published)",
                    json!({"type": "object", "required": ["id", "accepted"], "properties": {
            "id": uuid, "accepted": {"type": "integer"}, "rejected": {"type": "array"}, "not_published": {"type": "array"}}}),
                ),
            ),
            &[
                ("413", "Body too large"),
                ("415", "Neither JSON nor NDJSON"),
                ("422", "Every item (or, all or nothing, one) is invalid"),
            ],
        ),
    );
    add(
        "get",
        "/v1/batches/{id}",
        op(
            "A batch's progress",
            Some("read"),
            json!([id()]),
            None,
            (
                "200",
                ok(
                    "Progress",
                    json!({"type": "object", "required": ["id", "total", "pending", "succeeded", "rejected", "dead"]}),
                ),
            ),
            &[("404", "No such batch")],
        ),
    );
    add(
        "get",
        "/v1/dead-letters",
        op(
            "Dead letters, newest first",
            Some("admin"),
            json!([
                query("state", json!({"enum": ["open", "replayed", "discarded"]})),
                query("command_type", json!({"type": "string"})),
                query("tenant", json!({"type": "string"})),
                query("error_kind", json!({"type": "string"})),
                query("error", json!({"type": "string"})),
                query("fingerprint", json!({"type": "string"})),
                query("since", time.clone()),
                query("until", time.clone()),
                limit(500),
                cursor.clone()
            ]),
            None,
            ("200", ok("A page", page("dead_letters"))),
            &[],
        ),
    );
    add(
        "get",
        "/v1/dead-letters/groups",
        op(
            "Groups of open dead letters by cause",
            Some("admin"),
            json!([limit(500)]),
            None,
            (
                "200",
                ok(
                    "Groups",
                    json!({"type": "object", "required": ["groups"], "properties": {"groups": {"type": "array"}}}),
                ),
            ),
            &[],
        ),
    );
    add(
        "post",
        "/v1/dead-letters/replay",
        op(
            "Replay open dead letters by filter (resumable)",
            Some("admin"),
            none.clone(),
            Some(json_body(bulk(true), true)),
            ("200", ok("What was done", any_object())),
            &[("413", "Body too large"), ("415", "Not JSON"), ("409", "Stopped")],
        ),
    );
    add(
        "post",
        "/v1/dead-letters/discard",
        op(
            "Discard open dead letters by filter",
            Some("admin"),
            none.clone(),
            Some(json_body(bulk(false), true)),
            ("200", ok("What was done", any_object())),
            &[("413", "Body too large"), ("415", "Not JSON"), ("409", "Stopped")],
        ),
    );
    add(
        "get",
        "/v1/dead-letters/{id}",
        op(
            "One dead letter with payload, headers and attempt errors",
            Some("admin"),
            json!([id()]),
            None,
            ("200", ok("The dead letter", any_object())),
            &[("404", "No such dead letter")],
        ),
    );
    add(
        "post",
        "/v1/dead-letters/{id}/replay",
        op(
            "Replay one dead letter, optionally with an edited payload",
            Some("admin"),
            json!([id()]),
            Some(json_body(
                json!({"type": "object", "additionalProperties": false, "properties": {"payload": {"type": "object"}}}),
                false,
            )),
            ("202", ok("Republished", any_object())),
            &[
                ("404", "No such dead letter"),
                ("409", "Discarded, or not a command"),
                ("413", "Body too large"),
                ("415", "Not JSON"),
                ("422", "Edited payload breaks the schema"),
            ],
        ),
    );
    add(
        "post",
        "/v1/dead-letters/{id}/discard",
        op(
            "Discard one open dead letter",
            Some("admin"),
            json!([id()]),
            None,
            ("200", ok("Discarded", any_object())),
            &[("404", "No such dead letter"), ("409", "Not open")],
        ),
    );
    add(
        "get",
        "/v1/audit",
        op(
            "The audit log, newest first",
            Some("operator"),
            json!([query("before", json!({"type": "integer"})), limit(1000)]),
            None,
            (
                "200",
                ok(
                    "Entries",
                    json!({"type": "object", "required": ["entries"], "properties": {"entries": {"type": "array"}}}),
                ),
            ),
            &[],
        ),
    );
    add(
        "get",
        "/v1/queues",
        op(
            "Queues with depth, consumers and pause state",
            Some("operator"),
            none.clone(),
            None,
            (
                "200",
                ok(
                    "Queues",
                    json!({"type": "object", "required": ["queues"], "properties": {"queues": {"type": "array"}}}),
                ),
            ),
            &[],
        ),
    );
    for (verb, what) in [("pause", "Pause"), ("resume", "Resume")] {
        add(
            "post",
            &format!("/v1/queues/{{name}}/{verb}"),
            op(
                &format!("{what} consumption of a queue"),
                Some("operator"),
                json!([name("name")]),
                None,
                ("200", ok("Done", any_object())),
                &[],
            ),
        );
    }
    add(
        "get",
        "/v1/webhook-sources",
        op(
            "Webhook sources (without secrets)",
            Some("admin"),
            none.clone(),
            None,
            (
                "200",
                ok(
                    "Sources",
                    json!({"type": "object", "required": ["sources"], "properties": {"sources": {"type": "array"}}}),
                ),
            ),
            &[],
        ),
    );
    add(
        "put",
        "/v1/webhook-sources/{name}",
        op(
            "Create or replace a webhook source",
            Some("admin"),
            json!([name("name")]),
            Some(json_body(
                json!({"type": "object", "required": ["scheme", "secrets"], "additionalProperties": false, "properties": {
            "scheme": {"enum": ["standard", "github", "stripe", "hmac"]}, "secrets": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "tenant": {"type": "string"}, "tolerance_secs": {"type": "integer"}, "command_type": {"type": "string"},
            "signature_header": {"type": "string"}, "id_header": {"type": "string"}}}),
                true,
            )),
            ("200", ok("Saved", any_object())),
            &[("413", "Body too large"), ("415", "Not JSON")],
        ),
    );
    add(
        "delete",
        "/v1/webhook-sources/{name}",
        op(
            "Remove a webhook source",
            Some("admin"),
            json!([name("name")]),
            None,
            ("200", ok("Removed", any_object())),
            &[("404", "No such source")],
        ),
    );
    add(
        "get",
        "/v1/webhooks/{source}/deliveries",
        op(
            "Deliveries of a source, verified or not",
            Some("admin"),
            json!([name("source"), limit(500), cursor]),
            None,
            ("200", ok("A page", page("deliveries"))),
            &[],
        ),
    );
    add(
        "post",
        "/v1/webhooks/{source}",
        op(
            "Receive a webhook (authenticated by its signature, not an API key)",
            None,
            json!([name("source")]),
            Some(json!({"required": false, "content": {"*/*": {"schema": {}}}})),
            ("200", ok("Durable in RabbitMQ", any_object())),
            &[
                ("401", "Signature missing, wrong or stale"),
                ("404", "No such source"),
                ("413", "Body too large"),
                ("422", "Not a valid command for the source"),
                ("429", "Too many deliveries from this address or to this source; see Retry-After"),
            ],
        ),
    );
    let plain = |d: &str| json!({"description": d, "content": {"application/json": {"schema": any_object()}}});
    add(
        "get",
        "/healthz",
        json!({"summary": "Alive", "security": [], "responses": {"200": plain("The process answers")}}),
    );
    add(
        "get",
        "/readyz",
        json!({"summary": "Broker and database reachable", "security": [], "responses": {"200": plain("Ready"), "503": plain("Not ready")}}),
    );
    add(
        "get",
        "/metrics",
        json!({"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}}}),
    );
    add(
        "get",
        "/openapi.json",
        json!({"summary": "This document", "security": [], "responses": {"200": plain("OpenAPI 3.1")}}),
    );

    json!({
        "openapi": "3.1.0",
        "info": {"title": "sluice", "version": env!("CARGO_PKG_VERSION"),
                 "description": "HTTP ingest → RabbitMQ → pooled workers → Postgres, with retries, dead letters, batches and webhooks."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    })
}
