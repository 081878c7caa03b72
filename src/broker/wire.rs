//! The wire contract: how a command travels as an AMQP message, built and read here only.
//!
//! The body is the [`Envelope`] as JSON. The headers carry what changes between deliveries of
//! the same command, so the body is never rewritten on its way through retries and dead
//! letters: the attempt number, the W3C trace context, the last transient error, and, once it
//! is dead, why; a replayed dead letter names the dead letter it came from.

use super::headers::{get_i64, get_str, set_i64, set_str};
use super::topology::{Topology, DEAD_KEY};
use super::Message;
use crate::command::{Envelope, Priority};
use lapin::types::FieldTable;
use uuid::Uuid;

/// The 1-based attempt number of a delivery.
pub const ATTEMPT_HEADER: &str = "x-sluice-attempt";
/// The W3C trace context, from the API to the worker.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// On a replay: the dead letter it replays.
pub const REPLAY_OF_HEADER: &str = "x-sluice-replay-of";
/// Why the message was dead-lettered.
pub const ERROR_HEADER: &str = "x-sluice-error";
/// The class of failure (permanent, retries_exhausted, undecodable, ...).
pub const ERROR_KIND_HEADER: &str = "x-sluice-error-kind";
/// A unique id per dead-lettering, so a redelivered dead letter is recorded once.
pub const DEAD_LETTER_ID_HEADER: &str = "x-sluice-dead-letter-id";
/// The last transient error, carried along the retries.
pub const LAST_ERROR_HEADER: &str = "x-sluice-last-error";

/// On a command an ordered key held back and then released: its place in the key's line.
pub const HELD_SEQ_HEADER: &str = "x-sluice-held-seq";

/// Longest error text put in a header.
const MAX_ERROR: usize = 1000;

/// A message ready to publish: it owns what [`Message`] borrows.
#[derive(Debug, Clone)]
pub struct Outgoing {
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    message_id: String,
    headers: FieldTable,
}

impl Outgoing {
    /// A command's first delivery to the work queue, in trace `traceparent`.
    pub fn first_attempt(topology: &Topology, cmd: &Envelope, traceparent: &str) -> Self {
        let mut headers = FieldTable::default();
        set_i64(&mut headers, ATTEMPT_HEADER, 1);
        set_str(&mut headers, TRACEPARENT_HEADER, traceparent);
        Self::to_work(topology, cmd, headers)
    }

    /// A scheduled command's first delivery: `body` is its envelope as encoded at ingest.
    pub fn first_attempt_of(topology: &Topology, id: Uuid, body: Vec<u8>, traceparent: &str) -> Self {
        let mut headers = FieldTable::default();
        set_i64(&mut headers, ATTEMPT_HEADER, 1);
        set_str(&mut headers, TRACEPARENT_HEADER, traceparent);
        let routing_key = match Envelope::decode(&body) {
            Ok(cmd) => topology.route_of(&cmd),
            Err(_) => Topology::work_key(Priority::Normal).to_owned(),
        };
        Self { exchange: topology.work_exchange(), routing_key, body, message_id: id.to_string(), headers }
    }

    /// A held command of an ordered key, released to its partition as attempt `attempt`:
    /// `seq` is its place in the key's line, which the worker checks it is still at the head of.
    pub fn released(
        topology: &Topology,
        cmd: &Envelope,
        body: Vec<u8>,
        attempt: u32,
        seq: i64,
        traceparent: Option<&str>,
    ) -> Self {
        let mut headers = FieldTable::default();
        set_i64(&mut headers, ATTEMPT_HEADER, i64::from(attempt));
        set_i64(&mut headers, HELD_SEQ_HEADER, seq);
        if let Some(tp) = traceparent {
            set_str(&mut headers, TRACEPARENT_HEADER, tp);
        }
        Self {
            exchange: topology.work_exchange(),
            routing_key: topology.route_of(cmd),
            body,
            message_id: cmd.id.to_string(),
            headers,
        }
    }

    /// An operator's replay of the dead letter `dead_letter`: attempt 1 again, in the trace of
    /// the original submission when it had one.
    pub fn replay(topology: &Topology, cmd: &Envelope, dead_letter: Uuid, traceparent: Option<&str>) -> Self {
        let mut headers = FieldTable::default();
        set_i64(&mut headers, ATTEMPT_HEADER, 1);
        set_str(&mut headers, REPLAY_OF_HEADER, &dead_letter.to_string());
        if let Some(tp) = traceparent {
            set_str(&mut headers, TRACEPARENT_HEADER, tp);
        }
        Self::to_work(topology, cmd, headers)
    }

