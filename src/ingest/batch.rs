//! A batch: every item checked like a command, the valid ones published pipelined with
//! confirms (those with a later run_at stored for the dispatcher in one statement), and a row
//! that counts the batch's progress and holds its completion callback.

use super::command::{parse_command, valid_idempotency_key, MAX_IDEMPOTENCY_KEY};
use super::shape::check_shape;
use super::{Ingest, IngestError};
use crate::broker::wire::Outgoing;
use crate::broker::Message;
use crate::command::{command_id_for_key, BatchRef, Envelope};
use crate::schemas::Violation;
use crate::store::batches::{self, NewBatch};
use crate::store::scheduled::{self, NewScheduled};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;
use utoipa::ToSchema;
use uuid::Uuid;

/// Namespace of batch item ids derived from the batch id and the item's position.
const ITEM_NAMESPACE: Uuid = Uuid::from_u128(0x3f0c_2b8e_51d4_4a7f_8c19_d6e2_a047_b5c1);

/// The id of item `index` of batch `batch_id`, or of its item with `key`. Ids live in the
/// batch's namespace (an item key names the item within its batch), so every item gets a row
/// of this batch and the batch's progress can reach its total; a batch resubmitted with its
/// Idempotency-Key (a UUIDv5 batch id) names its items as before.
///
/// A batch without that header has a fresh UUIDv7 id, and its items keep that id's 48-bit
/// timestamp in front (UUIDv8, laid out as v7): their rows then go in near the end of the
/// id indexes, as single commands' v7 ids do, instead of at random places in them, which
/// cost Postgres about a third more per inserted command and row (docs/performance.md).
pub fn item_id(batch_id: Uuid, key: Option<&str>, index: u32) -> Uuid {
    let name = match key {
        Some(k) => [batch_id.as_bytes().as_slice(), b"key\0", k.as_bytes()].concat(),
        None => [batch_id.as_bytes().as_slice(), &index.to_be_bytes()].concat(),
    };
    let derived = Uuid::new_v5(&ITEM_NAMESPACE, &name);
    if batch_id.get_version() != Some(uuid::Version::SortRand) {
        return derived;
    }
    let mut bytes = *derived.as_bytes();
    bytes[..6].copy_from_slice(&batch_id.as_bytes()[..6]);
    Uuid::new_v8(bytes)
}

/// A batch as a producer submits it.
#[derive(Debug)]
pub struct BatchRequest<'a> {
    /// The tenant it is submitted for (the API key's).
    pub tenant: &'a str,
    /// Each a command with an optional `idempotency_key` of its own, not yet checked.
    pub items: Vec<Value>,
    pub options: BatchOptions,
    /// Makes a retried submission the same batch.
    pub idempotency_key: Option<&'a str>,
    /// W3C trace context every command of the batch carries.
    pub traceparent: &'a str,
}

/// Options of a batch, from the JSON body or (for NDJSON) the query string.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BatchOptions {
    /// Publish nothing when any item is invalid.
    #[serde(default)]
    pub all_or_nothing: bool,
    /// POSTed, signed like a Standard Webhook, once every command is final.
    pub callback_url: Option<String>,
    /// Standard Webhooks secret (`whsec_` + base64) the callback is signed with.
    pub callback_secret: Option<String>,
    /// Priority of the items that do not give their own.
    #[serde(default)]
    pub priority: Option<crate::command::Priority>,
}

/// Why one item of a batch was refused at ingest.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ItemRefusal {
    /// Position in the batch, from 0.
    pub index: usize,
    pub code: String,
    pub message: String,
    /// Where the item breaks its schema, as pointers into the whole batch body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<Violation>>,
}

impl ItemRefusal {
    fn new(index: usize, code: &str, message: impl Into<String>) -> Self {
        Self { index, code: code.to_owned(), message: message.into(), violations: None }
    }

    fn of(index: usize, e: IngestError) -> Self {
        match e {
            IngestError::Invalid { code, message, violations } => Self {
                violations: Some(
                    violations
                        .into_iter()
                        .map(|x| Violation { path: format!("/commands/{index}{}", x.path), message: x.message })
                        .collect(),
                ),
                ..Self::new(index, code, message)
            },
            other => Self::new(index, "invalid_command", other.to_string()),
        }
    }
}

