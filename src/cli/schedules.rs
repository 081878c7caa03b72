//! `sluice schedules list|show|put|pause|resume|delete`: recurring schedules from a shell,
//! any tenant's (audited as `cli:…`).

use crate::config::Settings;
use crate::ops::schedules::{CatchUp, ScheduleInput, ScheduleView};
use crate::schemas::SchemaRegistry;
use clap::Subcommand;
use serde_json::Value;
use std::sync::Arc;

/// `sluice schedules ...`
#[derive(Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule of every tenant, with its next tick.
    List,
    /// One schedule: its next ticks and last outcomes.
    Show {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Create or replace a schedule.
    Put {
        name: String,
        #[arg(long)]
        tenant: String,
        /// 5 fields, or 6 with seconds first, e.g. "*/5 * * * *".
        #[arg(long)]
        cron: String,
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// The command type each tick submits.
        #[arg(long = "type")]
        kind: String,
        /// Its payload, as JSON.
        #[arg(long)]
        payload: String,
        /// high, normal or low.
        #[arg(long)]
        priority: Option<String>,
        /// skip (default) or once.
        #[arg(long, default_value = "skip")]
        catch_up: String,
        #[arg(long)]
        paused: bool,
    },
    /// Stop firing (the schedule stays).
    Pause {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Fire again, from the next tick after now.
    Resume {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Delete a schedule (commands it submitted stay).
    Delete {
        name: String,
        #[arg(long)]
        tenant: String,
    },
}

/// Runs one `sluice schedules` subcommand.
pub async fn run(settings: Settings, schemas: Arc<SchemaRegistry>, command: SchedulesCommand) -> anyhow::Result<()> {
    let pool = crate::store::ready_pool(&settings.database).await?;
    let (ops, broker, cancel) = super::dlq::operators(&settings, pool, schemas)?;
    let actor = super::actor();
    let result = async {
        match command {
            SchedulesCommand::List => {
                for s in ops.list_schedules().await? {
                    println!("{}", line(&s));
                }
            }
            SchedulesCommand::Show { name, tenant } => show(&ops.get_schedule(&tenant, &name).await?),
            SchedulesCommand::Put { name, tenant, cron, timezone, kind, payload, priority, catch_up, paused } => {
                let payload: Value =
                    serde_json::from_str(&payload).map_err(|e| anyhow::anyhow!("--payload is not JSON: {e}"))?;
                let mut command = serde_json::json!({"type": kind, "payload": payload});
                if let Some(p) = priority {
                    command["priority"] = Value::String(p);
                }
                let catch_up = match catch_up.as_str() {
                    "skip" => CatchUp::Skip,
                    "once" => CatchUp::Once,
                    other => anyhow::bail!("--catch-up is skip or once, not {other:?}"),
                };
                let input = ScheduleInput { cron, timezone: Some(timezone), command, catch_up, paused };
                let (view, created) = ops.put_schedule(&tenant, &name, input, &actor).await?;
                println!("{} {}", if created { "created" } else { "replaced" }, line(&view));
            }
            SchedulesCommand::Pause { name, tenant } => set_paused(&ops, &tenant, &name, true, &actor).await?,
            SchedulesCommand::Resume { name, tenant } => set_paused(&ops, &tenant, &name, false, &actor).await?,
            SchedulesCommand::Delete { name, tenant } => {
                ops.delete_schedule(&tenant, &name, &actor).await?;
                println!("deleted {name}");
            }
        }
        anyhow::Ok(())
    }
    .await;
    broker.close().await;
    cancel.cancel();
    result
}

async fn set_paused(
    ops: &crate::ops::Operators,
    tenant: &str,
    name: &str,
    paused: bool,
    actor: &str,
) -> anyhow::Result<()> {
    let s = ops.get_schedule(tenant, name).await?;
    let input =
        ScheduleInput { cron: s.cron, timezone: Some(s.timezone), command: s.command, catch_up: s.catch_up, paused };
    let (view, _) = ops.put_schedule(tenant, name, input, actor).await?;
    println!("{}", line(&view));
    Ok(())
}

/// `name  cron  timezone  type  next` (or `paused`).
fn line(s: &ScheduleView) -> String {
    let next = match (&s.next_fire_at, s.paused) {
        (_, true) => "paused".to_owned(),
        (Some(t), false) => t.to_rfc3339(),
        (None, false) => "no later tick".to_owned(),
    };
    format!("{}\t{}\t{}\t{}\t{next}", s.name, s.cron, s.timezone, s.command["type"].as_str().unwrap_or(""))
}

fn show(s: &ScheduleView) {
    println!("{}", line(s));
    for t in &s.upcoming {
        println!("next\t{}", t.to_rfc3339());
    }
    for f in &s.recent {
        println!("fired\t{}\t{}\t{}", f.tick.to_rfc3339(), f.command_id, f.status);
    }
}
