//! `account.open` and `ledger.transfer`: a double-entry ledger whose balances never go
//! negative and whose total only changes when an account opens with money in it.

use super::typed::{CommandType, Handle, Incoming, PayloadSchema};
use super::{HandlerError, Outcome};
use crate::command::Envelope;
use crate::store::accounts;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use std::collections::HashMap;

/// The payload of `account.open`.
#[derive(Debug, Deserialize)]
pub struct AccountOpen {
    account_id: String,
    #[serde(default)]
    initial_balance_cents: i64,
}

impl CommandType for AccountOpen {
    const TYPE: &'static str = "account.open";
    fn schema() -> PayloadSchema {
        PayloadSchema::Text(include_str!("../../schemas/account.open.json"))
    }
}

/// Handles `account.open`.
pub struct OpenAccount;

impl Handle<AccountOpen> for OpenAccount {
    fn lock_keys(&self, p: &AccountOpen, env: &Envelope) -> Vec<String> {
        vec![account_key(env, &p.account_id)]
    }

    async fn handle(&self, tx: &mut PgConnection, cmd: Incoming<'_, AccountOpen>) -> Result<Outcome, HandlerError> {
        let (p, env) = (cmd.payload, cmd.envelope);
        if p.initial_balance_cents < 0 {
            return Err(HandlerError::Permanent("initial_balance_cents is negative".into()));
        }
        if accounts::open(tx, &env.tenant, &p.account_id, p.initial_balance_cents, env.id).await? {
            Ok(Outcome::Succeeded(json!({"account_id": p.account_id, "balance_cents": p.initial_balance_cents})))
        } else {
            Ok(Outcome::rejected("account_exists", format!("account {:?} already exists", p.account_id)))
        }
    }
}

/// The payload of `ledger.transfer`.
#[derive(Debug, Deserialize)]
pub struct LedgerTransfer {
    from: String,
    to: String,
    amount_cents: i64,
}

impl CommandType for LedgerTransfer {
    const TYPE: &'static str = "ledger.transfer";
    fn schema() -> PayloadSchema {
        PayloadSchema::Text(include_str!("../../schemas/ledger.transfer.json"))
    }
}

/// Handles `ledger.transfer`.
pub struct Transfer;

impl Handle<LedgerTransfer> for Transfer {
    fn lock_keys(&self, p: &LedgerTransfer, env: &Envelope) -> Vec<String> {
        vec![account_key(env, &p.from), account_key(env, &p.to)]
    }

    async fn handle(&self, tx: &mut PgConnection, cmd: Incoming<'_, LedgerTransfer>) -> Result<Outcome, HandlerError> {
        let mut outcomes = transfer_all(tx, vec![cmd]).await?;
        outcomes.pop().ok_or_else(|| HandlerError::Transient("transfer produced no outcome".into()))
    }

    async fn handle_many(
        &self,
        tx: &mut PgConnection,
        cmds: Vec<Incoming<'_, LedgerTransfer>>,
    ) -> Result<Vec<Outcome>, HandlerError> {
        transfer_all(tx, cmds).await
    }
}

/// Applies transfers in order with a constant number of statements whatever their count: lock
/// every account they name, decide each against the running balances in memory, then write
/// the new balances and the entries. A refused transfer writes nothing.
async fn transfer_all(
    tx: &mut PgConnection,
    cmds: Vec<Incoming<'_, LedgerTransfer>>,
) -> Result<Vec<Outcome>, HandlerError> {
    let mut transfers = Vec::with_capacity(cmds.len());
    for Incoming { payload: p, envelope: cmd } in cmds {
        if p.amount_cents <= 0 {
            return Err(HandlerError::Permanent("amount_cents must be positive".into()));
        }
        transfers.push((cmd, p));
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
            _ if p.from == p.to => Outcome::rejected("same_account", "cannot transfer from an account to itself"),
            (None, _) => Outcome::rejected("unknown_account", format!("account {:?} does not exist", p.from)),
            (_, None) => Outcome::rejected("unknown_account", format!("account {:?} does not exist", p.to)),
            (Some(have), _) if have < p.amount_cents => Outcome::rejected(
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

/// The lock key of one of the tenant's accounts.
fn account_key(env: &Envelope, account_id: &str) -> String {
    format!("account/{}/{account_id}", env.tenant)
}
