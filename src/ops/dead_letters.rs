//! Replaying and discarding dead letters. A replay republishes the original command (same id,
//! so the worker's inbox applies it at most once however often it is replayed) with a fresh
//! attempt count and a header naming the dead letter it came from.

use super::{Operators, OpsError};
use crate::broker::wire::{Outgoing, TRACEPARENT_HEADER};
use crate::command::Envelope;
use crate::schemas::PayloadError;
use crate::store::dead_letters::{self, DeadLetterState, Filter};
use crate::store::{audit, commands, ordering};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Most dead letters one bulk request acts on; more takes another request (it resumes).
pub const MAX_BULK: usize = 10_000;
const PAGE: i64 = 200;

/// A replay that happened.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    pub dead_letter_id: Uuid,
    pub command_id: Uuid,
    pub edited: bool,
}

/// One dead letter in full, with the command's payload and every attempt's error.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Detail {
    #[serde(flatten)]
    pub dead_letter: dead_letters::DeadLetter,
    /// The command's payload, or the raw body as text when it is not a sluice command.
    pub payload: Value,
    /// `{"attempt", "error", "at"}` per failed attempt, oldest first.
    pub attempt_errors: Value,
}

/// What a bulk action did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Bulk {
    /// Dead letters acted on.
    pub done: usize,
    /// Dead letters that failed.
    pub failed: usize,
    /// Which failed and why (at most 20 listed): `[dead letter id, error]` pairs.
    #[schema(value_type = Vec<Vec<String>>)]
    pub failures: Vec<(Uuid, String)>,
    /// Open dead letters still matching the filter: run the same request again to go on.
    pub remaining: i64,
}

impl Operators {
    /// `filter` narrowed to the tenant in reach, whatever tenant it named.
    pub fn within_reach(&self, filter: &Filter) -> Filter {
        let mut f = filter.clone();
        if let Some(t) = self.reach.tenant() {
            f.tenant = Some(t.to_owned());
        }
        f
    }

    /// One dead letter in full: its summary, headers, decoded payload (or the raw body as text
    /// when it is not a command) and every failed attempt of its command.
    pub async fn detail(&self, id: Uuid) -> Result<Detail, OpsError> {
        let dl = dead_letters::get(&self.pool, id)
            .await?
            .filter(|dl| self.reach.covers(dl.summary.tenant.as_deref()))
            .ok_or_else(|| OpsError::NotFound(format!("no dead letter {id}")))?;
        let payload = match Envelope::decode(&dl.body) {
            Ok(cmd) => cmd.payload,
            Err(_) => Value::String(String::from_utf8_lossy(&dl.body).into_owned()),
        };
        let attempts = match dl.summary.command_id {
            Some(cid) => commands::errors_of(&self.pool, dl.summary.tenant.as_deref().unwrap_or(""), cid).await?,
            None => Value::Array(Vec::new()),
        };
        Ok(Detail { dead_letter: dl, payload, attempt_errors: attempts })
    }

    /// Replays one dead letter, optionally with an operator-edited payload (validated against
    /// its type's schema; the original body is kept and the edit is audited).
    #[tracing::instrument(skip(self, edited), fields(edited = edited.is_some()))]
    pub async fn replay(&self, id: Uuid, edited: Option<Value>, actor: &str) -> Result<Replayed, OpsError> {
        self.replay_one(id, edited, actor, true).await
    }

