//! The command line of a sluice binary: the shipped `sluice` and any application's own are the
//! same `main`, given the builder that names their command types.

pub mod dlq;
pub mod keys;
pub mod schedules;
pub mod secrets;
pub mod webhooks;

use crate::app::{AppBuilder, Roles};
use crate::config::Settings;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(version, about = "HTTP ingest → RabbitMQ → pooled workers → Postgres")]
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
    /// Apply database migrations (sluice's and the application's) and exit.
    Migrate,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Inspect, replay and discard dead letters.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Keys that seal stored secrets: generate one, reseal everything with the current one.
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// Recurring schedules: list, show, put, pause, resume, delete.
    Schedules {
        #[command(subcommand)]
        command: schedules::SchedulesCommand,
    },
    /// Configure inbound webhook sources.
    Webhooks {
        #[command(subcommand)]
        command: webhooks::WebhooksCommand,
    },
    /// Run one retention pass now (what worker processes do every retention.interval_secs).
    Prune,
    /// Exit 0 if URL answers 200 (for container health checks without curl).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
        url: String,
    },
}

/// Parses the arguments, loads the settings, and runs the subcommand with the process that
/// `app` assembles from them. A failure prints one line (`<binary>: what went wrong: why`)
/// and exits 1.
pub fn main(app: impl FnOnce(Settings) -> AppBuilder) -> ExitCode {
    let cli = Cli::parse();
    let name = std::env::args()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()));
    let name = name.unwrap_or_else(|| "sluice".into());
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli, app)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line that says what is wrong; the causes follow on it, not as a backtrace.
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, app: impl FnOnce(Settings) -> AppBuilder) -> anyhow::Result<()> {
    let settings = Settings::load().context("loading configuration")?;
    crate::telemetry::init_tracing(&settings.log);
    let app = app(settings);
    let schemas = |app: AppBuilder| -> anyhow::Result<(Settings, Arc<crate::schemas::SchemaRegistry>)> {
        let (settings, catalog) = app.into_catalog()?;
        Ok((settings, Arc::new(catalog.schemas)))
    };
    match cli.command {
        Command::Serve => app.run(Roles::All).await,
        Command::Api => app.run(Roles::Api).await,
        Command::Worker => app.run(Roles::Worker).await,
        Command::Migrate => {
            app.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Keys { command } => keys::run(app.settings().clone(), command).await,
        Command::Dlq { command } => {
            let (settings, schemas) = schemas(app)?;
            dlq::run(settings, schemas, command).await
        }
        Command::Schedules { command } => {
            let (settings, schemas) = schemas(app)?;
            schedules::run(settings, schemas, command).await
        }
        Command::Webhooks { command } => {
            let (settings, schemas) = schemas(app)?;
            webhooks::run(settings, schemas, command).await
        }
        Command::Secrets { command } => {
            let (settings, schemas) = schemas(app)?;
            secrets::run(settings, schemas, command).await
        }
        Command::Prune => {
            let pool = crate::store::ready_pool(&app.settings().database).await?;
            let cancel = tokio_util::sync::CancellationToken::new();
            match crate::retention::prune_once(&pool, &app.settings().retention, &cancel).await? {
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

/// How a CLI user appears in the audit log.
pub fn actor() -> String {
    format!(
        "cli:{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "localhost".into())
    )
}
