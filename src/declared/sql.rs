//! A Postgres function as a command type's handler, called inside the worker's transaction so
//! its writes commit exactly once with the command's inbox row.

use super::SqlSpec;
use crate::command::Envelope;
use crate::handlers::{Handler, HandlerFuture, HandlerManyFuture, Outcome};
use crate::store::StoreError;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// Calls `schema.name(payload, command_id, tenant)` and takes its jsonb as the result.
pub struct SqlFunction {
    spec: SqlSpec,
}

impl SqlFunction {
    /// The handler for `spec` (checked at start by [`check_functions`]).
    pub fn new(spec: SqlSpec) -> Self {
        Self { spec }
    }

    /// Applies `cmds` in order with one statement (`sluice_call_declared`, in the migrations):
    /// each command runs in a subtransaction there, so a refusal undoes only its own writes.
    async fn apply(&self, tx: &mut PgConnection, cmds: &[&Envelope]) -> Result<Vec<Outcome>, StoreError> {
        let payloads: Vec<&Value> = cmds.iter().map(|c| &c.payload).collect();
        let ids: Vec<uuid::Uuid> = cmds.iter().map(|c| c.id).collect();
        let tenants: Vec<&str> = cmds.iter().map(|c| c.tenant.as_str()).collect();
        let outcomes: Vec<Value> = sqlx::query_scalar("SELECT sluice_call_declared($1, $2, $3, $4, $5)")
            .bind(&self.spec.schema)
            .bind(&self.spec.name)
            .bind(&payloads)
            .bind(&ids)
            .bind(&tenants)
            .fetch_one(tx)
            .await?;
        Ok(outcomes.into_iter().map(outcome).collect())
    }
}

/// `{"result": v}` or `{"refused": message, "hint": hint}` as an outcome. A one-word HINT is
/// the refusal's machine-readable reason.
fn outcome(v: Value) -> Outcome {
    match v.get("refused").and_then(Value::as_str) {
        None => Outcome::Succeeded(v.get("result").cloned().unwrap_or(Value::Null)),
        Some(message) => {
            let reason = v
                .get("hint")
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty() && h.len() <= 64 && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or("refused");
            Outcome::rejected(reason, message)
        }
    }
}

impl Handler for SqlFunction {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, cmd: &'a Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            let mut outcomes = self.apply(tx, &[cmd]).await?;
            // The function returns one outcome per command given.
            outcomes.pop().ok_or_else(|| StoreError::Invalid(sqlx::Error::RowNotFound).into())
        })
    }

    // Conflicts are retried at once, timeouts later, anything else is permanent: the store's
    // own classification of the error. Any error rolls the worker's batch back, and its
    // commands are then applied one per transaction, each getting its own treatment.
    fn handle_many<'a>(&'a self, tx: &'a mut PgConnection, cmds: &'a [&'a Envelope]) -> HandlerManyFuture<'a> {
        Box::pin(async move { Ok(self.apply(tx, cmds).await?) })
    }

    fn describe(&self) -> String {
        format!("SQL function {}", self.spec.signature())
    }
}

/// Checks that each function exists with the signature `(jsonb, uuid, text)` and returns
/// jsonb; one line per problem, naming the declaration's file.
pub async fn check_functions(pool: &PgPool, functions: &[(&str, &SqlSpec)]) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    for (file, spec) in functions {
        let returns: Option<String> = sqlx::query_scalar(
            "SELECT format_type(p.prorettype, NULL) FROM pg_proc p
              WHERE p.oid = to_regprocedure(format('%I.%I(jsonb, uuid, text)', $1::text, $2::text))",
        )
        .bind(&spec.schema)
        .bind(&spec.name)
        .fetch_optional(pool)
        .await?;
        match returns.as_deref() {
            Some("jsonb") => {}
            Some(other) => problems.push(format!("{file}: function {} returns {other}, not jsonb", spec.signature())),
            None => problems.push(format!(
                "{file}: function {} does not exist (create it in a migration before declaring the type)",
                spec.signature()
            )),
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_or_a_refusal_with_a_one_word_hint_becomes_the_outcome() {
        assert_eq!(outcome(serde_json::json!({"result": {"a": 1}})), Outcome::Succeeded(serde_json::json!({"a": 1})));
        assert_eq!(outcome(serde_json::json!({"result": null})), Outcome::Succeeded(Value::Null));
        let refused = serde_json::json!({"refused": "amount is negative", "hint": "negative_amount"});
        assert_eq!(outcome(refused), Outcome::rejected("negative_amount", "amount is negative"));
        let wordy = serde_json::json!({"refused": "no", "hint": "try a smaller amount"});
        assert_eq!(outcome(wordy), Outcome::rejected("refused", "no"));
        assert_eq!(outcome(serde_json::json!({"refused": "no", "hint": null})), Outcome::rejected("refused", "no"));
    }
}
