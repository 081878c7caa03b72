//! `account.open` and `ledger.transfer`: a double-entry ledger whose balances never go
//! negative and whose total only changes when an account opens with money in it.

use super::{payload, Handler, HandlerError, HandlerFuture, Outcome};
use crate::command::Envelope;
use crate::store::accounts;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;

/// Handles `account.open`.
pub struct OpenAccount;

#[derive(Deserialize)]
struct OpenPayload {
    account_id: String,
    #[serde(default)]
    initial_balance_cents: i64,
}

impl Handler for OpenAccount {
    fn lock_keys(&self, cmd: &Envelope) -> Vec<String> {
        account_keys(cmd, &["account_id"])
    }

    fn handle<'a>(&'a self, tx: &'a mut PgConnection, cmd: &'a Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            let p: OpenPayload = payload(cmd)?;
            if p.initial_balance_cents < 0 {
                return Err(HandlerError::Permanent("initial_balance_cents is negative".into()));
            }
            if accounts::open(tx, &cmd.tenant, &p.account_id, p.initial_balance_cents, cmd.id).await? {
                Ok(Outcome::Succeeded(json!({"account_id": p.account_id, "balance_cents": p.initial_balance_cents})))
            } else {
                Ok(rejected("account_exists", format!("account {:?} already exists", p.account_id)))
            }
        })
    }
}

/// Handles `ledger.transfer`.
pub struct Transfer;

#[derive(Deserialize)]
struct TransferPayload {
    from: String,
    to: String,
    amount_cents: i64,
}

impl Handler for Transfer {
    fn lock_keys(&self, cmd: &Envelope) -> Vec<String> {
        account_keys(cmd, &["from", "to"])
    }

    fn handle<'a>(&'a self, tx: &'a mut PgConnection, cmd: &'a Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            let p: TransferPayload = payload(cmd)?;
            if p.amount_cents <= 0 {
                return Err(HandlerError::Permanent("amount_cents must be positive".into()));
            }
            if p.from == p.to {
                return Ok(rejected("same_account", "cannot transfer from an account to itself".into()));
            }
            let locked = accounts::lock_balances(tx, &cmd.tenant, &[&p.from, &p.to]).await?;
            let balance_of = |id: &str| locked.iter().find(|(a, _)| a == id).map(|(_, b)| *b);
            let Some(from_balance) = balance_of(&p.from) else {
                return Ok(rejected("unknown_account", format!("account {:?} does not exist", p.from)));
            };
            if balance_of(&p.to).is_none() {
                return Ok(rejected("unknown_account", format!("account {:?} does not exist", p.to)));
            }
            if from_balance < p.amount_cents {
                return Ok(rejected(
                    "insufficient_funds",
                    format!("account {:?} holds {from_balance} cents, {} needed", p.from, p.amount_cents),
                ));
            }
            accounts::move_funds(tx, &cmd.tenant, &p.from, &p.to, p.amount_cents, cmd.id).await?;
            Ok(Outcome::Succeeded(json!({
                "from": p.from, "to": p.to, "amount_cents": p.amount_cents,
                "from_balance_cents": from_balance - p.amount_cents,
            })))
        })
    }
}

/// Lock keys of the accounts named by `fields` of the payload.
fn account_keys(cmd: &Envelope, fields: &[&str]) -> Vec<String> {
    fields
        .iter()
        .filter_map(|f| cmd.payload.get(*f).and_then(|v| v.as_str()))
        .map(|id| format!("account/{}/{id}", cmd.tenant))
        .collect()
}

fn rejected(reason: &str, message: String) -> Outcome {
    Outcome::Rejected { reason: reason.to_owned(), message }
}
