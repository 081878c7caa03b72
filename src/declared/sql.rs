//! A Postgres function as a command type's handler, called inside the worker's transaction so
//! its writes commit exactly once with the command's inbox row.

use super::SqlSpec;
use crate::command::Envelope;
use crate::handlers::{Handler, HandlerError, HandlerFuture, Outcome};
use crate::store::StoreError;
use serde_json::Value;
use sqlx::postgres::PgDatabaseError;
use sqlx::{Connection, PgConnection, PgPool};

/// SQLSTATE of `RAISE EXCEPTION` without an ERRCODE: the function refused the command.
const RAISE_EXCEPTION: &str = "P0001";

/// Calls `schema.name(payload, command_id, tenant)` and takes its jsonb as the result.
pub struct SqlFunction {
    spec: SqlSpec,
}

impl SqlFunction {
    /// The handler for `spec` (checked at start by [`check_functions`]).
    pub fn new(spec: SqlSpec) -> Self {
        Self { spec }
    }
}

impl Handler for SqlFunction {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, cmd: &'a Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            // A savepoint per command: a refusal undoes only this command's writes, so the
            // transaction (and the other commands of a worker batch in it) carries on.
            let mut sp = tx.begin().await?;
            let called = sqlx::query_scalar::<_, Option<Value>>("SELECT sluice_call_declared($1, $2, $3, $4, $5)")
                .bind(&self.spec.schema)
                .bind(&self.spec.name)
                .bind(&cmd.payload)
                .bind(cmd.id)
                .bind(&cmd.tenant)
                .fetch_one(&mut *sp)
                .await;
            match called {
                Ok(result) => {
                    sp.commit().await?;
                    Ok(Outcome::Succeeded(result.unwrap_or(Value::Null)))
                }
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(RAISE_EXCEPTION) => {
                    sp.rollback().await?;
                    let pg = db.try_downcast_ref::<PgDatabaseError>();
                    // The HINT, when it is one word, is the machine-readable reason.
                    let reason = pg
                        .and_then(PgDatabaseError::hint)
                        .filter(|h| {
                            !h.is_empty() && h.len() <= 64 && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        })
                        .unwrap_or("refused")
                        .to_owned();
                    Ok(Outcome::Rejected { reason, message: db.message().to_owned() })
                }
                // Conflicts are retried at once, timeouts later, anything else is permanent:
                // the store's own classification.
                Err(e) => Err(HandlerError::Store(StoreError::from(e))),
            }
        })
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