/// An item that was valid but that RabbitMQ did not confirm.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotPublished {
    pub index: u32,
    pub id: Uuid,
    pub error: String,
}

/// The answer to an accepted batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    pub id: Uuid,
    pub status_url: String,
    /// Commands RabbitMQ confirmed: durable.
    pub accepted: usize,
    pub rejected: Vec<ItemRefusal>,
    /// Valid items whose publish was not confirmed; resubmit the batch with the same
    /// Idempotency-Key (the confirmed ones are not applied twice).
    pub not_published: Vec<NotPublished>,
}

impl Ingest {
    /// Checks every item of `req` and publishes the valid ones (none, all or nothing, when
    /// one is invalid); `Ok` once RabbitMQ confirmed at least one.
    #[tracing::instrument(skip_all, fields(tenant = req.tenant, batch_id, items = req.items.len()))]
    pub async fn submit_batch(&self, req: BatchRequest<'_>) -> Result<BatchAccepted, IngestError> {
        let max = self.batches.max_commands;
        if req.items.is_empty() {
            return Err(IngestError::BadRequest {
                code: "invalid_batch_length",
                message: format!("a batch holds 1 to {max} commands, not 0"),
                location: Some("body commands".into()),
            });
        }
        let callback = check_callback(&req.options)?;
        if let Some((url, _)) = callback {
            if let Err(refusal) = crate::webhooks::outbound::check(url, &self.batches).await {
                return Err(callback_error(refusal.to_string(), "body callback_url"));
            }
        }
        self.backpressure.check()?;
        let batch_id = match req.idempotency_key {
            Some(k) => command_id_for_key(req.tenant, &format!("batch\u{0}{k}")),
            None => Uuid::now_v7(),
        };
        tracing::Span::current().record("batch_id", tracing::field::display(batch_id));
        let (cmds, rejected) = self.prepare_all(req.tenant, batch_id, req.items, req.options.priority);
        if cmds.is_empty() || (req.options.all_or_nothing && !rejected.is_empty()) {
            metrics::counter!("sluice_ingest_rejected_total", "reason" => "invalid").increment(rejected.len() as u64);
            return Err(IngestError::BatchRefused {
                message: format!("{} of the batch's commands are invalid; nothing was accepted", rejected.len()),
                items: rejected,
            });
        }
        let fresh = batches::create(
            &self.pool,
            &NewBatch {
                id: batch_id,
                tenant: req.tenant,
                total: i32::try_from(cmds.len()).unwrap_or(i32::MAX),
                rejected_at_ingest: i32::try_from(rejected.len()).unwrap_or(i32::MAX),
                callback_url: callback.map(|c| c.0),
                callback_secret: callback.map(|c| self.sealer.seal(c.1)).as_deref(),
            },
        )
        .await?;
        let (published, failed) = self.publish_all(batch_id, &cmds, fresh, req.traceparent).await?;
        Ok(BatchAccepted {
            id: batch_id,
            status_url: format!("/v1/batches/{batch_id}"),
            accepted: published,
            rejected,
            not_published: failed,
        })
    }

    /// The batch's valid items as commands, and why each of the others was refused.
    fn prepare_all(
        &self,
        tenant: &str,
        batch_id: Uuid,
        items: Vec<Value>,
        priority: Option<crate::command::Priority>,
    ) -> (Vec<Envelope>, Vec<ItemRefusal>) {
        let mut cmds = Vec::with_capacity(items.len());
        let mut rejected = Vec::new();
        let mut keys_seen = HashSet::new();
        let l = &self.limits;
        for (index, item) in items.into_iter().enumerate() {
            if let Err(e) = check_shape(&item, l.max_json_depth, l.max_string_bytes, &format!("/commands/{index}")) {
                rejected.push(ItemRefusal::new(index, "invalid_command", e.to_string()));
                continue;
            }
            if let Some(k) = item.get("idempotency_key").and_then(Value::as_str) {
                if !keys_seen.insert(k.to_owned()) {
                    let why = "an earlier item of this batch has the same idempotency_key";
                    rejected.push(ItemRefusal::new(index, "duplicate_idempotency_key", why));
                    continue;
                }
            }
            match self.prepare(tenant, batch_id, index, item, priority) {
                Ok(cmd) => cmds.push(cmd),
                Err(e) => rejected.push(ItemRefusal::of(index, e)),
            }
        }
        (cmds, rejected)
    }

