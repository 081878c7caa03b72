//! The OpenAPI 3.1 document at `/openapi.json`, derived rather than written: utoipa builds each
//! operation from its handler's `#[utoipa::path]` and the request and response types the
//! handler serializes, and utoipa-axum registers the same lists of handlers as the router
//! (`api/mod.rs`), so the document cannot name an operation that is not served, nor miss one.
//! The command payload schemas are the registry's, put in at run time, so they are the ones
//! ingest enforces.

use super::error::ErrorBody;
use super::ApiState;
use crate::broker::Topology;
use crate::schemas::SchemaRegistry;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// The document's frame: info, the bearer scheme, and the schemas no operation names directly.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sluice",
        description = "HTTP ingest → RabbitMQ → pooled workers → Postgres, with retries, dead letters, batches \
                       and webhooks. Every operation but health, metrics, this document and webhook deliveries \
                       needs `Authorization: Bearer <key>`."
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    components(schemas(ErrorBody, CommandPlaceholder, BatchItemPlaceholder))
)]
pub struct Base;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let scheme = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        api.components.get_or_insert_with(Default::default).add_security_scheme("bearer", scheme);
    }
}

/// What every operation that takes an API key may answer besides its own outcomes.
#[derive(IntoResponses)]
pub enum KeyedErrors {
    /// Malformed request: the body says what is wrong and where.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// Missing, malformed or revoked API key.
    #[response(status = 401)]
    Unauthorized(#[to_schema] ErrorBody),
    /// The key lacks the scope the operation needs.
    #[response(status = 403)]
    Forbidden(#[to_schema] ErrorBody),
    /// The key's rate was exceeded, or too many failed keys came from this address; see
    /// Retry-After.
    #[response(status = 429, headers(("Retry-After" = u32, description = "Seconds to wait")))]
    TooMany(#[to_schema] ErrorBody),
    /// A dependency is unavailable or sluice is behind; see Retry-After. Code `unavailable`:
    /// nothing was published; `outcome_unknown` or `timeout`: a command may still be applied,
    /// so retry with the same Idempotency-Key.
    #[response(status = 503, headers(("Retry-After" = u32, description = "Seconds to wait")))]
    Unavailable(#[to_schema] ErrorBody),
}

/// What an operation without an API key may answer besides its own outcomes.
#[derive(IntoResponses)]
pub enum OpenErrors {
    /// The request was not answered in time, or sluice is still starting.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
}

/// Stands for the schema `Command`, which [`document`] replaces with one variant per
/// submittable command type.
#[derive(ToSchema)]
#[schema(as = Command)]
#[allow(dead_code)] // Only its schema is used.
pub struct CommandPlaceholder {
    r#type: String,
    payload: Value,
}

/// Stands for the schema `BatchItem`: a `Command` that may carry an `idempotency_key`.
#[derive(ToSchema)]
#[schema(as = BatchItem)]
#[allow(dead_code)] // Only its schema is used.
pub struct BatchItemPlaceholder {
    r#type: String,
    payload: Value,
}

/// `GET /openapi.json`: this API's document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = Object))
)]
pub async fn serve(State(state): State<ApiState>) -> Json<Value> {
    Json(super::api_document(&state.schemas, state.broker.topology()))
}

/// The derived document `api` with what only the running process knows put in: the command
/// payload schemas of `registry` (`payload.<type>` for each type, `Command` and `BatchItem` as
/// one variant per submittable type), the types a webhook source may make, and the names of
/// the queues that can be paused.
pub fn document(api: &utoipa::openapi::OpenApi, registry: &SchemaRegistry, topology: &Topology) -> Value {
    let mut doc = serde_json::to_value(api).unwrap_or_else(|_| json!({}));
    let pausable = json!(topology.consumed_queues());
    for verb in ["pause", "resume"] {
        let path = format!("/paths/~1v1~1queues~1{{name}}~1{verb}/post/parameters/0/schema");
        if let Some(schema) = doc.pointer_mut(&path).and_then(Value::as_object_mut) {
            schema.insert("enum".into(), pausable.clone());
        }
    }
    let mut variants = Vec::new();
    let mut items = Vec::new();
    let mut payloads = Map::new();
    for kind in registry.kinds() {
        let key = format!("payload.{kind}");
        let mut schema = registry.schema(kind).cloned().unwrap_or_else(|| json!({"type": "object"}));
        hoist_definitions(&key, &mut schema, &mut payloads);
        payloads.insert(key.clone(), schema);
        if registry.submittable(kind) {
            let variant = json!({
                "type": "object",
                "properties": {
                    "type": {"const": kind},
                    "payload": {"$ref": format!("#/components/schemas/{key}")},
                    "run_at": {"type": "string", "format": "date-time",
                               "description": "Publish at this time (RFC 3339), within scheduling.horizon_days"},
                    "delay_ms": {"type": "integer", "minimum": 0,
                                 "description": "Publish this many milliseconds from now"},
                    "priority": {"enum": ["high", "normal", "low"],
                                 "description": "Which work queue it travels in (default normal)"},
                    "ordering_key": {"type": "string", "minLength": 1, "maxLength": 255,
                                     "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
                                     "description": "Commands of the tenant with this key are applied one at a time, in the order accepted"},
                },
                "required": ["type", "payload"],
                "allOf": [
                    {"not": {"required": ["run_at", "delay_ms"]}},
                    {"not": {"required": ["ordering_key", "priority"],
                             "properties": {"priority": {"enum": ["high", "low"]}}}},
                ],
                "additionalProperties": false,
            });
            let mut item = variant.clone();
            item["properties"]["idempotency_key"] =
                json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"});
            variants.push(variant);
            items.push(item);
        }
    }
    let known = json!(registry.kinds());
    if let Some(kind) = doc.pointer_mut("/components/schemas/SourceBody/properties/command_type") {
        kind["enum"] = known;
    }
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        schemas.extend(payloads);
        schemas.insert("Command".into(), json!({"oneOf": variants}));
        schemas.insert("BatchItem".into(), json!({"oneOf": items}));
    }
    doc
}

/// A schema's own `$defs` (schemars puts nested types there) would resolve against the
/// document's root once embedded, so they move to `components/schemas` under `<key>.<name>`
/// and the references follow. The `$schema` dialect line goes: the document declares 3.1's.
fn hoist_definitions(key: &str, schema: &mut Value, out: &mut Map<String, Value>) {
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("$schema");
        for field in ["$defs", "definitions"] {
            if let Some(Value::Object(defs)) = obj.remove(field) {
                for (name, mut def) in defs {
                    hoist_definitions(key, &mut def, out);
                    out.insert(format!("{key}.{name}"), def);
                }
            }
        }
    }
    rewrite_refs(key, schema);
}

fn rewrite_refs(key: &str, v: &mut Value) {
    match v {
        Value::Object(obj) => {
            if let Some(Value::String(r)) = obj.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/$defs/").or_else(|| r.strip_prefix("#/definitions/")) {
                    *r = format!("#/components/schemas/{key}.{name}");
                }
            }
            obj.values_mut().for_each(|c| rewrite_refs(key, c));
        }
        Value::Array(items) => items.iter_mut().for_each(|c| rewrite_refs(key, c)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_definitions_move_to_components_and_their_references_follow() {
        let mut schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"line": {"$ref": "#/$defs/Line"}},
            "$defs": {"Line": {"type": "object", "properties": {"sku": {"type": "string"}}}}
        });
        let mut out = Map::new();
        hoist_definitions("payload.order.place", &mut schema, &mut out);
        assert_eq!(schema["properties"]["line"]["$ref"], "#/components/schemas/payload.order.place.Line");
        assert!(schema.get("$defs").is_none() && schema.get("$schema").is_none());
        assert_eq!(out["payload.order.place.Line"]["properties"]["sku"]["type"], "string");
    }
}
