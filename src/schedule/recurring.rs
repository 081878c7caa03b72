//! Fires due recurring schedules. Every worker process runs this beside the dispatcher; due
//! rows are shared through `FOR UPDATE SKIP LOCKED`, and a schedule's next tick moves on in
//! the transaction that published its command, after the confirm. The command's id comes from
//! the schedule and the tick, so a tick fired twice (a crash between confirm and commit) is one
//! command in the inbox.
//!
//! A tick is on time until `scheduling.catch_up_grace_secs` after it. Ticks missed for longer
//! (no worker ran, or the schedule's process was stopped) follow the schedule's `catch_up`:
//! `skip` drops them, `once` fires the latest of them once.

use super::cron::Pattern;
use crate::broker::wire::{new_traceparent, Outgoing};
use crate::broker::{Broker, Message};
use crate::command::{command_id_for_tick, Envelope, Priority};
use crate::store::schedules::{self, Schedule};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Most schedules fired per transaction.
const ROUND: i64 = 100;
/// Missed ticks counted at most (for display).
const COUNT_CAP: usize = 10_000;

/// What a due schedule does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The tick to fire, if any.
    pub fire: Option<DateTime<Utc>>,
    /// Ticks passed over (dropped, or stood for by the one fired).
    pub missed: usize,
    /// Where the schedule goes on from (`None`: the pattern has no later tick).
    pub next: Option<DateTime<Utc>>,
}

/// Decides what schedule `pattern` with next tick `due` does at `now`. A tick within `grace`
/// of now fires (the next round fires the one after it, if that is due too); older ticks are
/// missed, and `once` fires the latest of them in their stead.
pub fn decide(
    pattern: &Pattern,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    once: bool,
    grace: chrono::Duration,
) -> Decision {
    let cutoff = now - grace;
    if due >= cutoff {
        return Decision { fire: Some(due), missed: 0, next: pattern.next_after(due) };
    }
    // `due` and every tick after it up to `cutoff` were missed.
    let latest = pattern.latest_at_or_before(cutoff).filter(|l| *l >= due).unwrap_or(due);
    let stale = 1 + pattern.count_between(due, latest, COUNT_CAP);
    let next = pattern.next_after(latest);
    if once {
        Decision { fire: Some(latest), missed: stale - 1, next }
    } else {
        Decision { fire: None, missed: stale, next }
    }
}

/// Fires the due schedules of one round; how many commands were published.
#[tracing::instrument(skip_all, fields(due, fired))]
pub async fn fire_once(pool: &PgPool, broker: &Broker, grace: chrono::Duration) -> Result<usize, StoreError> {
    let mut tx = pool.begin().await?;
    let due = schedules::lock_due(&mut tx, ROUND).await?;
    tracing::Span::current().record("due", due.len());
    if due.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    let mut plans: Vec<(Schedule, Decision, Option<Envelope>)> = Vec::with_capacity(due.len());
    for s in due {
        let Some(at) = s.next_fire_at else { continue };
        let pattern = match Pattern::parse(&s.cron, &s.timezone) {
            Ok(p) => p,
            Err(e) => {
                // Checked when stored; a zone database change could still break one. Parked.
                tracing::warn!(tenant = %s.tenant, name = %s.name, error = %e, "schedule no longer parses; paused");
                schedules::advance(&mut tx, &s.tenant, &s.name, None).await?;
                continue;
            }
        };
        let decision = decide(&pattern, at, now, s.catch_up == "once", grace);
        let cmd = decision.fire.map(|tick| {
            let mut cmd = Envelope::new(&s.tenant, &s.command_type, s.payload.clone(), None);
            cmd.id = command_id_for_tick(&s.tenant, &s.name, tick);
            cmd.run_at = Some(tick);
            cmd.priority = Priority::parse(&s.priority).unwrap_or_default();
            cmd
        });
        plans.push((s, decision, cmd));
    }
    let topology = broker.topology();
    let outgoing: Vec<Outgoing> = plans
        .iter()
        .filter_map(|(_, _, cmd)| cmd.as_ref().map(|c| Outgoing::first_attempt(topology, c, &new_traceparent())))
        .collect();
    let msgs: Vec<Message> = outgoing.iter().map(Outgoing::message).collect();
    let mut results = broker.publish_many(&msgs).await.into_iter();
    let mut fired = 0;
    for (s, decision, cmd) in &plans {
        if let (Some(cmd), Some(tick)) = (cmd, decision.fire) {
            if results.next().is_some_and(|r| r.is_err()) {
                // Not confirmed: the schedule stays due and the next round tries the same id.
                continue;
            }
            let missed = i32::try_from(decision.missed).unwrap_or(i32::MAX);
            schedules::record_fire(&mut tx, &s.tenant, &s.name, tick, cmd.id, missed).await?;
            fired += 1;
            metrics::counter!("sluice_schedule_fires_total").increment(1);
        } else if decision.missed > 0 {
            metrics::counter!("sluice_schedule_ticks_skipped_total").increment(decision.missed as u64);
        }
        schedules::advance(&mut tx, &s.tenant, &s.name, decision.next).await?;
    }
    tx.commit().await?;
    tracing::Span::current().record("fired", fired);
    Ok(fired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, m, s).unwrap()
    }

    #[test]
    fn an_on_time_tick_fires_and_the_schedule_moves_to_the_next() {
        let p = Pattern::parse("*/5 * * * *", "UTC").unwrap();
        let d = decide(&p, at(10, 5, 0), at(10, 5, 1), false, chrono::Duration::seconds(60));
        assert_eq!(d, Decision { fire: Some(at(10, 5, 0)), missed: 0, next: Some(at(10, 10, 0)) });
    }

    #[test]
    fn after_an_outage_skip_drops_the_missed_ticks_and_once_fires_the_latest_once() {
        let p = Pattern::parse("*/5 * * * *", "UTC").unwrap();
        let grace = chrono::Duration::seconds(60);
        // Due at 10:05, nothing ran until 10:32: 10:05 ... 10:30 were missed (six ticks).
        let skip = decide(&p, at(10, 5, 0), at(10, 32, 0), false, grace);
        assert_eq!(skip, Decision { fire: None, missed: 6, next: Some(at(10, 35, 0)) });
        let once = decide(&p, at(10, 5, 0), at(10, 32, 0), true, grace);
        assert_eq!(once, Decision { fire: Some(at(10, 30, 0)), missed: 5, next: Some(at(10, 35, 0)) });
    }

    #[test]
    fn ticks_within_the_grace_all_fire_one_round_each_and_only_older_ones_count_as_missed() {
        let p = Pattern::parse("*/10 * * * * *", "UTC").unwrap();
        let grace = chrono::Duration::seconds(60);
        // A 25 s stall: 10:00:00, :10 and :20 are all within the grace, so each fires in turn.
        let now = at(10, 0, 25);
        let first = decide(&p, at(10, 0, 0), now, false, grace);
        assert_eq!(first, Decision { fire: Some(at(10, 0, 0)), missed: 0, next: Some(at(10, 0, 10)) });
        let second = decide(&p, at(10, 0, 10), now, false, grace);
        assert_eq!(second.fire, Some(at(10, 0, 10)));
        // Back after 2 minutes: ticks older than the grace are missed; the fresh ones follow.
        let skip = decide(&p, at(10, 0, 0), at(10, 2, 5), false, grace);
        assert_eq!(skip, Decision { fire: None, missed: 7, next: Some(at(10, 1, 10)) });
    }
}
