//! The ledger invariant under concurrency: money is neither created nor destroyed, and no
//! balance goes negative, after thousands of concurrent transfers between a few accounts.

use crate::helpers::{eventually, spawn_app, TestApp, DEADLINE};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;

pub const ACCOUNTS: usize = 5;
pub const OPENING: i64 = 10_000;

pub async fn open_accounts(app: &TestApp) {
    for i in 0..ACCOUNTS {
        app.open_account(&format!("acct-{i}"), OPENING).await;
    }
}

/// Submits `n` random transfers with `concurrency` clients; returns the accepted ids.
pub async fn transfers(app: &Arc<TestApp>, n: usize, concurrency: usize) -> Vec<Option<uuid::Uuid>> {
    futures_util::stream::iter(0..n)
        .map(|i| {
            let app = app.clone();
            async move {
                let from = i % ACCOUNTS;
                let to = (i * 7 + 1 + i / ACCOUNTS) % ACCOUNTS;
                let to = if to == from { (to + 1) % ACCOUNTS } else { to };
                let amount = 1 + (i as i64 * 37) % 3000;
                let payload =
                    json!({"from": format!("acct-{from}"), "to": format!("acct-{to}"), "amount_cents": amount});
                let r = app.submit("ledger.transfer", payload).await;
                if r.status() == 202 {
                    r.json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["id"].as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()))
                } else {
                    None
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Waits until every id has a final status; returns (succeeded, rejected).
pub async fn settle_all(app: &TestApp, ids: &[uuid::Uuid]) -> (i64, i64) {
    eventually(DEADLINE * 4, || async {
        let (done, ok, rejected): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'rejected')
               FROM commands WHERE id = ANY($1) AND status IN ('succeeded', 'rejected')",
        )
        .bind(ids)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (done == ids.len() as i64).then_some((ok, rejected))
    })
    .await
}

/// Sum of balances, negative balances, and whether every succeeded transfer has exactly its
/// two entries and no other command has any.
pub async fn check_books(app: &TestApp) {
    let (total, negative): (i64, i64) =
        sqlx::query_as("SELECT sum(balance_cents)::bigint, count(*) FILTER (WHERE balance_cents < 0) FROM accounts")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(total, OPENING * ACCOUNTS as i64, "money was created or destroyed");
    assert_eq!(negative, 0);
    let bad: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
            SELECT c.id FROM commands c LEFT JOIN ledger_entries e ON e.command_id = c.id
             WHERE c.type = 'ledger.transfer'
             GROUP BY c.id, c.status
            HAVING (c.status = 'succeeded' AND (count(e.id) <> 2 OR sum(e.amount_cents) <> 0))
                OR (c.status <> 'succeeded' AND count(e.id) <> 0)
         ) wrong",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(bad, 0, "every applied transfer has exactly one debit and one credit");
    let balances_match: bool = sqlx::query_scalar(
        "SELECT bool_and(a.balance_cents = o.opening + coalesce(e.moved, 0))
           FROM accounts a
           JOIN (SELECT id, $1::bigint AS opening FROM accounts) o USING (id)
           LEFT JOIN (SELECT account_id, sum(amount_cents) AS moved FROM ledger_entries GROUP BY account_id) e
             ON e.account_id = a.id",
    )
    .bind(OPENING)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(balances_match, "balances equal opening balance plus their ledger entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_transfers_keep_the_books_balanced() {
    let app = Arc::new(spawn_app().await);
    open_accounts(&app).await;
    let ids: Vec<uuid::Uuid> = transfers(&app, 3000, 32).await.into_iter().map(|id| id.expect("accepted")).collect();
    let (ok, rejected) = settle_all(&app, &ids).await;
    assert_eq!(ok + rejected, 3000);
    assert!(ok > 0 && rejected > 0, "both outcomes occur: {ok} succeeded, {rejected} rejected");
    check_books(&app).await;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&app.pool).await.unwrap();
    assert_eq!(dead, 0, "contention is retried, never dead-lettered");
}