    /// A batch item made a command: checked like a single command, with an optional
    /// `idempotency_key` field of its own.
    fn prepare(
        &self,
        tenant: &str,
        batch_id: Uuid,
        index: usize,
        item: Value,
        priority: Option<crate::command::Priority>,
    ) -> Result<Envelope, IngestError> {
        let Value::Object(mut obj) = item else {
            return Err(IngestError::invalid(
                "invalid_command",
                "a batch item must be a command object",
                "",
                "expected an object",
            ));
        };
        let key = match obj.remove("idempotency_key") {
            None => None,
            Some(Value::String(k)) if valid_idempotency_key(&k) => Some(k),
            Some(_) => {
                return Err(IngestError::invalid(
                    "invalid_command",
                    format!("idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
                    "/idempotency_key",
                    "invalid",
                ))
            }
        };
        let parsed = parse_command(&self.schemas, Value::Object(obj))?;
        let run_at = self.run_at(parsed.timing, "")?;
        let mut cmd = Envelope::new(tenant, &parsed.kind, parsed.payload, None);
        cmd.run_at = run_at;
        // A key's own line orders it, not a priority: the batch's does not apply to it.
        cmd.priority = if parsed.ordering_key.is_some() {
            parsed.priority.unwrap_or_default()
        } else {
            parsed.priority.or(priority).unwrap_or_default()
        };
        cmd.ordering_key = parsed.ordering_key;
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        cmd.id = item_id(batch_id, key.as_deref(), index);
        cmd.batch = Some(BatchRef { id: batch_id, index });
        Ok(cmd)
    }

    /// Publishes `cmds` pipelined and settles the batch's total to what may arrive; the count
    /// confirmed and the items that were not.
    async fn publish_all(
        &self,
        batch_id: Uuid,
        cmds: &[Envelope],
        fresh: bool,
        traceparent: &str,
    ) -> Result<(usize, Vec<NotPublished>), IngestError> {
        let topology = self.broker.topology();
        let (later, now): (Vec<&Envelope>, Vec<&Envelope>) = cmds.iter().partition(|c| c.run_at.is_some());
        let outgoing: Vec<Outgoing> = now.iter().map(|c| Outgoing::first_attempt(topology, c, traceparent)).collect();
        let msgs: Vec<Message> = outgoing.iter().map(Outgoing::message).collect();
        let mut results: Vec<Result<(), String>> = Vec::with_capacity(cmds.len());
        let mut definitely_lost = 0;
        for r in self.broker.publish_many(&msgs).await {
            if matches!(&r, Err(e) if e.definitely_not_published()) {
                definitely_lost += 1;
            }
            results.push(r.map_err(|e| e.public().into_owned()));
        }
        let rows: Vec<NewScheduled> =
            later.iter().filter_map(|c| c.run_at.map(|run_at| NewScheduled { cmd: c, run_at, traceparent })).collect();
        let stored = scheduled::insert_many(&self.pool, &rows).await.map_err(|e| {
            tracing::warn!(error = %e, "scheduled items of a batch not stored");
            "the database is unavailable; resubmit with the same Idempotency-Key".to_owned()
        });
        // A failed insert may still have committed (its answer lost): like an unconfirmed
        // publish, it stays in the batch's total, and resubmitting with the same
        // Idempotency-Key stores what is missing (ids are the batch's, so nothing twice).
        results.extend(later.iter().map(|_| stored.as_ref().map(|_| ()).map_err(Clone::clone)));
        let mut failed = Vec::new();
        for (cmd, r) in now.iter().chain(&later).zip(&results) {
            match r {
                Ok(()) => {
                    metrics::counter!("sluice_ingest_accepted_total", "type" => cmd.kind.clone()).increment(1);
                    self.reporter.accepted();
                }
                Err(e) => {
                    let index = cmd.batch.map_or(0, |b| b.index);
                    failed.push(NotPublished { index, id: cmd.id, error: e.clone() });
                }
            }
        }
        failed.sort_by_key(|f| f.index);
        let published = cmds.len() - failed.len();
        // Timeouts and channel errors leave it unknown whether the broker took the message;
        // only definite refusals shrink the batch (an unknown one may still arrive and count).
        // Nothing got through: the client is told to retry, and the batch must not look finished.
        if published > 0 && (definitely_lost > 0 || !fresh) {
            let total = i32::try_from(cmds.len() - definitely_lost).unwrap_or(i32::MAX);
            // Commands are out by now: a failure here must not read as "nothing was published".
            let unsettled = |e: StoreError| {
                tracing::warn!(error = %e, "a batch's total not settled");
                IngestError::Unconfirmed {
                    message: "commands of the batch were published but its total was not settled; retry with the \
                              same Idempotency-Key and each is applied once"
                        .into(),
                    certain: false,
                }
            };
            batches::settle_total(&self.pool, batch_id, total, fresh).await.map_err(unsettled)?;
            // Workers may have finished every published command before the total changed.
            batches::finish_if_done(&self.pool, &[batch_id]).await.map_err(unsettled)?;
        }
        if published == 0 {
            return Err(IngestError::Unconfirmed {
                message: "RabbitMQ confirmed no command of the batch; retry with the same Idempotency-Key".into(),
                // Otherwise some were sent unconfirmed and may still arrive.
                certain: definitely_lost == results.len(),
            });
        }
        Ok((published, failed))
    }
}

/// The callback URL and secret, checked: both or neither, http(s), a Standard Webhooks secret.
fn check_callback(o: &BatchOptions) -> Result<Option<(&str, &str)>, IngestError> {
    match (o.callback_url.as_deref(), o.callback_secret.as_deref()) {
        (None, None) => Ok(None),
        (Some(url), Some(secret)) => {
            let ok_url = (url.starts_with("https://") || url.starts_with("http://")) && url.len() <= 2048;
            if !ok_url || url.parse::<axum::http::Uri>().is_err() {
                return Err(callback_error("callback_url must be an http(s) URL", "body callback_url"));
            }
            if crate::webhooks::standard::decode_secret(secret).is_none() {
                let why = "callback_secret must be whsec_ followed by base64 of 24 to 64 bytes";
                return Err(callback_error(why, "body callback_secret"));
            }
            Ok(Some((url, secret)))
        }
        _ => Err(callback_error("callback_url and callback_secret go together", "body callback_url")),
    }
}

fn callback_error(message: impl Into<String>, location: &str) -> IngestError {
    IngestError::BadRequest { code: "invalid_callback", message: message.into(), location: Some(location.to_owned()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_of_an_unkeyed_batch_share_its_timestamp_and_are_named_the_same_each_time() {
        let batch = Uuid::now_v7();
        let ids: Vec<Uuid> = (0..3).map(|i| item_id(batch, None, i)).collect();
        for id in &ids {
            assert_eq!(id.as_bytes()[..6], batch.as_bytes()[..6], "{id} carries {batch}'s timestamp");
            assert_eq!(id.get_version(), Some(uuid::Version::Custom));
        }
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        assert_eq!(item_id(batch, None, 1), ids[1]);
        assert_eq!(item_id(batch, Some("a"), 0), item_id(batch, Some("a"), 7), "a key names the item, not its place");
        assert_ne!(item_id(batch, Some("a"), 0), ids[0]);
    }

    #[test]
    fn items_of_a_keyed_batch_keep_the_ids_earlier_versions_gave_them() {
        // A batch resubmitted with its Idempotency-Key across an upgrade must name its items as
        // before, or the inbox could not absorb the second submission.
        let batch = crate::command::command_id_for_key("acme", "batch\u{0}nightly");
        let name = [batch.as_bytes().as_slice(), &2u32.to_be_bytes()].concat();
        assert_eq!(item_id(batch, None, 2), Uuid::new_v5(&ITEM_NAMESPACE, &name));
        let keyed = [batch.as_bytes().as_slice(), b"key\0", b"k-1"].concat();
        assert_eq!(item_id(batch, Some("k-1"), 0), Uuid::new_v5(&ITEM_NAMESPACE, &keyed));
    }
}