    /// The delivery `received` again after `delay_ms`, through the retry tier for that delay,
    /// as attempt `attempt + 1`; its body and other headers unchanged.
    pub fn retry(topology: &Topology, received: &Received<'_>, delay_ms: u64, error: &str) -> Self {
        let mut headers = received.headers.cloned().unwrap_or_default();
        set_i64(&mut headers, ATTEMPT_HEADER, i64::from(received.attempt()) + 1);
        set_str(&mut headers, LAST_ERROR_HEADER, truncate(error));
        Self {
            exchange: topology.retry_exchange(),
            routing_key: topology.tier_queue(delay_ms),
            body: received.body.to_vec(),
            message_id: received.message_id.to_owned(),
            headers,
        }
    }

    /// The delivery `received` again after `delay_ms` through that retry tier, as the same
    /// attempt: it was put aside, not tried.
    pub fn deferred(topology: &Topology, received: &Received<'_>, delay_ms: u64) -> Self {
        Self {
            exchange: topology.retry_exchange(),
            routing_key: topology.tier_queue(delay_ms),
            body: received.body.to_vec(),
            message_id: received.message_id.to_owned(),
            headers: received.headers.cloned().unwrap_or_default(),
        }
    }

    /// The delivery `received` parked as a dead letter: `kind` of failure, `error`, and a fresh
    /// dead-letter id.
    pub fn dead_letter(topology: &Topology, received: &Received<'_>, kind: &str, error: &str) -> Self {
        let mut headers = received.headers.cloned().unwrap_or_default();
        set_str(&mut headers, ERROR_HEADER, truncate(error));
        set_str(&mut headers, ERROR_KIND_HEADER, kind);
        set_str(&mut headers, DEAD_LETTER_ID_HEADER, &Uuid::new_v4().to_string());
        set_i64(&mut headers, ATTEMPT_HEADER, i64::from(received.attempt()));
        Self {
            exchange: topology.dead_letter_exchange(),
            routing_key: DEAD_KEY.to_owned(),
            body: received.body.to_vec(),
            message_id: received.message_id.to_owned(),
            headers,
        }
    }

    /// The delivery `received`, which a retry tier brought back to the normal work queue,
    /// moved to the work queue of its own `priority`; body and headers unchanged.
    pub fn forwarded(topology: &Topology, received: &Received<'_>, priority: Priority) -> Self {
        Self {
            exchange: topology.work_exchange(),
            routing_key: Topology::work_key(priority).to_owned(),
            body: received.body.to_vec(),
            message_id: received.message_id.to_owned(),
            headers: received.headers.cloned().unwrap_or_default(),
        }
    }

    fn to_work(topology: &Topology, cmd: &Envelope, headers: FieldTable) -> Self {
        Self {
            exchange: topology.work_exchange(),
            routing_key: topology.route_of(cmd),
            body: cmd.encode(),
            message_id: cmd.id.to_string(),
            headers,
        }
    }

    /// The message to hand to the publisher.
    pub fn message(&self) -> Message<'_> {
        Message {
            exchange: &self.exchange,
            routing_key: &self.routing_key,
            body: &self.body,
            message_id: &self.message_id,
            headers: &self.headers,
        }
    }
}

/// A delivered message, read.
pub struct Received<'a> {
    body: &'a [u8],
    headers: Option<&'a FieldTable>,
    message_id: &'a str,
}

impl<'a> Received<'a> {
    /// Reads a delivery's body and headers.
    pub fn of(delivery: &'a lapin::message::Delivery) -> Self {
        let message_id = delivery.properties.message_id().as_ref().map_or("", |m| m.as_str());
        Self { body: &delivery.data, headers: delivery.properties.headers().as_ref(), message_id }
    }

    /// The body: an encoded [`Envelope`], unless someone published around the API.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The command in the body.
    pub fn envelope(&self) -> Result<Envelope, crate::command::DecodeError> {
        Envelope::decode(self.body)
    }

    /// The 1-based attempt this delivery is (1 when the header is missing or nonsense).
    pub fn attempt(&self) -> u32 {
        self.attempt_header().unwrap_or(1).max(1)
    }

    /// The attempt header as sent, if it is a usable number.
    pub fn attempt_header(&self) -> Option<u32> {
        get_i64(self.headers, ATTEMPT_HEADER).and_then(|a| u32::try_from(a).ok())
    }

    /// On a released command of an ordered key: its place in the key's line.
    pub fn held_seq(&self) -> Option<i64> {
        get_i64(self.headers, HELD_SEQ_HEADER)
    }

    /// The trace id of its `traceparent` ("" if none or malformed).
    pub fn trace_id(&self) -> String {
        get_str(self.headers, TRACEPARENT_HEADER).as_deref().and_then(trace_id).unwrap_or_default().to_owned()
    }