    async fn replay_one(
        &self,
        id: Uuid,
        edited: Option<Value>,
        actor: &str,
        audit: bool,
    ) -> Result<Replayed, OpsError> {
        // The row stays locked from the state check to the record of the replay, across the
        // publish, so a concurrent discard or replay waits and then sees this one.
        let mut tx = self.pool.begin().await.map_err(crate::store::StoreError::from)?;
        let dl = dead_letters::get_for_update(&mut tx, id)
            .await?
            .filter(|dl| self.reach.covers(dl.summary.tenant.as_deref()))
            .ok_or_else(|| OpsError::NotFound(format!("no dead letter {id}")))?;
        if dl.summary.state == DeadLetterState::Discarded {
            return Err(OpsError::Conflict(format!("dead letter {id} was discarded")));
        }
        let mut cmd = Envelope::decode(&dl.body).map_err(|e| {
            OpsError::Conflict(format!("dead letter {id} is not a sluice command ({e}); edit cannot fix it"))
        })?;
        let before = cmd.payload.clone();
        if let Some(payload) = &edited {
            self.schemas.validate(&cmd.kind, payload).map_err(|e| match e {
                PayloadError::Invalid { kind, violations } => OpsError::Invalid { kind, violations },
                PayloadError::UnknownType(kind) => {
                    OpsError::Conflict(format!("command type {kind} is no longer known"))
                }
            })?;
            cmd.payload = payload.clone();
        }
        let traceparent = dl.headers.get(TRACEPARENT_HEADER).and_then(Value::as_str);
        // The dead command that halted its key goes back to the head of the key's line, before
        // what waited behind it; the release dispatcher publishes the line.
        let into_line = match &cmd.ordering_key {
            Some(key) => {
                let k = ordering::Key { tenant: &cmd.tenant, key };
                ordering::replay_into_line(&mut tx, k, id, cmd.id, &cmd.encode(), traceparent).await?
            }
            None => false,
        };
        if !into_line {
            let out = Outgoing::replay(self.broker.topology(), &cmd, id, traceparent);
            self.broker.publish(out.message()).await?;
        }
        // Published first: if recording fails now, the replay still happened once and a
        // second replay is harmless (same command id).
        dead_letters::mark_replayed(&mut tx, id, edited.as_ref()).await?;
        if audit {
            let (action, details) = match &edited {
                Some(after) => {
                    ("dead_letter.edit_replay", json!({"command_id": cmd.id, "before": before, "after": after}))
                }
                None => ("dead_letter.replay", json!({"command_id": cmd.id})),
            };
            audit::record(&mut tx, actor, action, &format!("dead_letter/{id}"), &details).await?;
        }
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        metrics::counter!("sluice_replays_total").increment(1);
        tracing::info!(dead_letter_id = %id, command_id = %cmd.id, actor, "dead letter replayed");
        Ok(Replayed { dead_letter_id: id, command_id: cmd.id, edited: edited.is_some() })
    }

    /// Replays up to `limit` open dead letters matching `filter`, oldest pages last, at most
    /// `per_second` a second. Those replayed leave the open set, so repeating the request
    /// resumes where it stopped.
    pub async fn replay_many(
        &self,
        filter: &Filter,
        limit: usize,
        per_second: f64,
        actor: &str,
    ) -> Result<Bulk, OpsError> {
        // Detached: a caller that goes away (a proxy timeout, Ctrl-C) does not cut the job
        // short between a replay and the audit record.
        let (ops, filter, actor) = (self.clone(), self.within_reach(filter), actor.to_owned());
        tokio::spawn(async move { ops.replay_many_now(&filter, limit, per_second, &actor).await })
            .await
            .map_err(|e| OpsError::Conflict(format!("the bulk replay stopped: {e}")))?
    }

