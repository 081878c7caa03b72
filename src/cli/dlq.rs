//! `sluice dlq list|groups|show|replay|discard`: the dead-letter API's operations from a
//! shell, straight against the database and broker (no API process needed). Actions are
//! audited as `cli:<user>@<host>`.

use crate::broker::{Broker, Topology};
use crate::config::Settings;
use crate::ops::Operators;
use crate::schemas::SchemaRegistry;
use crate::store::dead_letters::{self, DeadLetterState, Filter};
use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// `sluice dlq ...`
#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List groups of open dead letters by cause (type + error kind + normalized error).
    Groups {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one dead letter: payload, headers, every attempt's error.
    Show { id: Uuid },
    /// Replay one dead letter (optionally with an edited payload), or all matching a filter.
    Replay {
        /// The dead letter; omit and pass --all to replay by filter.
        id: Option<Uuid>,
        /// Replace the payload (JSON, validated against the command type's schema).
        #[arg(long, conflicts_with = "all")]
        payload: Option<String>,
        /// Replay every open dead letter matching the filter (up to --limit).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Replays per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
    },
    /// Discard one open dead letter, or all matching a filter.
    Discard {
        id: Option<Uuid>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// Which dead letters.
#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// open (default), replayed or discarded.
    #[arg(long, value_parser = parse_state)]
    state: Option<DeadLetterState>,
    #[arg(long = "type")]
    command_type: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    error_kind: Option<String>,
    /// Errors containing this text.
    #[arg(long)]
    error: Option<String>,
    /// A group's fingerprint.
    #[arg(long)]
    group: Option<String>,
    /// RFC 3339 times.
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    #[arg(long)]
    until: Option<DateTime<Utc>>,
}

impl From<FilterArgs> for Filter {
    fn from(a: FilterArgs) -> Self {
        Filter {
            state: a.state,
            command_type: a.command_type,
            tenant: a.tenant,
            error_kind: a.error_kind,
            error: a.error,
            fingerprint: a.group,
            since: a.since,
            until: a.until,
        }
    }
}

fn parse_state(s: &str) -> Result<DeadLetterState, String> {
    DeadLetterState::parse(s).ok_or_else(|| "expected open, replayed or discarded".to_owned())
}

/// Runs one `sluice dlq` subcommand.
pub async fn run(settings: Settings, schemas: Arc<SchemaRegistry>, command: DlqCommand) -> anyhow::Result<()> {
    let pool = crate::store::ready_pool(&settings.database).await?;
    let (ops, broker, cancel) = operators(&settings, pool, schemas)?;
    let actor = super::actor();
    let result = execute(&ops, &broker, &cancel, command, &actor).await;
    broker.close().await;
    cancel.cancel();
    result
}

/// Operator actions for a CLI process, with the broker connection they publish on.
pub(super) fn operators(
    settings: &Settings,
    pool: sqlx::PgPool,
    schemas: Arc<SchemaRegistry>,
) -> anyhow::Result<(Operators, Broker, CancellationToken)> {
    let cancel = CancellationToken::new();
    let topology =
        Topology::new(&settings.broker.prefix, &settings.worker.retry_tiers_ms, settings.broker.delivery_limit)
            .with_partitions(settings.ordering.partitions);
    let broker = Broker::start(settings.broker.clone(), topology, "cli", cancel.clone());
    let ops = Operators {
        pool,
        broker: broker.clone(),
        schemas,
        reach: crate::ops::Reach::Every,
        sealer: Arc::new(crate::secrets::Sealer::from_spec(settings.secrets.keys.expose())?),
    };
    Ok((ops, broker, cancel))
}

async fn execute(
    ops: &Operators,
    broker: &Broker,
    cancel: &CancellationToken,
    command: DlqCommand,
    actor: &str,
) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { filter, limit, json } => {
            let list = dead_letters::list(&ops.pool, &filter.into(), None, limit).await?;
            for d in list {
                if json {
                    println!("{}", serde_json::to_string(&d)?);
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        d.id,
                        d.dead_at.to_rfc3339(),
                        d.command_type.as_deref().unwrap_or("?"),
                        d.tenant.as_deref().unwrap_or("?"),
                        d.attempts,
                        d.error_kind,
                        one_line(&d.error, 100)
                    );
                }
            }
        }
        DlqCommand::Groups { limit } => {
            for g in dead_letters::groups(&ops.pool, limit).await? {
                println!(
                    "{}\t{} open / {} total\t{}\t{}\tlast {}\t{}",
                    g.fingerprint,
                    g.open_count,
                    g.total_count,
                    g.command_type.as_deref().unwrap_or("?"),
                    g.error_kind,
                    g.last_seen.to_rfc3339(),
                    one_line(&g.message, 100)
                );
            }
        }
        DlqCommand::Show { id } => println!("{}", serde_json::to_string_pretty(&ops.detail(id).await?)?),
        DlqCommand::Replay { id, payload, all, filter, limit, rate } => {
            connected(broker, cancel).await?;
            match (id, all) {
                (Some(id), false) => {
                    let payload = payload
                        .map(|p| serde_json::from_str::<Value>(&p))
                        .transpose()
                        .context("--payload is not valid JSON")?;
                    let r = ops.replay(id, payload, actor).await?;
                    println!("replayed dead letter {} as command {}", r.dead_letter_id, r.command_id);
                }
                (None, true) => {
                    let bulk = ops.replay_many(&filter.into(), limit, rate, actor).await?;
                    println!(
                        "replayed {}, failed {}, still open and matching {}",
                        bulk.done, bulk.failed, bulk.remaining
                    );
                    for (id, e) in bulk.failures {
                        println!("  {id}: {e}");
                    }
                }
                _ => anyhow::bail!("give a dead letter id or --all (with filters), not both"),
            }
        }
        DlqCommand::Discard { id, all, filter, limit } => match (id, all) {
            (Some(id), false) => {
                ops.discard(id, actor).await?;
                println!("discarded {id}");
            }
            (None, true) => {
                let bulk = ops.discard_many(&filter.into(), limit, actor).await?;
                println!("discarded {}, still open and matching {}", bulk.done, bulk.remaining);
            }
            _ => anyhow::bail!("give a dead letter id or --all (with filters), not both"),
        },
    }
    Ok(())
}

async fn connected(broker: &Broker, cancel: &CancellationToken) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(10), broker.wait_link(cancel))
        .await
        .ok()
        .flatten()
        .map(|_| ())
        .context("cannot reach RabbitMQ within 10 s")
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() > max {
        flat.chars().take(max).chain(std::iter::once('…')).collect()
    } else {
        flat
    }
}
