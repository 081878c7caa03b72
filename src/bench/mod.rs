//! `sluice bench`: how fast sluice is, as a ratio to what this machine's broker and database
//! can do with no HTTP and no business logic in between.

mod http;
mod raw;
mod stats;

use crate::config::Settings;
use anyhow::Context;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use uuid::Uuid;

/// Options of `sluice bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Commands to submit (and messages for the raw pipeline).
    #[arg(long, default_value_t = 20_000)]
    pub commands: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Command type to submit: event.record or ledger.transfer.
    #[arg(long, default_value = "event.record")]
    pub kind: String,
    /// Submit through POST /v1/batches, this many commands per request (0 = one POST per
    /// command). `--batch 10000 --concurrency 1` times the acceptance of 10,000-command batches.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// Skip the raw pipeline reference.
    #[arg(long)]
    pub skip_raw: bool,
    /// Skip the sluice run (raw reference only).
    #[arg(long)]
    pub skip_sluice: bool,
    /// Postgres server URL without database; bench databases are created and dropped on it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub pg: String,
}

/// A bench database on the server of `args.pg`, dropped by [`drop_database`].
async fn create_database(args: &BenchArgs, name: &str) -> anyhow::Result<String> {
    let mut admin = PgConnection::connect(&format!("{}/postgres", args.pg)).await.context("connecting to Postgres")?;
    // Identifiers cannot be parameters; `name` is generated here, never user input.
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await?;
    Ok(format!("{}/{name}", args.pg))
}

async fn drop_database(args: &BenchArgs, name: &str) {
    if let Ok(mut admin) = PgConnection::connect(&format!("{}/postgres", args.pg)).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await;
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.commands > 0 && args.concurrency > 0, "--commands and --concurrency must be > 0");
    anyhow::ensure!(
        matches!(args.kind.as_str(), "event.record" | "ledger.transfer"),
        "--kind must be event.record or ledger.transfer"
    );
    let id = Uuid::new_v4().simple().to_string()[..10].to_owned();
    println!(
        "sluice bench: {} commands, {} clients, type {}, {} cores",
        args.commands,
        args.concurrency,
        args.kind,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let raw = if args.skip_raw {
        None
    } else {
        let db = format!("sluice_bench_raw_{id}");
        let url = create_database(&args, &db).await?;
        let r = raw::run(settings.broker.url.expose(), &url, &format!("bench-{id}"), args.commands).await;
        drop_database(&args, &db).await;
        let r = r?;
        r.print();
        Some(r)
    };
    if !args.skip_sluice {
        let db = format!("sluice_bench_{id}");
        let url = create_database(&args, &db).await?;
        let prefix = format!("bench-{id}");
        let r = http::run(&settings, &args, &url, &prefix).await;
        drop_database(&args, &db).await;
        drop_topology(&settings, &prefix).await;
        let r = r?;
        r.print(raw.as_ref());
    }
    Ok(())
}

/// Deletes the queues and exchanges the sluice under test declared.
async fn drop_topology(settings: &Settings, prefix: &str) {
    let w = &settings.worker;
    let topology = crate::broker::Topology::new(prefix, &w.retry_tiers_ms, settings.broker.delivery_limit);
    let props = lapin::ConnectionProperties::default();
    if let Ok(conn) = lapin::Connection::connect(settings.broker.url.expose(), props).await {
        if let Ok(ch) = conn.create_channel().await {
            topology.delete(&ch).await;
        }
        let _ = conn.close(200, "bench done".into()).await;
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}
