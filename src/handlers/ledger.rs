//! `account.open` and `ledger.transfer`: a double-entry ledger whose balances never go
//! negative and whose total only changes when an account opens with money in it.

use super::{payload, Handler, HandlerError, HandlerFuture, HandlerManyFuture, Outcome};
use crate::command::Envelope;
use crate::store::accounts;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use std::collections::HashMap;

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
            let mut outcomes = transfer_all(tx, &[cmd]).await?;
            outcomes.pop().ok_or_else(|| HandlerError::Transient("transfer produced no outcome".into()))
        })
    }

    fn handle_many<'a>(&'a self, tx: &'a mut PgConnection, cmds: &'a [&'a Envelope]) -> HandlerManyFuture<'a> {
        Box::pin(transfer_all(tx, cmds))
    }
}

/// Applies transfers in order with a constant number of statements whatever their count: lock
/// every account they name, decide each against the running balances in memory, then write
/// the new balances and the entries. A refused transfer writes nothing.
async fn transfer_all(tx: &mut PgConnection, cmds: &[&Envelope]) -> Result<Vec<Outcome>, HandlerError> {
    let mut transfers = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        let p: TransferPayload = payload(cmd)?;
        if p.amount_cents <= 0 {
            return Err(HandlerError::Permanent("amount_cents must be positive".into()));
        }
        transfers.push((*cmd, p));
    }
    let mut named = Vec::with_capacity(transfers.len() * 2);
    for (cmd, p) in &transfers {
        named.push((cmd.tenant.as_str(), p.from.as_str()));
        named.push((cmd.tenant.as_str(), p.to.as_str()));
    }
    let mut balances: HashMap<(String, String), i64> =
        accounts::lock_balances(tx, &named).await?.into_iter().map(|(t, id, b)| ((t, id), b)).collect();
    let mut changed = accounts::Movements::default();
    let mut outcomes = Vec::with_capacity(transfers.len());
    for (cmd, p) in &transfers {
        let key = |id: &str| (cmd.tenant.clone(), id.to_owned());
        let (from, to) = (key(&p.from), key(&p.to));
        let outcome = match (balances.get(&from).copied(), balances.get(&to).copied()) {
            _ if p.from == p.to => rejected("same_account", "cannot transfer from an account to itself".into()),
            (None, _) => rejected("unknown_account", format!("account {:?} does not exist", p.from)),
            (_, None) => rejected("unknown_account", format!("account {:?} does not exist", p.to)),
            (Some(have), _) if have < p.amount_cents => rejected(
                "insufficient_funds",
                format!("account {:?} holds {have} cents, {} needed", p.from, p.amount_cents),
            ),
            (Some(have), Some(_)) => {
                let Some(credited) = balances.get(&to).and_then(|b| b.checked_add(p.amount_cents)) else {
                    return Err(HandlerError::Permanent(format!("account {:?} would overflow", p.to)));
                };
                balances.insert(from, have - p.amount_cents);
                balances.insert(to, credited);
                changed.push(&cmd.tenant, cmd.id, &p.from, -p.amount_cents);
                changed.push(&cmd.tenant, cmd.id, &p.to, p.amount_cents);
                Outcome::Succeeded(json!({
                    "from": p.from, "to": p.to, "amount_cents": p.amount_cents,
                    "from_balance_cents": have - p.amount_cents,
                }))
            }
        };
        outcomes.push(outcome);
    }
    accounts::apply_movements(tx, &changed, &balances).await?;
    Ok(outcomes)
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
