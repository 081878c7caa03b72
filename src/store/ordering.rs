//! The `ordering_blocks` and `ordering_held` tables: keys whose line is held back, and the
//! commands waiting in it (the protocol is in the migration that creates them).

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One tenant's ordering key.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub tenant: &'a str,
    pub key: &'a str,
}

/// A blocked key as the worker sees it, locked.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Block {
    pub command_id: Uuid,
    pub halted: bool,
    /// Whether `not_before` has passed.
    pub due: bool,
}

/// The first command in a key's line.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Head {
    pub seq: i64,
    pub command_id: Uuid,
    pub published: bool,
}

/// Where a delivery of an ordered command stands, decided under its key's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Its key has no block: it may be applied.
    Free,
    /// A released copy at the head of its open line, published this round: it may be applied.
    Head,
    /// Its key is blocked by another command: it goes to the end of the line.
    Behind,
    /// A copy that is not (or no longer) the one to run: nothing to do.
    Stale,
}

/// Locks the key's block (if any) to the end of the transaction and says where a delivery of
/// `command_id` (released at `held_seq`, if it was) stands.
pub async fn position(
    tx: &mut PgConnection,
    k: Key<'_>,
    command_id: Uuid,
    held_seq: Option<i64>,
) -> Result<Position, StoreError> {
    let block = lock_block(tx, k).await?;
    Ok(match (held_seq, block) {
        (None, None) => Position::Free,
        // The command blocking the key itself, delivered again (its ack was lost): its place
        // is taken care of.
        (None, Some(b)) if b.command_id == command_id => Position::Stale,
        (None, Some(_)) => Position::Behind,
        (Some(_), None) => Position::Stale,
        (Some(seq), Some(b)) => {
            let head = head(tx, k).await?;
            let at_head = head.is_some_and(|h| h.seq == seq && h.command_id == command_id && h.published);
            if at_head && !b.halted && b.due {
                Position::Head
            } else {
                Position::Stale
            }
        }
    })
}

/// A command to put in a key's line.
#[derive(Debug, Clone)]
pub struct Waiting<'a> {
    pub command_id: Uuid,
    pub body: &'a [u8],
    pub attempt: u32,
    pub traceparent: Option<&'a str>,
}

/// Locks the key's block row, if it has one, to the end of the transaction.
pub async fn lock_block(tx: &mut PgConnection, k: Key<'_>) -> Result<Option<Block>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT command_id, halted, not_before <= now() AS due FROM ordering_blocks
         WHERE tenant = $1 AND ordering_key = $2 FOR UPDATE",
    )
    .bind(k.tenant)
    .bind(k.key)
    .fetch_optional(tx)
    .await?)
}

/// The head of the key's line, if anything waits in it.
pub async fn head(tx: &mut PgConnection, k: Key<'_>) -> Result<Option<Head>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT seq, command_id, published FROM ordering_held WHERE tenant = $1 AND ordering_key = $2
         ORDER BY seq LIMIT 1",
    )
    .bind(k.tenant)
    .bind(k.key)
    .fetch_optional(tx)
    .await?)
}

/// Puts `w` at the end of the key's line; a command already in it stays where it is.
pub async fn hold(tx: &mut PgConnection, k: Key<'_>, w: &Waiting<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ordering_held (tenant, ordering_key, seq, command_id, body, attempt, traceparent)
         VALUES ($1, $2, nextval('ordering_held_seq'), $3, $4, $5, $6)
         ON CONFLICT (tenant, ordering_key, command_id) DO NOTHING",
    )
    .bind(k.tenant)
    .bind(k.key)
    .bind(w.command_id)
    .bind(w.body)
    .bind(i32::try_from(w.attempt).unwrap_or(i32::MAX))
    .bind(w.traceparent)
    .execute(tx)
    .await?;
    Ok(())
}

/// Puts `w` at the head of the key's line (a failed head to retry, a replayed dead letter),
/// or, if it is in the line already, gives it the new attempt and body in its place.
pub async fn hold_first(tx: &mut PgConnection, k: Key<'_>, w: &Waiting<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ordering_held (tenant, ordering_key, seq, command_id, body, attempt, traceparent)
         VALUES ($1, $2, nextval('ordering_head_seq'), $3, $4, $5, $6)
         ON CONFLICT (tenant, ordering_key, command_id)
         DO UPDATE SET attempt = EXCLUDED.attempt, body = EXCLUDED.body, published = false",
    )
    .bind(k.tenant)
    .bind(k.key)
    .bind(w.command_id)
    .bind(w.body)
    .bind(i32::try_from(w.attempt).unwrap_or(i32::MAX))
    .bind(w.traceparent)
    .execute(tx)
    .await?;
    Ok(())
}

