//! The command types a process knows: each one's payload schema and handler.

use crate::handlers::typed::{CommandType, Handle, PayloadSchema, Typed};
use crate::handlers::{events, ledger, webhooks, Handler, Handlers, TypeInfo};
use crate::schemas::{SchemaError, SchemaRegistry};
use serde_json::Value;

/// Command type → schema and handler.
pub struct Catalog {
    pub schemas: SchemaRegistry,
    pub handlers: Handlers,
}

/// A command type that cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("command type {0:?} is registered twice")]
    Duplicate(String),
    #[error(
        "command type name {0:?} is not usable: lowercase letters, digits, '_' and '-' in two or more parts \
         separated by '.', at most 100 bytes (e.g. order.place)"
    )]
    BadName(String),
}

impl Catalog {
    /// Every type, sorted by name.
    pub fn describe(&self) -> Vec<TypeInfo> {
        self.handlers
            .kinds()
            .into_iter()
            .filter_map(|kind| {
                let handler = self.handlers.get(kind)?;
                Some(TypeInfo {
                    kind: kind.to_owned(),
                    handler: handler.describe(),
                    submittable: self.schemas.submittable(kind),
                    retry: self.handlers.retry(kind),
                })
            })
            .collect()
    }

    /// No command types at all.
    pub fn empty() -> Self {
        Self { schemas: SchemaRegistry::default(), handlers: Handlers::default() }
    }

    /// What every sluice carries whatever its domain: `webhook.received`, which the webhook
    /// endpoint makes from each verified delivery.
    pub fn core() -> Result<Self, CatalogError> {
        let mut c = Self::empty();
        c.add::<webhooks::WebhookReceived>(webhooks::ReceivedWebhook)?;
        Ok(c)
    }

    /// The core and the shipped domain: a double-entry ledger and an event log.
    pub fn builtin() -> Result<Self, CatalogError> {
        let mut c = Self::core()?;
        c.add_builtin_domain()?;
        Ok(c)
    }

    /// Adds `account.open`, `ledger.transfer` and `event.record`.
    pub fn add_builtin_domain(&mut self) -> Result<(), CatalogError> {
        self.add::<ledger::AccountOpen>(ledger::OpenAccount)?;
        self.add::<ledger::LedgerTransfer>(ledger::Transfer)?;
        self.add::<events::EventRecord>(events::RecordEvent)
    }

    /// Adds the command type `C` with its handler.
    pub fn add<C: CommandType>(&mut self, handler: impl Handle<C>) -> Result<(), CatalogError> {
        let schema = schema_value(C::TYPE, C::schema())?;
        self.insert(C::TYPE, schema, C::SUBMITTABLE, Typed::<C, _>::new(handler))
    }

    /// Adds a command type whose handler reads the raw envelope (`schema_json` is the text of
    /// its payload schema).
    pub fn register(&mut self, kind: &str, schema_json: &str, handler: impl Handler) -> Result<(), CatalogError> {
        let schema = serde_json::from_str(schema_json).map_err(|e| SchemaError::new(kind, format!("not JSON: {e}")))?;
        self.insert(kind, schema, true, handler)
    }

    /// Adds a declared type (`commands.dir`), whose schema was read from its file.
    pub fn declare(&mut self, kind: &str, schema: Value, handler: impl Handler) -> Result<(), CatalogError> {
        self.insert(kind, schema, true, handler)
    }

    fn insert(
        &mut self,
        kind: &str,
        schema: Value,
        submittable: bool,
        handler: impl Handler,
    ) -> Result<(), CatalogError> {
        if !valid_name(kind) {
            return Err(CatalogError::BadName(kind.to_owned()));
        }
        if self.schemas.knows(kind) {
            return Err(CatalogError::Duplicate(kind.to_owned()));
        }
        self.schemas.register(kind, schema, submittable)?;
        self.handlers.register(kind, handler);
        Ok(())
    }
}

fn schema_value(kind: &str, schema: PayloadSchema) -> Result<Value, SchemaError> {
    schema.into_value().map_err(|e| SchemaError::new(kind, format!("not JSON: {e}")))
}

/// `order.place`, `crm.sync-contact`: names that read well in URLs, metrics and logs.
fn valid_name(kind: &str) -> bool {
    let part = |p: &str| {
        p.starts_with(|c: char| c.is_ascii_lowercase())
            && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    };
    kind.len() <= 100 && kind.split('.').count() >= 2 && kind.split('.').all(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_type_has_a_schema_and_a_handler() {
        let c = Catalog::builtin().unwrap();
        assert_eq!(c.handlers.kinds(), c.schemas.kinds());
        assert_eq!(c.schemas.kinds(), vec!["account.open", "event.record", "ledger.transfer", "webhook.received"]);
    }

    #[test]
    fn a_type_registered_twice_is_refused() {
        let mut c = Catalog::builtin().unwrap();
        let err = c.add::<events::EventRecord>(events::RecordEvent).unwrap_err();
        assert!(matches!(err, CatalogError::Duplicate(k) if k == "event.record"));
    }

    #[test]
    fn type_names_must_have_two_lowercase_parts() {
        for ok in ["order.place", "crm.sync-contact", "a.b.c", "v2.x_y"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["order", "Order.place", "order..place", ".x", "x.", "order place", "o.p/q", "2x.y"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    struct Nothing;

    impl Handler for Nothing {
        fn handle<'a>(
            &'a self,
            _tx: &'a mut sqlx::PgConnection,
            _cmd: &'a crate::command::Envelope,
        ) -> crate::handlers::HandlerFuture<'a> {
            Box::pin(async { Ok(crate::handlers::Outcome::Succeeded(Value::Null)) })
        }
    }

    #[test]
    fn a_schema_that_is_not_json_or_does_not_compile_names_its_type() {
        let mut c = Catalog::core().unwrap();
        let err = c.register("x.y", "{not json", Nothing).unwrap_err();
        assert!(err.to_string().contains("\"x.y\""), "{err}");
        let err = c.register("x.z", r#"{"type": 5}"#, Nothing).unwrap_err();
        assert!(err.to_string().contains("\"x.z\""), "{err}");
    }
}