    async fn replay_many_now(
        &self,
        filter: &Filter,
        limit: usize,
        per_second: f64,
        actor: &str,
    ) -> Result<Bulk, OpsError> {
        let limit = check_bulk(filter, limit)?;
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(OpsError::BadInput("rate must be a positive number per second".into()));
        }
        let started = Instant::now();
        let mut bulk = Bulk { done: 0, failed: 0, failures: Vec::new(), remaining: 0 };
        let mut pages = Pages::new(filter, limit);
        while let Some(ids) = pages.next(self).await? {
            for id in ids {
                let due = started + Duration::from_secs_f64((bulk.done + bulk.failed) as f64 / per_second);
                tokio::time::sleep_until(due.into()).await;
                match self.replay_one(id, None, actor, false).await {
                    Ok(_) => bulk.done += 1,
                    // The broker is away: stop here; the request can be repeated to resume.
                    Err(OpsError::Publish(e)) => return Err(OpsError::Publish(e)),
                    Err(e) => {
                        bulk.failed += 1;
                        if bulk.failures.len() < 20 {
                            bulk.failures.push((id, e.to_string()));
                        }
                    }
                }
            }
        }
        self.finish_bulk(filter, &mut bulk, "dead_letter.replay_many", actor).await?;
        Ok(bulk)
    }

    /// Discards one open dead letter: it stays in the table, out of the open set.
    pub async fn discard(&self, id: Uuid, actor: &str) -> Result<(), OpsError> {
        let dl = dead_letters::get(&self.pool, id)
            .await?
            .filter(|dl| self.reach.covers(dl.summary.tenant.as_deref()))
            .ok_or_else(|| OpsError::NotFound(format!("no dead letter {id}")))?;
        let mut tx = self.pool.begin().await.map_err(crate::store::StoreError::from)?;
        if !dead_letters::mark_discarded(&mut tx, id).await? {
            return Err(OpsError::Conflict(format!("dead letter {id} is {}, not open", dl.summary.state)));
        }
        ordering::release_dead_letters(&mut tx, &[id]).await?;
        audit::record(&mut tx, actor, "dead_letter.discard", &format!("dead_letter/{id}"), &json!({})).await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        Ok(())
    }

    /// Discards up to `limit` open dead letters matching `filter`.
    pub async fn discard_many(&self, filter: &Filter, limit: usize, actor: &str) -> Result<Bulk, OpsError> {
        let (ops, filter, actor) = (self.clone(), self.within_reach(filter), actor.to_owned());
        tokio::spawn(async move { ops.discard_many_now(&filter, limit, &actor).await })
            .await
            .map_err(|e| OpsError::Conflict(format!("the bulk discard stopped: {e}")))?
    }

    async fn discard_many_now(&self, filter: &Filter, limit: usize, actor: &str) -> Result<Bulk, OpsError> {
        let limit = check_bulk(filter, limit)?;
        let mut bulk = Bulk { done: 0, failed: 0, failures: Vec::new(), remaining: 0 };
        let mut pages = Pages::new(filter, limit);
        while let Some(ids) = pages.next(self).await? {
            let mut tx = self.pool.begin().await.map_err(crate::store::StoreError::from)?;
            bulk.done += dead_letters::mark_discarded_many(&mut tx, &ids).await?;
            ordering::release_dead_letters(&mut tx, &ids).await?;
            tx.commit().await.map_err(crate::store::StoreError::from)?;
        }
        self.finish_bulk(filter, &mut bulk, "dead_letter.discard_many", actor).await?;
        Ok(bulk)
    }

    async fn finish_bulk(&self, filter: &Filter, bulk: &mut Bulk, action: &str, actor: &str) -> Result<(), OpsError> {
        bulk.remaining = dead_letters::count(&self.pool, filter).await?;
        let details = json!({"filter": filter, "done": bulk.done, "failed": bulk.failed, "remaining": bulk.remaining});
        let mut tx = self.pool.begin().await.map_err(crate::store::StoreError::from)?;
        audit::record(&mut tx, actor, action, "dead_letters", &details).await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        Ok(())
    }
}

/// Open dead letters matching a filter, page by page, `limit` in all.
struct Pages<'a> {
    filter: &'a Filter,
    limit: usize,
    seen: usize,
    cursor: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
}

impl<'a> Pages<'a> {
    fn new(filter: &'a Filter, limit: usize) -> Self {
        Self { filter, limit, seen: 0, cursor: None }
    }

    async fn next(&mut self, ops: &Operators) -> Result<Option<Vec<Uuid>>, OpsError> {
        if self.seen >= self.limit {
            return Ok(None);
        }
        let want = i64::try_from(self.limit - self.seen).unwrap_or(PAGE).min(PAGE);
        let page = dead_letters::list(&ops.pool, self.filter, self.cursor, want).await?;
        let Some(last) = page.last() else { return Ok(None) };
        self.cursor = Some((last.dead_at, last.id));
        self.seen += page.len();
        Ok(Some(page.into_iter().map(|d| d.id).collect()))
    }
}

fn check_bulk(filter: &Filter, limit: usize) -> Result<usize, OpsError> {
    if filter.state.is_some_and(|s| s != DeadLetterState::Open) {
        return Err(OpsError::BadInput("bulk actions apply to open dead letters only".into()));
    }
    if limit == 0 || limit > MAX_BULK {
        return Err(OpsError::BadInput(format!("limit must be between 1 and {MAX_BULK}")));
    }
    Ok(limit)
}