/// Why a key is blocked.
#[derive(Debug, Clone)]
pub struct Blocking<'a> {
    pub command_id: Uuid,
    /// Its dead letter, when it halts the key.
    pub dead_letter_id: Option<Uuid>,
    pub command_type: &'a str,
    pub error: &'a str,
    /// Released only by an operator (the dead letter's replay or discard).
    pub halted: bool,
    /// When the line may move again (ignored while halted).
    pub not_before: DateTime<Utc>,
}

/// Blocks the key (or re-blocks it) for `b`; whatever was published of its line is to be
/// published again on release, since the head changed or failed.
pub async fn block(tx: &mut PgConnection, k: Key<'_>, b: &Blocking<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ordering_blocks
                (tenant, ordering_key, command_id, command_type, halted, error, not_before, dead_letter_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant, ordering_key) DO UPDATE
         SET command_id = EXCLUDED.command_id, command_type = EXCLUDED.command_type,
             halted = EXCLUDED.halted, error = EXCLUDED.error, not_before = EXCLUDED.not_before,
             dead_letter_id = EXCLUDED.dead_letter_id",
    )
    .bind(k.tenant)
    .bind(k.key)
    .bind(b.command_id)
    .bind(b.command_type)
    .bind(b.halted)
    .bind(b.error)
    .bind(b.not_before)
    .bind(b.dead_letter_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE ordering_held SET published = false WHERE tenant = $1 AND ordering_key = $2 AND published")
        .bind(k.tenant)
        .bind(k.key)
        .execute(tx)
        .await?;
    Ok(())
}

/// Takes `command_id` out of the key's line (applied, dead, or cancelled). Then, if the line
/// is empty and the key not halted, unblocks the key. True when the key is free.
pub async fn leave(tx: &mut PgConnection, k: Key<'_>, command_id: Uuid) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM ordering_held WHERE tenant = $1 AND ordering_key = $2 AND command_id = $3")
        .bind(k.tenant)
        .bind(k.key)
        .bind(command_id)
        .execute(&mut *tx)
        .await?;
    unblock_if_empty(tx, k).await
}

/// Deletes the key's block if it is not halted and nothing waits in its line.
pub async fn unblock_if_empty(tx: &mut PgConnection, k: Key<'_>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "DELETE FROM ordering_blocks b WHERE tenant = $1 AND ordering_key = $2 AND NOT halted
         AND NOT EXISTS (SELECT 1 FROM ordering_held h WHERE h.tenant = b.tenant AND h.ordering_key = b.ordering_key)",
    )
    .bind(k.tenant)
    .bind(k.key)
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Lets the lines of the keys halted by `dead_letters` move again (they were discarded, or
/// their commands cancelled). Matched by dead letter, so an older dead letter of a command that
/// died again releases nothing.
pub async fn release_dead_letters(tx: &mut PgConnection, dead_letters: &[Uuid]) -> Result<(), StoreError> {
    if dead_letters.is_empty() {
        return Ok(());
    }
    let keys: Vec<(String, String)> = sqlx::query_as(
        "UPDATE ordering_blocks SET halted = false, not_before = now()
          WHERE dead_letter_id = ANY($1) AND halted
         RETURNING tenant, ordering_key",
    )
    .bind(dead_letters)
    .fetch_all(&mut *tx)
    .await?;
    for (tenant, key) in &keys {
        unblock_if_empty(tx, Key { tenant, key }).await?;
    }
    Ok(())
}

/// A replay of `dead_letter`, the one that halted its command's key: the command is put at the
/// head of the key's line as attempt 1 and the key released, so it runs before what waited
/// behind it. False (nothing done) when that dead letter halts no key; the replay is then
/// published as usual.
pub async fn replay_into_line(
    tx: &mut PgConnection,
    k: Key<'_>,
    dead_letter: Uuid,
    command_id: Uuid,
    body: &[u8],
    traceparent: Option<&str>,
) -> Result<bool, StoreError> {
    let halted_by: Option<Uuid> = sqlx::query_scalar(
        "SELECT dead_letter_id FROM ordering_blocks WHERE tenant = $1 AND ordering_key = $2 AND halted FOR UPDATE",
    )
    .bind(k.tenant)
    .bind(k.key)
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    if halted_by != Some(dead_letter) {
        return Ok(false);
    }
    hold_first(tx, k, &Waiting { command_id, body, attempt: 1, traceparent }).await?;
    sqlx::query(
        "UPDATE ordering_blocks SET halted = false, not_before = now() WHERE tenant = $1 AND ordering_key = $2",
    )
    .bind(k.tenant)
    .bind(k.key)
    .execute(tx)
    .await?;
    Ok(true)
}

/// Keys due for release (not halted, `not_before` passed) with something to publish or an
/// empty line to close, locked, skipping those another dispatcher holds.
pub async fn due(tx: &mut PgConnection, limit: i64) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT tenant, ordering_key FROM ordering_blocks b WHERE NOT halted AND not_before <= now()
           AND (EXISTS (SELECT 1 FROM ordering_held h
                        WHERE h.tenant = b.tenant AND h.ordering_key = b.ordering_key AND NOT h.published)
                OR NOT EXISTS (SELECT 1 FROM ordering_held h
                               WHERE h.tenant = b.tenant AND h.ordering_key = b.ordering_key))
         ORDER BY not_before LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(tx)
    .await?)
}

