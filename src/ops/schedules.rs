//! Recurring schedules: create or replace, read, list and delete, within a reach. Every change
//! is audited.

use super::{Operators, OpsError};
use crate::command::Priority;
use crate::ingest::{parse_command, Timing};
use crate::schedule::cron::Pattern;
use crate::store::schedules::{self, Fire, NewSchedule, Schedule};
use crate::store::{audit, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

/// Fire times shown ahead.
const UPCOMING: usize = 5;
/// Past ticks shown.
const RECENT: i64 = 10;

/// What happens to ticks missed while no worker ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Drop them.
    #[default]
    Skip,
    /// Fire the latest of them, once.
    Once,
}

impl CatchUp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Once => "once",
        }
    }
}

/// A schedule as submitted (`PUT /v1/schedules/{name}`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    /// 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first.
    #[schema(example = "*/5 * * * *")]
    pub cron: String,
    /// IANA time zone the pattern is read in (default UTC).
    #[serde(default)]
    #[schema(example = "Europe/Paris")]
    pub timezone: Option<String>,
    /// `{"type", "payload", "priority"?}`: what each tick submits.
    #[schema(value_type = Object)]
    pub command: Value,
    #[serde(default)]
    pub catch_up: CatchUp,
    #[serde(default)]
    pub paused: bool,
}

/// A schedule as read back.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleView {
    pub tenant: String,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// `{"type", "payload", "priority"}`.
    #[schema(value_type = Object)]
    pub command: Value,
    pub catch_up: CatchUp,
    pub paused: bool,
    /// The next tick (none while paused, or when the pattern has no later tick).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The next few ticks.
    pub upcoming: Vec<DateTime<Utc>>,
    /// The latest ticks fired, newest first, with their commands' status.
    pub recent: Vec<Fire>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The longest schedule name.
pub const MAX_NAME: usize = 100;

/// Whether `name` may name a schedule: 1 to [`MAX_NAME`] of `A-Z a-z 0-9 . _ -`, not starting
/// with a dot or a dash.
pub fn valid_name(name: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(ok)
        && !name.starts_with('.')
        && !name.starts_with('-')
}

fn field_error(path: &str, message: impl Into<String>) -> OpsError {
    OpsError::InvalidField { path: path.to_owned(), message: message.into() }
}

impl Operators {
    /// Creates or replaces schedule `name` of `tenant`; its view, and whether it is new. The
    /// next tick is computed from now.
    #[tracing::instrument(skip(self, input), fields(reach = ?self.reach))]
    pub async fn put_schedule(
        &self,
        tenant: &str,
        name: &str,
        input: ScheduleInput,
        actor: &str,
    ) -> Result<(ScheduleView, bool), OpsError> {
        if !self.reach.covers(Some(tenant)) {
            return Err(OpsError::NotFound(format!("no schedule {name}")));
        }
        if !valid_name(name) {
            let why = format!("a schedule name is 1-{MAX_NAME} of A-Z a-z 0-9 . _ - (not starting with . or -)");
            return Err(OpsError::BadInput(why));
        }
        let timezone = input.timezone.clone().unwrap_or_else(|| "UTC".into());
        let pattern =
            Pattern::parse(&input.cron, &timezone).map_err(|e| field_error(&format!("/{}", e.field), e.message))?;
        let parsed = parse_command(&self.schemas, input.command.clone()).map_err(|e| match e {
            crate::ingest::IngestError::Invalid { message, violations, .. } => {
                let path =
                    violations.first().map(|v| format!("/command{}", v.path)).unwrap_or_else(|| "/command".into());
                field_error(&path, message)
            }
            other => field_error("/command", other.to_string()),
        })?;
        if parsed.timing != Timing::Now {
            return Err(field_error("/command", "a schedule's command cannot carry run_at or delay_ms"));
        }
        let priority = parsed.priority.unwrap_or_default();
        let next = if input.paused { None } else { pattern.next_after(Utc::now()) };
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let row = NewSchedule {
            tenant,
            name,
            cron: input.cron.trim(),
            timezone: &timezone,
            command_type: &parsed.kind,
            payload: &parsed.payload,
            priority: priority.as_str(),
            catch_up: input.catch_up.as_str(),
            paused: input.paused,
            next_fire_at: next,
        };
        let (stored, created) = schedules::upsert(&mut tx, &row).await?;
        let details = json!({"tenant": tenant, "cron": row.cron, "timezone": timezone, "type": parsed.kind,
                             "paused": input.paused, "created": created});
        audit::record(&mut tx, actor, "schedule.put", name, &details).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok((self.view(stored).await?, created))
    }

    /// One schedule of `tenant`.
    pub async fn get_schedule(&self, tenant: &str, name: &str) -> Result<ScheduleView, OpsError> {
        let found = match self.reach.covers(Some(tenant)) {
            true => schedules::get(&self.pool, tenant, name).await?,
            false => None,
        };
        let row = found.ok_or_else(|| OpsError::NotFound(format!("no schedule {name}")))?;
        self.view(row).await
    }

    /// Every schedule in reach.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleView>, OpsError> {
        let mut out = Vec::new();
        for row in schedules::list(&self.pool, self.reach.tenant()).await? {
            out.push(self.view(row).await?);
        }
        Ok(out)
    }

    /// Deletes schedule `name` of `tenant`; commands it already submitted stay.
    pub async fn delete_schedule(&self, tenant: &str, name: &str, actor: &str) -> Result<(), OpsError> {
        let not_found = || OpsError::NotFound(format!("no schedule {name}"));
        if !self.reach.covers(Some(tenant)) {
            return Err(not_found());
        }
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        if !schedules::delete(&mut tx, tenant, name).await? {
            return Err(not_found());
        }
        audit::record(&mut tx, actor, "schedule.delete", name, &json!({"tenant": tenant})).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn view(&self, s: Schedule) -> Result<ScheduleView, OpsError> {
        let upcoming = match (&s.next_fire_at, Pattern::parse(&s.cron, &s.timezone)) {
            (Some(next), Ok(p)) => {
                let mut ticks = vec![*next];
                ticks.extend(p.upcoming(*next, UPCOMING - 1));
                ticks
            }
            _ => Vec::new(),
        };
        let recent = schedules::recent_fires(&self.pool, &s.tenant, &s.name, RECENT).await?;
        let priority = Priority::parse(&s.priority).unwrap_or_default();
        Ok(ScheduleView {
            command: json!({"type": s.command_type, "payload": s.payload, "priority": priority}),
            catch_up: if s.catch_up == "once" { CatchUp::Once } else { CatchUp::Skip },
            tenant: s.tenant,
            name: s.name,
            cron: s.cron,
            timezone: s.timezone,
            paused: s.paused,
            next_fire_at: s.next_fire_at,
            upcoming,
            recent,
            created_at: s.created_at,
            updated_at: s.updated_at,
        })
    }
}
