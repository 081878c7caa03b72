use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Namespace of the UUIDv5 ids derived from idempotency keys (fixed forever: ids must not change).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_5c2e_9a4f_4e21_b7d3_52c0_1f8e_a913);

/// What travels in an AMQP message body: one command of one tenant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub id: Uuid,
    pub tenant: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: Value,
    #[serde(serialize_with = "rfc3339")]
    pub submitted_at: DateTime<Utc>,
    /// The batch this command was submitted in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchRef>,
    /// When it was scheduled for, if it was (`run_at` or `delay_ms` at ingest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Which work queue it travels in.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// Commands of one tenant with the same key are applied one at a time, in the order
    /// sluice accepted them (see `worker::ordered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
}

/// A command's priority: each has a work queue of its own, and workers share their
/// transaction slots between them by weight (see `worker::slots`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Self; 3] = [Self::High, Self::Normal, Self::Low];

    /// The word submitted and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// Parses a submitted word.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Its rank among [`Self::ALL`]: 0 for high.
    pub fn class(self) -> usize {
        match self {
            Self::High => 0,
            Self::Normal => 1,
            Self::Low => 2,
        }
    }

    /// Whether it is the default (left out of the message body).
    pub fn is_normal(&self) -> bool {
        *self == Self::Normal
    }
}

/// A command's place in a batch.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchRef {
    pub id: Uuid,
    /// Position in the submitted batch, from 0.
    pub index: u32,
}

/// Why a message body is not a command.
#[derive(Debug, thiserror::Error)]
#[error("message body is not a sluice command: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

impl Envelope {
    /// A new command; `idempotency_key` makes the id deterministic per tenant.
    pub fn new(tenant: &str, kind: &str, payload: Value, idempotency_key: Option<&str>) -> Self {
        let id = match idempotency_key {
            Some(key) => command_id_for_key(tenant, key),
            None => Uuid::now_v7(),
        };
        Self {
            id,
            tenant: tenant.to_owned(),
            kind: kind.to_owned(),
            payload,
            submitted_at: Utc::now(),
            batch: None,
            run_at: None,
            priority: Priority::Normal,
            ordering_key: None,
        }
    }

    /// The message body.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings, a uuid, a timestamp and a `Value` cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a message body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(body)?)
    }
}

/// A time as chrono's serde writes it (RFC 3339, UTC as `Z`, as many fractional digits as it
/// needs: 0, 3, 6 or 9), in one string: chrono's own impl formats through `collect_str`, which
/// escapes the text a piece at a time, a sizeable share of encoding every envelope.
fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// Namespace of the ids of commands that schedules submit (fixed forever, like the other).
const TICK_NAMESPACE: Uuid = Uuid::from_u128(0x9c4e_17a2_6b30_4d58_a1f7_3e08_c2d5_6f94);

/// The id of the command schedule `name` of `tenant` submits for `tick`: a second firing of
/// the same tick, by another process or after a crash, is the same command.
pub fn command_id_for_tick(tenant: &str, name: &str, tick: DateTime<Utc>) -> Uuid {
    let name = [tenant.as_bytes(), b"\0", name.as_bytes(), b"\0", &tick.timestamp_micros().to_be_bytes()].concat();
    Uuid::new_v5(&TICK_NAMESPACE, &name)
}

/// The command id an idempotency key stands for: the same tenant and key give the same id,
/// so a retried POST is absorbed by the worker's inbox without a lookup at ingest.
pub fn command_id_for_key(tenant: &str, key: &str) -> Uuid {
    let mut name = Vec::with_capacity(tenant.len() + key.len() + 1);
    name.extend_from_slice(tenant.as_bytes());
    name.push(0);
    name.extend_from_slice(key.as_bytes());
    Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submission_times_are_written_as_chronos_serde_writes_them() {
        let base = DateTime::parse_from_rfc3339("2026-12-07T01:02:03Z").unwrap().with_timezone(&Utc);
        for nanos in [0, 120_000_000, 123_456_000, 123_456_789, 1] {
            let t = base + chrono::Duration::nanoseconds(nanos);
            let mut ours = serde_json::Serializer::new(Vec::new());
            rfc3339(&t, &mut ours).unwrap();
            assert_eq!(String::from_utf8(ours.into_inner()).unwrap(), serde_json::to_string(&t).unwrap());
        }
    }

    #[test]
    fn an_envelope_survives_encoding() {
        let e = Envelope::new("t1", "event.record", serde_json::json!({"name": "x", "data": 1}), None);
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn the_same_idempotency_key_gives_the_same_id_only_within_a_tenant() {
        assert_eq!(command_id_for_key("a", "k"), command_id_for_key("a", "k"));
        assert_ne!(command_id_for_key("a", "k"), command_id_for_key("b", "k"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(command_id_for_key("ab", "c"), command_id_for_key("a", "bc"));
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(Envelope::decode(b"\xff\x00{").is_err());
        assert!(Envelope::decode(br#"{"id": 5}"#).is_err());
    }
}
