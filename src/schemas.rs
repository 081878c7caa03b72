use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Longest error message kept per violation; schema errors can quote large values.
const MAX_MESSAGE: usize = 300;
/// Most violations reported for one payload.
const MAX_VIOLATIONS: usize = 20;

/// Compiled payload schemas, one per command type.
#[derive(Default)]
pub struct SchemaRegistry {
    validators: HashMap<String, jsonschema::Validator>,
    documents: HashMap<String, Value>,
    /// Types made by sluice itself, never accepted from producers.
    internal: HashSet<String>,
}

/// One way a payload breaks its schema.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Violation {
    /// JSON pointer into the request body, e.g. `/payload/amount_cents`.
    pub path: String,
    pub message: String,
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("unknown command type {0:?}")]
    UnknownType(String),
    #[error("payload does not match the schema of {kind:?}")]
    Invalid { kind: String, violations: Vec<Violation> },
}

/// A command type's schema that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("schema for {kind:?} is invalid: {reason}")]
pub struct SchemaError {
    kind: String,
    reason: String,
}

impl SchemaError {
    /// The schema of `kind` is unusable because of `reason`.
    pub fn new(kind: &str, reason: impl Into<String>) -> Self {
        Self { kind: kind.to_owned(), reason: reason.into() }
    }
}

impl SchemaRegistry {
    /// Compiles and adds the schema of a command type; `submittable` is false for types only
    /// sluice itself makes.
    pub fn register(&mut self, kind: &str, schema: Value, submittable: bool) -> Result<(), SchemaError> {
        let validator = compile(&schema).map_err(|e| SchemaError::new(kind, e))?;
        self.validators.insert(kind.to_owned(), validator);
        self.documents.insert(kind.to_owned(), schema);
        if !submittable {
            self.internal.insert(kind.to_owned());
        }
        Ok(())
    }

    /// Whether producers may submit `kind` themselves; `webhook.received` is made only from a
    /// verified delivery, so no key can forge one.
    pub fn submittable(&self, kind: &str) -> bool {
        self.knows(kind) && !self.internal.contains(kind)
    }

    /// The JSON Schema of `kind`, as registered.
    pub fn schema(&self, kind: &str) -> Option<&Value> {
        self.documents.get(kind)
    }

    /// Whether `kind` is a known command type.
    pub fn knows(&self, kind: &str) -> bool {
        self.validators.contains_key(kind)
    }

    /// The known command types, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.validators.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }

    /// Checks `payload` against the schema of `kind`; paths are reported under `/payload`.
    pub fn validate(&self, kind: &str, payload: &Value) -> Result<(), PayloadError> {
        let validator = self.validators.get(kind).ok_or_else(|| PayloadError::UnknownType(kind.to_owned()))?;
        let violations: Vec<Violation> = validator
            .iter_errors(payload)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation { path: format!("/payload{}", e.instance_path), message: truncate(e.to_string()) })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(PayloadError::Invalid { kind: kind.to_owned(), violations })
        }
    }
}

/// Compiles a payload schema as the registry does (formats are checked), or says why not.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options().should_validate_formats(true).build(schema).map_err(|e| e.to_string())
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn builtin() -> SchemaRegistry {
        crate::app::Catalog::builtin().unwrap().schemas
    }

    #[test]
    fn every_shipped_schema_compiles() {
        let r = builtin();
        assert_eq!(r.kinds(), vec!["account.open", "event.record", "ledger.transfer", "webhook.received"]);
        assert!(!r.submittable("webhook.received"));
    }

    #[test]
    fn a_transfer_without_amount_names_the_missing_field() {
        let r = builtin();
        let err = r.validate("ledger.transfer", &json!({"from": "a", "to": "b"})).unwrap_err();
        let PayloadError::Invalid { violations, .. } = err else { panic!("expected Invalid") };
        assert!(violations[0].message.contains("amount_cents"), "{violations:?}");
    }

    #[test]
    fn a_wrongly_typed_field_is_reported_at_its_path() {
        let r = builtin();
        let err = r.validate("ledger.transfer", &json!({"from": "a", "to": "b", "amount_cents": "ten"})).unwrap_err();
        let PayloadError::Invalid { violations, .. } = err else { panic!("expected Invalid") };
        assert_eq!(violations[0].path, "/payload/amount_cents");
    }

    #[test]
    fn an_event_time_must_be_a_date_time() {
        let r = builtin();
        assert!(r.validate("event.record", &json!({"name": "n", "data": {}, "time": "yesterday"})).is_err());
        assert!(r.validate("event.record", &json!({"name": "n", "data": {}, "time": "2026-01-01T00:00:00Z"})).is_ok());
    }

    #[test]
    fn an_unknown_type_is_its_own_error() {
        let r = builtin();
        assert!(matches!(r.validate("nope", &json!({})), Err(PayloadError::UnknownType(_))));
    }
}
