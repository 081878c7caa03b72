use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// The shipped command types and their payload schemas (one line per type).
const BUILTIN: &[(&str, &str)] = &[
    ("account.open", include_str!("../schemas/account.open.json")),
    ("ledger.transfer", include_str!("../schemas/ledger.transfer.json")),
    ("event.record", include_str!("../schemas/event.record.json")),
    ("webhook.received", include_str!("../schemas/webhook.received.json")),
];

/// Types made by sluice itself, never accepted from producers.
const INTERNAL: &[&str] = &["webhook.received"];

/// Longest error message kept per violation; schema errors can quote large values.
const MAX_MESSAGE: usize = 300;
/// Most violations reported for one payload.
const MAX_VIOLATIONS: usize = 20;

/// Compiled payload schemas, one per command type.
pub struct SchemaRegistry {
    validators: HashMap<String, jsonschema::Validator>,
    documents: HashMap<String, Value>,
}

/// One way a payload breaks its schema.
#[derive(Debug, Clone, Serialize, PartialEq)]
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

/// A schema file that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("schema for {kind:?} is invalid: {reason}")]
pub struct SchemaError {
    kind: String,
    reason: String,
}

impl SchemaRegistry {
    /// The shipped schemas, compiled.
    pub fn builtin() -> Result<Self, SchemaError> {
        let mut registry = Self { validators: HashMap::new(), documents: HashMap::new() };
        for (kind, text) in BUILTIN {
            registry.register(kind, text)?;
        }
        Ok(registry)
    }

    /// Adds (or replaces) the schema of a command type.
    pub fn register(&mut self, kind: &str, schema_json: &str) -> Result<(), SchemaError> {
        let err = |reason: String| SchemaError { kind: kind.to_owned(), reason };
        let schema: Value = serde_json::from_str(schema_json).map_err(|e| err(e.to_string()))?;
        let validator =
            jsonschema::options().should_validate_formats(true).build(&schema).map_err(|e| err(e.to_string()))?;
        self.validators.insert(kind.to_owned(), validator);
        self.documents.insert(kind.to_owned(), schema);
        Ok(())
    }

    /// Whether producers may submit `kind` themselves; `webhook.received` is made only from a
    /// verified delivery, so no key can forge one.
    pub fn submittable(&self, kind: &str) -> bool {
        self.knows(kind) && !INTERNAL.contains(&kind)
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

    #[test]
    fn every_shipped_schema_compiles() {
        let r = SchemaRegistry::builtin().unwrap();
        assert_eq!(r.kinds(), vec!["account.open", "event.record", "ledger.transfer", "webhook.received"]);
        assert!(!r.submittable("webhook.received"));
    }

    #[test]
    fn a_transfer_without_amount_names_the_missing_field() {
        let r = SchemaRegistry::builtin().unwrap();
        let err = r.validate("ledger.transfer", &json!({"from": "a", "to": "b"})).unwrap_err();
        let PayloadError::Invalid { violations, .. } = err else { panic!("expected Invalid") };
        assert!(violations[0].message.contains("amount_cents"), "{violations:?}");
    }

    #[test]
    fn a_wrongly_typed_field_is_reported_at_its_path() {
        let r = SchemaRegistry::builtin().unwrap();
        let err = r.validate("ledger.transfer", &json!({"from": "a", "to": "b", "amount_cents": "ten"})).unwrap_err();
        let PayloadError::Invalid { violations, .. } = err else { panic!("expected Invalid") };
        assert_eq!(violations[0].path, "/payload/amount_cents");
    }

    #[test]
    fn an_event_time_must_be_a_date_time() {
        let r = SchemaRegistry::builtin().unwrap();
        assert!(r.validate("event.record", &json!({"name": "n", "data": {}, "time": "yesterday"})).is_err());
        assert!(r.validate("event.record", &json!({"name": "n", "data": {}, "time": "2026-01-01T00:00:00Z"})).is_ok());
    }

    #[test]
    fn an_unknown_type_is_its_own_error() {
        let r = SchemaRegistry::builtin().unwrap();
        assert!(matches!(r.validate("nope", &json!({})), Err(PayloadError::UnknownType(_))));
    }
}
