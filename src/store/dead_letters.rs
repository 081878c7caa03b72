//! The `dead_letters` table: parked poison messages, their groups, replays and discards.

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A dead letter as it is recorded.
#[derive(Debug, Clone)]
pub struct NewDeadLetter<'a> {
    pub id: Uuid,
    pub command_id: Option<Uuid>,
    pub tenant: Option<&'a str>,
    pub command_type: Option<&'a str>,
    pub body: &'a [u8],
    pub headers: Value,
    pub error_kind: &'a str,
    pub error: &'a str,
    pub attempts: i32,
}

/// Records a dead letter; a redelivered dead-letter message (same id) is ignored.
pub async fn insert(tx: &mut PgConnection, d: &NewDeadLetter<'_>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO dead_letters
                (id, command_id, tenant, command_type, body, headers, error_kind, error, attempts, fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(d.id)
    .bind(d.command_id)
    .bind(d.tenant)
    .bind(d.command_type)
    .bind(d.body)
    .bind(&d.headers)
    .bind(d.error_kind)
    .bind(d.error)
    .bind(d.attempts)
    .bind(fingerprint(d.command_type, d.error_kind, d.error))
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The group a dead letter belongs to: its command type, error kind and error message with
/// what differs between occurrences of one cause (ids, numbers, quoted values) masked.
pub fn fingerprint(command_type: Option<&str>, error_kind: &str, error: &str) -> String {
    let mut h = Sha256::new();
    h.update(command_type.unwrap_or("?").as_bytes());
    h.update([0]);
    h.update(error_kind.as_bytes());
    h.update([0]);
    h.update(normalize(error).as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// `error` with quoted strings replaced by `"…"` and runs of digits (with hex letters when
/// they are part of a run that has digits, as in UUIDs) by `#`.
pub fn normalize(error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    let mut chars = error.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' {
            for d in chars.by_ref() {
                if d == c {
                    break;
                }
            }
            out.push(c);
            out.push('…');
            out.push(c);
        } else if c.is_ascii_alphanumeric() {
            let mut token = String::from(c);
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '-' || d == '_' {
                    token.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            if token.chars().any(|t| t.is_ascii_digit()) {
                out.push('#');
            } else {
                out.push_str(&token);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterState {
    /// Waiting for an operator.
    #[default]
    Open,
    /// Published to the work queue again.
    Replayed,
    /// Given up on.
    Discarded,
}

impl DeadLetterState {
    /// Every state.
    pub const ALL: [Self; 3] = [Self::Open, Self::Replayed, Self::Discarded];

    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Replayed => "replayed",
            Self::Discarded => "discarded",
        }
    }

    /// Parses a stored or shown word.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl TryFrom<String> for DeadLetterState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown dead-letter state {s:?}"))
    }
}

impl std::fmt::Display for DeadLetterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which dead letters an operator means; empty fields match all.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize, utoipa::ToSchema)]
pub struct Filter {
    /// `open` when absent.
    pub state: Option<DeadLetterState>,
    pub command_type: Option<String>,
    pub tenant: Option<String>,
    pub error_kind: Option<String>,
    /// Matches errors containing this text (case-insensitive).
    pub error: Option<String>,
    pub fingerprint: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    fn state(&self) -> &'static str {
        self.state.unwrap_or_default().as_str()
    }

    fn error_pattern(&self) -> Option<String> {
        self.error.as_ref().map(|e| format!("%{}%", e.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")))
    }
}

/// One dead letter in a list.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Summary {
    pub id: Uuid,
    pub command_id: Option<Uuid>,
    pub tenant: Option<String>,
    pub command_type: Option<String>,
    pub error_kind: String,
    pub error: String,
    pub attempts: i32,
    pub dead_at: DateTime<Utc>,
    #[sqlx(try_from = "String")]
    pub state: DeadLetterState,
    pub fingerprint: String,
    pub replay_count: i32,
}

/// One dead letter in full.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeadLetter {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub summary: Summary,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub headers: Value,
    pub replayed_at: Option<DateTime<Utc>>,
    pub discarded_at: Option<DateTime<Utc>>,
    pub replayed_payload: Option<Value>,
}

/// Dead letters matching `f`, newest first, after the keyset cursor `before` (`dead_at`, `id`).
pub async fn list(
    pool: &PgPool,
    f: &Filter,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Summary>, StoreError> {
    let (before_at, before_id) = before.unzip();
    Ok(sqlx::query_as::<_, Summary>(
        "SELECT id, command_id, tenant, command_type, error_kind, error, attempts, dead_at, state, fingerprint, replay_count
          FROM dead_letters
         WHERE state = $1
           AND ($2::text IS NULL OR command_type = $2)
           AND ($3::text IS NULL OR tenant = $3)
           AND ($4::text IS NULL OR error_kind = $4)
           AND ($5::text IS NULL OR error ILIKE $5)
           AND ($6::text IS NULL OR fingerprint = $6)
           AND ($7::timestamptz IS NULL OR dead_at >= $7)
           AND ($8::timestamptz IS NULL OR dead_at < $8)
           AND ($9::timestamptz IS NULL OR (dead_at, id) < ($9, $10))
         ORDER BY dead_at DESC, id DESC
         LIMIT $11",
    )
        // Unnamed statement: planned with the actual filters, so each picks its index.
        .persistent(false)
        .bind(f.state())
        .bind(&f.command_type)
        .bind(&f.tenant)
        .bind(&f.error_kind)
        .bind(f.error_pattern())
        .bind(&f.fingerprint)
        .bind(f.since)
        .bind(f.until)
        .bind(before_at)
        .bind(before_id)
        .bind(limit)
        .fetch_all(pool)
        .await?)
}

/// How many dead letters match `f`.
pub async fn count(pool: &PgPool, f: &Filter) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM dead_letters
          WHERE state = $1
            AND ($2::text IS NULL OR command_type = $2)
            AND ($3::text IS NULL OR tenant = $3)
            AND ($4::text IS NULL OR error_kind = $4)
            AND ($5::text IS NULL OR error ILIKE $5)
            AND ($6::text IS NULL OR fingerprint = $6)
            AND ($7::timestamptz IS NULL OR dead_at >= $7)
            AND ($8::timestamptz IS NULL OR dead_at < $8)",
    )
    .persistent(false)
    .bind(f.state())
    .bind(&f.command_type)
    .bind(&f.tenant)
    .bind(&f.error_kind)
    .bind(f.error_pattern())
    .bind(&f.fingerprint)
    .bind(f.since)
    .bind(f.until)
    .fetch_one(pool)
    .await?)
}

