//! The `events` table: each tenant's append-only event log.

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A recorded event.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Event {
    pub id: Uuid,
    pub name: String,
    pub data: Value,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

/// Which events to list: optional name and half-open time range, after a cursor.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub name: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Keyset cursor: list only events after this (occurred_at, id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
    /// Most bytes of event data (as JSON text) in one page.
    pub max_bytes: i64,
}

/// Appends an event; its id is the command's, so it cannot be appended twice.
pub async fn append(
    tx: &mut PgConnection,
    id: Uuid,
    tenant: &str,
    name: &str,
    data: &Value,
    occurred_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (id, tenant, name, data, occurred_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(tenant)
    .bind(name)
    .bind(data)
    .bind(occurred_at)
    .execute(tx)
    .await?;
    Ok(())
}

/// Events to append in one statement, column by column.
#[derive(Debug, Default)]
pub struct NewEvents {
    ids: Vec<Uuid>,
    tenants: Vec<String>,
    names: Vec<String>,
    data: Vec<Value>,
    times: Vec<DateTime<Utc>>,
}

impl NewEvents {
    /// Room for `n` events.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            ids: Vec::with_capacity(n),
            tenants: Vec::with_capacity(n),
            names: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
        }
    }

    /// Adds one event.
    pub fn push(&mut self, id: Uuid, tenant: &str, name: String, data: Value, at: DateTime<Utc>) {
        self.ids.push(id);
        self.tenants.push(tenant.to_owned());
        self.names.push(name);
        self.data.push(data);
        self.times.push(at);
    }
}

/// Appends many events in one statement; ids already present are skipped.
pub async fn append_many(tx: &mut PgConnection, e: &NewEvents) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (id, tenant, name, data, occurred_at)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[])
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&e.ids)
    .bind(&e.tenants)
    .bind(&e.names)
    .bind(&e.data)
    .bind(&e.times)
    .execute(tx)
    .await?;
    Ok(())
}

/// A page of events and whether more follow it.
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// The page stopped at its row limit or its byte budget, not at the end.
    pub more: bool,
}

#[derive(sqlx::FromRow)]
struct PageRow {
    #[sqlx(flatten)]
    event: Event,
    fetched: i64,
}

/// A page of a tenant's events in time order; index-backed (tenant, [name,] occurred_at, id).
/// Besides `limit` rows it stops at `max_bytes` of event data (as JSON text), counted by the
/// database so rows past the budget are never sent or decoded; the row that crosses it is kept,
/// so a page always holds at least one event.
pub async fn list(pool: &PgPool, tenant: &str, q: &EventQuery) -> Result<EventPage, StoreError> {
    let (after_at, after_id) = q.after.map_or((None, None), |(t, id)| (Some(t), Some(id)));
    let rows = sqlx::query_as::<_, PageRow>(
        "SELECT id, name, data, occurred_at, recorded_at, fetched FROM (
           SELECT p.*, count(*) OVER () AS fetched,
                  sum(octet_length(data::text)) OVER (ORDER BY occurred_at, id) - octet_length(data::text) AS before
             FROM (SELECT id, name, data, occurred_at, recorded_at FROM events
                    WHERE tenant = $1
                      AND ($2::text IS NULL OR name = $2)
                      AND ($3::timestamptz IS NULL OR occurred_at >= $3)
                      AND ($4::timestamptz IS NULL OR occurred_at < $4)
                      AND ($5::timestamptz IS NULL OR (occurred_at, id) > ($5, $6))
                    ORDER BY occurred_at, id
                    LIMIT $7) p
         ) s
         WHERE before < $8
         ORDER BY occurred_at, id",
    )
    .bind(tenant)
    .bind(q.name.as_deref())
    .bind(q.from)
    .bind(q.to)
    .bind(after_at)
    .bind(after_id)
    .bind(q.limit)
    .bind(q.max_bytes)
    .fetch_all(pool)
    .await?;
    let fetched = rows.first().map_or(0, |r| r.fetched);
    let events: Vec<Event> = rows.into_iter().map(|r| r.event).collect();
    let more = (events.len() as i64) < fetched || fetched == q.limit;
    Ok(EventPage { events, more })
}
