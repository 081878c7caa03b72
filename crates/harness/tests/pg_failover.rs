//! Database failover under load: a primary with a streaming standby (`scripts/pg-failover`),
//! reached through the suite's TCP proxy standing in for the virtual IP or pooler a deployment
//! moves to the new primary. The primary crashes (`-m immediate`), the standby is promoted and
//! the proxy is pointed at it; workers hold their deliveries while there is no database.
//!
//! With synchronous replication every commit a worker saw is on the standby, so nothing is
//! lost. With asynchronous replication the standby may lack the last commits, whose messages
//! were already acked: the second scenario makes that window wide on purpose (it stalls the
//! replication stream) and shows those commands lost, which is what the docs warn of.

use chrono::Utc;
use sluice_harness::check::{self, drain, drain_queues, verify, window, Window};
use sluice_harness::cluster::{Cluster, Options};
use sluice_harness::load::{open_accounts, Mix, Sent};
use sluice_harness::proxy::Proxy;
use sluice_harness::scenario::{progress, under_load};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn node() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sluice-fault-node"))
}

const PRIMARY: u16 = 5441;
const STANDBY: u16 = 5442;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs `scripts/pg-failover` with `args` and asserts it worked.
async fn pg_failover(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let shown = args.join(" ");
    let ok = tokio::task::spawn_blocking(move || {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-failover"))
            .args(&args)
            .status()
            .is_ok_and(|s| s.success())
    })
    .await
    .expect("blocking task");
    assert!(ok, "scripts/pg-failover {shown} failed");
}

/// Deletes the primary and standby when the scenario ends, however it ends.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-failover")).arg("down").status();
    }
}

/// The sluice processes on the database behind `db` (a proxy in front of the primary).
async fn on_database(name: &str, db: &Proxy, mix: &Mix) -> Arc<Cluster> {
    let opts = Options {
        workers: 2,
        database_server: Some(format!("postgres://postgres@127.0.0.1:{}", db.port)),
        ..Options::default()
    };
    let c = Cluster::start(node(), name, opts).await;
    open_accounts(&c, mix.accounts).await;
    Arc::new(c)
}

/// The failover itself: the primary crashes under its clients (commits in flight), the
/// standby is promoted, and the proxy, refusing connections meanwhile, moves to it.
async fn fail_over(db: &Proxy, windows: &mut Vec<Window>) -> chrono::DateTime<Utc> {
    window(windows, async {
        pg_failover(&["crash"]).await;
        db.cut();
        pg_failover(&["promote"]).await;
        db.retarget(addr(STANDBY));
        db.restore();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_over_to_a_synchronous_standby_under_load_loses_nothing_and_applies_nothing_twice() {
    let _down = Down;
    pg_failover(&["up", "sync"]).await;
    let db = Proxy::start(addr(PRIMARY)).await;
    let mix = Mix::default();
    let c = on_database("17 postgres failover (sync standby)", &db, &mix).await;
    // Borrowed, not moved into the fault: dropping the proxy would cut the database for good.
    let db = &db;
    let (sent, windows) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        let ended = fail_over(db, &mut windows).await;
        progress(&c, ended, 200).await;
        windows
    })
    .await;
    drain(&c, &sent).await;
    check::count_only_the_database(&c);
    let held = c.counter("sluice_db_unavailable_total").await;
    let notes = format!("primary crashed, standby promoted, proxy moved; workers held commands {} times", held as u64);
    let r = verify(&c, &sent, &windows, mix.accounts, &notes).await;
    assert!(held + r.retries > 0.0, "workers noticed the database was gone ({held} holds, {} retries)", r.retries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_over_to_an_asynchronous_standby_loses_the_commits_it_had_not_received() {
    let _down = Down;
    // The standby streams through a proxy of its own, so the test can hold its WAL back.
    let replication = Proxy::start(addr(PRIMARY)).await;
    pg_failover(&["up", "async", &replication.port.to_string()]).await;
    let db = Proxy::start(addr(PRIMARY)).await;
    let mix = Mix { scheduled_pct: 0, ..Mix::default() };
    let c = on_database("18 postgres failover (async standby, behind)", &db, &mix).await;
    let (db, replication) = (&db, &replication);
    let (sent, windows): (Vec<Sent>, Vec<Window>) = under_load(&c, mix.clone(), |c| async move {
        let mut windows = Vec::new();
        // The standby falls behind (as on a slow link or a busy standby), commits go on.
        replication.stall();
        progress(&c, Utc::now(), 200).await;
        let ended = fail_over(db, &mut windows).await;
        progress(&c, ended, 200).await;
        windows
    })
    .await;
    // What was lost never becomes final: wait for the queues, not for every command.
    drain_queues(&c).await;
    check::count_only_the_database(&c);
    let (r, lost_as, inconsistent) =
        check::measure(&c, &sent, &windows, "asynchronous standby 200+ commits behind").await;
    assert!(r.lost > 0, "commands acked after commits the standby never had are gone: {lost_as:?}");
    assert_eq!(r.duplicated, 0, "a loss, but nothing applied twice");
    assert_eq!(inconsistent, 0, "each lost transaction is lost whole");
    check::check_books(&c, mix.accounts).await;
}