/// A held command to publish.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HeldRow {
    pub seq: i64,
    pub body: Vec<u8>,
    pub attempt: i32,
    pub traceparent: Option<String>,
}

/// The key's held commands not yet published in this round, in line order.
pub async fn unpublished(tx: &mut PgConnection, k: Key<'_>, limit: i64) -> Result<Vec<HeldRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT seq, body, attempt, traceparent FROM ordering_held
         WHERE tenant = $1 AND ordering_key = $2 AND NOT published ORDER BY seq LIMIT $3",
    )
    .bind(k.tenant)
    .bind(k.key)
    .bind(limit)
    .fetch_all(tx)
    .await?)
}

/// Records that `seqs` of the key's line were published.
pub async fn mark_published(tx: &mut PgConnection, k: Key<'_>, seqs: &[i64]) -> Result<(), StoreError> {
    sqlx::query("UPDATE ordering_held SET published = true WHERE tenant = $1 AND ordering_key = $2 AND seq = ANY($3)")
        .bind(k.tenant)
        .bind(k.key)
        .bind(seqs)
        .execute(tx)
        .await?;
    Ok(())
}

/// A blocked key as operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct BlockedKey {
    pub tenant: String,
    pub ordering_key: String,
    /// The command holding the line: failing (retrying) or dead (halted).
    pub command_id: Uuid,
    pub command_type: String,
    /// Waiting for an operator to replay or discard the dead letter of `command_id`.
    pub halted: bool,
    pub error: String,
    /// When a retrying head is tried again.
    pub not_before: DateTime<Utc>,
    pub since: DateTime<Utc>,
    /// Commands waiting behind it.
    pub held: i64,
}

/// Blocked keys, halted first then oldest first; of one tenant, or of all.
pub async fn blocked(pool: &PgPool, tenant: Option<&str>, limit: i64) -> Result<Vec<BlockedKey>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT b.tenant, b.ordering_key, b.command_id, b.command_type, b.halted, b.error, b.not_before, b.since,
                (SELECT count(*) FROM ordering_held h
                 WHERE h.tenant = b.tenant AND h.ordering_key = b.ordering_key AND h.command_id <> b.command_id) AS held
         FROM ordering_blocks b WHERE ($1::text IS NULL OR b.tenant = $1)
         ORDER BY b.halted DESC, b.since LIMIT $2",
    )
    .bind(tenant)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Takes the session advisory lock of ordered partition `p` of the queues named `prefix`, if
/// no other session holds it. True when taken (or already held by this session).
pub async fn try_own(conn: &mut PgConnection, prefix: &str, p: u16) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1), $2)")
        .bind(prefix)
        .bind(i32::from(p))
        .fetch_one(conn)
        .await?)
}

/// Lets go of the lock of partition `p`.
pub async fn disown(conn: &mut PgConnection, prefix: &str, p: u16) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1), $2)").bind(prefix).bind(i32::from(p)).execute(conn).await?;
    Ok(())
}

/// Whether no session holds the lock of partition `p` (taken and let go at once to tell).
pub async fn is_free(conn: &mut PgConnection, prefix: &str, p: u16) -> Result<bool, StoreError> {
    let free = try_own(conn, prefix, p).await?;
    if free {
        disown(conn, prefix, p).await?;
    }
    Ok(free)
}

/// Lets the key's line move now (after its head was dead-lettered under `skip`).
pub async fn due_now(tx: &mut PgConnection, k: Key<'_>) -> Result<(), StoreError> {
    sqlx::query("UPDATE ordering_blocks SET not_before = now() WHERE tenant = $1 AND ordering_key = $2")
        .bind(k.tenant)
        .bind(k.key)
        .execute(tx)
        .await?;
    Ok(())
}