/// One dead letter.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<DeadLetter>, StoreError> {
    Ok(sqlx::query_as::<_, DeadLetter>(
        "SELECT id, command_id, tenant, command_type, error_kind, error, attempts, dead_at, state, fingerprint,
                replay_count, body, headers, replayed_at, discarded_at, replayed_payload
           FROM dead_letters WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// One dead letter, row-locked until `tx` ends (so a replay and a discard cannot interleave).
pub async fn get_for_update(tx: &mut PgConnection, id: Uuid) -> Result<Option<DeadLetter>, StoreError> {
    Ok(sqlx::query_as::<_, DeadLetter>(
        "SELECT id, command_id, tenant, command_type, error_kind, error, attempts, dead_at, state, fingerprint,
                replay_count, body, headers, replayed_at, discarded_at, replayed_payload
           FROM dead_letters WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(tx)
    .await?)
}

/// A group of dead letters with one cause.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Group {
    pub fingerprint: String,
    pub command_type: Option<String>,
    pub error_kind: String,
    /// The latest error of the group, as it was (not normalized).
    pub message: String,
    pub open_count: i64,
    pub total_count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// Groups that still hold open dead letters, most recently seen first.
pub async fn groups(pool: &PgPool, limit: i64) -> Result<Vec<Group>, StoreError> {
    Ok(sqlx::query_as::<_, Group>(
        "SELECT fingerprint, command_type, error_kind, message, open_count, total_count, first_seen, last_seen
           FROM dead_letter_groups WHERE open_count > 0 ORDER BY last_seen DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// [`groups`] of one tenant's open dead letters, counted from the dead letters themselves (the
/// groups table spans tenants); `message` is the group's latest error.
pub async fn groups_of(pool: &PgPool, tenant: &str, limit: i64) -> Result<Vec<Group>, StoreError> {
    Ok(sqlx::query_as::<_, Group>(
        "SELECT fingerprint, (array_agg(command_type ORDER BY dead_at DESC))[1] AS command_type,
                (array_agg(error_kind ORDER BY dead_at DESC))[1] AS error_kind,
                (array_agg(error ORDER BY dead_at DESC))[1] AS message,
                count(*) FILTER (WHERE state = 'open') AS open_count, count(*) AS total_count,
                min(dead_at) AS first_seen, max(dead_at) AS last_seen
           FROM dead_letters WHERE tenant = $1
          GROUP BY fingerprint HAVING count(*) FILTER (WHERE state = 'open') > 0
          ORDER BY last_seen DESC LIMIT $2",
    )
    .bind(tenant)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Open dead letters in all (from the groups table: no scan of dead letters).
pub async fn open_count(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar::<_, i64>("SELECT coalesce(sum(open_count), 0)::bigint FROM dead_letter_groups")
        .fetch_one(pool)
        .await?)
}

/// Records a replay (the letter leaves the open set); `payload` when an operator edited it.
pub async fn mark_replayed(tx: &mut PgConnection, id: Uuid, payload: Option<&Value>) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE dead_letters
            SET state = 'replayed', replay_count = replay_count + 1, replayed_at = now(),
                replayed_payload = coalesce($2, replayed_payload)
          WHERE id = $1",
    )
    .bind(id)
    .bind(payload)
    .execute(tx)
    .await?;
    Ok(())
}

/// Discards an open dead letter; false if it was not open.
pub async fn mark_discarded(tx: &mut PgConnection, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE dead_letters SET state = 'discarded', discarded_at = now() WHERE id = $1 AND state = 'open'",
    )
    .bind(id)
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Discards those of `ids` that are open; returns how many.
pub async fn mark_discarded_many(tx: &mut PgConnection, ids: &[Uuid]) -> Result<usize, StoreError> {
    let done = sqlx::query(
        "UPDATE dead_letters SET state = 'discarded', discarded_at = now() WHERE id = ANY($1) AND state = 'open'",
    )
    .bind(ids)
    .execute(tx)
    .await?;
    Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::{fingerprint, normalize};

    #[test]
    fn errors_that_differ_only_in_ids_numbers_and_quoted_values_share_a_fingerprint() {
        let a = "account \"alice\" holds 100 cents, 250 needed (cmd 0190f3a2-7c1e-7d3b-9a4e-1f2e3d4c5b6a)";
        let b = "account \"bob\" holds 7 cents, 9 needed (cmd 0190f3a2-0000-7d3b-9a4e-aaaaaaaaaaaa)";
        assert_eq!(normalize(a), "account \"…\" holds # cents, # needed (cmd #)");
        assert_eq!(
            fingerprint(Some("ledger.transfer"), "permanent", a),
            fingerprint(Some("ledger.transfer"), "permanent", b)
        );
    }

    #[test]
    fn a_different_type_kind_or_wording_is_a_different_group() {
        let f = |t, k, e| fingerprint(Some(t), k, e);
        let base = f("event.record", "permanent", "missing field `name`");
        assert_ne!(base, f("ledger.transfer", "permanent", "missing field `name`"));
        assert_ne!(base, f("event.record", "transient", "missing field `name`"));
        assert_ne!(base, f("event.record", "permanent", "missing field `data`"));
    }
}