    /// Its `traceparent`, if well-formed.
    pub fn traceparent(&self) -> Option<String> {
        get_str(self.headers, TRACEPARENT_HEADER).filter(|tp| trace_id(tp).is_some())
    }

    /// Whether it is an operator's replay of a dead letter.
    pub fn is_replay(&self) -> bool {
        get_str(self.headers, REPLAY_OF_HEADER).is_some()
    }

    /// The dead-letter id a worker gave it, the kind of failure and the error, when a worker
    /// (not the broker's delivery limit) dead-lettered it.
    pub fn dead_letter(&self) -> Option<(Uuid, String, String)> {
        let id = get_str(self.headers, DEAD_LETTER_ID_HEADER).and_then(|s| Uuid::parse_str(&s).ok())?;
        let kind = get_str(self.headers, ERROR_KIND_HEADER).unwrap_or_else(|| "unknown".into());
        Some((id, kind, get_str(self.headers, ERROR_HEADER).unwrap_or_default()))
    }

    /// The header table, for what reads the broker's own headers (`x-death`).
    pub fn headers(&self) -> Option<&'a FieldTable> {
        self.headers
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex trace id>-<16 hex parent id>-<2 hex
/// flags>`), if it is well-formed and not all zeros.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    // version-trace-parent-flags: 2, 32, 16 and 2 lowercase hex digits.
    let b = traceparent.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    let nonzero = |r: std::ops::Range<usize>| b[r].iter().any(|&c| c != b'0');
    let ok = b.len() == 55
        && (b[2], b[35], b[52]) == (b'-', b'-', b'-')
        && hex(0..2)
        && &b[0..2] != b"ff"
        && hex(3..35)
        && nonzero(3..35)
        && hex(36..52)
        && nonzero(36..52)
        && hex(53..55);
    ok.then(|| &traceparent[3..35])
}

/// A fresh `traceparent` for a command that arrived without one, so its ingest and its
/// processing still share a trace id in the logs.
pub fn new_traceparent() -> String {
    // The thread-local generator: per request, uuid's v4 would cost two getrandom syscalls.
    let (trace, parent): (u128, u64) = (rand::random::<u128>() | 1, rand::random::<u64>() | 1);
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    for (i, slot) in out[3..35].iter_mut().enumerate() {
        *slot = DIGITS[((trace >> (4 * (31 - i))) & 0xf) as usize];
    }
    for (i, slot) in out[36..52].iter_mut().enumerate() {
        *slot = DIGITS[((parent >> (4 * (15 - i))) & 0xf) as usize];
    }
    // Only ASCII hex digits and dashes were written.
    String::from_utf8_lossy(&out).into_owned()
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(MAX_ERROR);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::topology::WORK_KEY;
    use serde_json::json;

    fn topology() -> Topology {
        Topology::new("w", &[100, 1000], 5)
    }

    #[test]
    fn a_first_attempt_carries_attempt_one_and_its_trace() {
        let cmd = Envelope::new("t", "event.record", json!({}), None);
        let out = Outgoing::first_attempt(&topology(), &cmd, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let m = out.message();
        assert_eq!((m.exchange, m.routing_key), (topology().work_exchange().as_str(), WORK_KEY));
        assert_eq!(m.message_id, cmd.id.to_string());
        assert_eq!(get_i64(Some(m.headers), ATTEMPT_HEADER), Some(1));
        assert_eq!(Envelope::decode(m.body).unwrap(), cmd);
    }

    #[test]
    fn a_replay_names_its_dead_letter_and_keeps_the_trace() {
        let cmd = Envelope::new("t", "event.record", json!({}), None);
        let dl = Uuid::new_v4();
        let out = Outgoing::replay(&topology(), &cmd, dl, Some("tp"));
        let m = out.message();
        assert_eq!(get_str(Some(m.headers), REPLAY_OF_HEADER), Some(dl.to_string()));
        assert_eq!(get_str(Some(m.headers), TRACEPARENT_HEADER).as_deref(), Some("tp"));
    }

    #[test]
    fn a_traceparent_yields_its_trace_id_only_when_well_formed() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), None, "upper case");
        assert_eq!(trace_id("00-4bf92f35-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("garbage"), None);
        assert_eq!(trace_id("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), None, "version ff");
        assert_eq!(trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"), None, "zero parent");
        assert_eq!(trace_id(&format!("{tp}-00")), None, "a fifth field");
        assert_eq!(trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01"), None);
        let (a, b) = (new_traceparent(), new_traceparent());
        assert!(trace_id(&a).is_some() && trace_id(&b).is_some() && a != b, "{a} {b}");
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let s = "é".repeat(MAX_ERROR);
        let cut = truncate(&s);
        assert!(cut.len() <= MAX_ERROR && cut.chars().all(|c| c == 'é'));
    }
}
