//! The `sluice` binary: a thin CLI over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice::app::{Application, Catalog, Roles};
use sluice::config::Settings;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sluice", version, about = "HTTP ingest → RabbitMQ → pooled workers → Postgres")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the workers in one process.
    Serve,
    /// Run only the HTTP API.
    Api,
    /// Run only the workers (health and metrics still served over HTTP).
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Inspect, replay and discard dead letters.
    Dlq {
        #[command(subcommand)]
        command: sluice::cli::dlq::DlqCommand,
    },
    /// Keys that seal stored secrets: generate one, reseal everything with the current one.
    Secrets {
        #[command(subcommand)]
        command: sluice::cli::secrets::SecretsCommand,
    },
    /// Configure inbound webhook sources.
    Webhooks {
        #[command(subcommand)]
        command: sluice::cli::webhooks::WebhooksCommand,
    },
    /// Run one retention pass now (what worker processes do every retention.interval_secs).
    Prune,
    /// Measure throughput and latency against the raw broker + database pipeline.
    Bench(sluice::bench::BenchArgs),
    /// Exit 0 if URL answers 200 (for container health checks without curl).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
        url: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (the only time it is shown).
    Create {
        #[arg(long)]
        tenant: String,
        /// submit, read, admin; repeat or separate with commas.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List keys (ids, tenants, scopes; never the keys).
    List,
    /// Revoke a key by its id.
    Revoke { key_id: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line that says what is wrong; the causes follow on it, not as a backtrace.
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load().context("loading configuration")?;
    sluice::telemetry::init_tracing(&settings.log);
    match cli.command {
        Command::Serve => serve(settings, Roles::All).await,
        Command::Api => serve(settings, Roles::Api).await,
        Command::Worker => serve(settings, Roles::Worker).await,
        Command::Migrate => {
            sluice::store::ready_pool(&settings.database).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Keys { command } => keys(settings, command).await,
        Command::Dlq { command } => sluice::cli::dlq::run(settings, command).await,
        Command::Webhooks { command } => sluice::cli::webhooks::run(settings, command).await,
        Command::Secrets { command } => sluice::cli::secrets::run(settings, command).await,
        Command::Bench(args) => sluice::bench::run(settings, args).await,
        Command::Prune => {
            let pool = sluice::store::ready_pool(&settings.database).await?;
            let cancel = tokio_util::sync::CancellationToken::new();
            match sluice::retention::prune_once(&pool, &settings.retention, &cancel).await? {
                Some(pruned) => {
                    for (table, n) in pruned {
                        println!("{}\t{n}", table.as_str());
                    }
                }
                None => println!("another process is pruning now; nothing done"),
            }
            Ok(())
        }
        Command::Healthcheck { url } => {
            let status = reqwest::get(&url).await?.status();
            anyhow::ensure!(status.is_success(), "{url} answered {status}");
            Ok(())
        }
    }
}

async fn serve(settings: Settings, roles: Roles) -> anyhow::Result<()> {
    sluice::telemetry::metrics_handle();
    #[allow(unused_mut)] // only the fault-hooks build adds to it
    let mut catalog = Catalog::builtin()?;
    #[cfg(feature = "fault-hooks")]
    sluice::fault::register(&mut catalog)?;
    let app = Application::build(settings, roles, catalog).await?;
    tracing::info!(port = app.port(), ?roles, "sluice started");
    let token = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; draining");
        token.cancel();
    });
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

async fn keys(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
    let pool = sluice::store::ready_pool(&settings.database).await?;
    match command {
        KeysCommand::Create { tenant, scopes } => {
            let created = sluice::api::auth::create_key(&pool, &sluice::cli::actor(), &tenant, &scopes).await?;
            eprintln!("key {} created for tenant {tenant}; it is shown only now:", created.key_id);
            println!("{}", created.key);
        }
        KeysCommand::List => {
            for k in sluice::store::api_keys::list(&pool).await? {
                let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    k.key_id,
                    k.tenant,
                    k.scopes.join(","),
                    k.created_at.to_rfc3339(),
                    state
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            let revoked = sluice::api::auth::revoke_key(&pool, &sluice::cli::actor(), &key_id).await?;
            anyhow::ensure!(revoked, "no active key {key_id}");
            println!("revoked {key_id}");
        }
    }
    Ok(())
}
