//! Exchange and queue names, and their declaration.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::command::Priority;

/// Routing key of the (normal priority) work queue's binding; retry tiers dead-letter to it.
pub const WORK_KEY: &str = "work";
/// Routing key of the dead-letter queue's binding.
pub const DEAD_KEY: &str = "dead";

/// The names of one deployment's exchanges and queues, all under one prefix.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    tiers_ms: Vec<u64>,
    delivery_limit: u32,
    partitions: u16,
}

/// Ordered partitions when the configuration does not say (`ordering.partitions`).
pub const DEFAULT_PARTITIONS: u16 = 16;

impl Topology {
    /// Names under `prefix`, with one retry queue per delay tier.
    pub fn new(prefix: &str, tiers_ms: &[u64], delivery_limit: u32) -> Self {
        let mut tiers_ms = tiers_ms.to_vec();
        tiers_ms.sort_unstable();
        tiers_ms.dedup();
        Self { prefix: prefix.to_owned(), tiers_ms, delivery_limit, partitions: DEFAULT_PARTITIONS }
    }
    /// The same names with `n` ordered partitions (at least one).
    pub fn with_partitions(mut self, n: u16) -> Self {
        self.partitions = n.max(1);
        self
    }
    /// Deliveries of one message before the broker dead-letters it.
    pub fn delivery_limit(&self) -> u32 {
        self.delivery_limit
    }
    /// How many ordered partitions there are.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }
    /// The queue of ordered partition `p`: single active consumer, so it is applied in queue order.
    pub fn ordered_queue(&self, p: u16) -> String {
        format!("{}.ordered.{p}", self.prefix)
    }
    /// Routing key (on the work exchange) of ordered partition `p`.
    pub fn ordered_key(p: u16) -> String {
        format!("ordered.{p}")
    }
    /// The partition every command of `tenant` with `key` goes to. FNV-1a, fixed forever:
    /// processes of different versions must agree on it.
    pub fn partition_of(&self, tenant: &str, key: &str) -> u16 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in tenant.bytes().chain([0]).chain(key.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        u16::try_from(h % u64::from(self.partitions)).unwrap_or(0)
    }
    /// Routing key of the queue a command travels in: its key's ordered partition, or the
    /// work queue of its priority.
    pub fn route_of(&self, cmd: &crate::command::Envelope) -> String {
        match &cmd.ordering_key {
            Some(key) => Self::ordered_key(self.partition_of(&cmd.tenant, key)),
            None => Self::work_key(cmd.priority).to_owned(),
        }
    }
    /// Exchange producers publish commands to.
    pub fn work_exchange(&self) -> String {
        format!("{}.work", self.prefix)
    }
    /// Quorum queue the workers consume (normal priority).
    pub fn work_queue(&self) -> String {
        format!("{}.work", self.prefix)
    }
    /// The work queue of `priority`: `<prefix>.work`, `.work.high` or `.work.low`.
    pub fn work_queue_of(&self, priority: Priority) -> String {
        match priority {
            Priority::Normal => self.work_queue(),
            p => format!("{}.work.{}", self.prefix, p.as_str()),
        }
    }
    /// Routing key (on the work exchange) of the work queue of `priority`.
    pub fn work_key(priority: Priority) -> &'static str {
        match priority {
            Priority::High => "work.high",
            Priority::Normal => WORK_KEY,
            Priority::Low => "work.low",
        }
    }
    /// Exchange routing to the retry tiers.
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }
    /// Queue (and routing key) of the tier that delays by `ms`. Named by its delay so that a
    /// changed configuration adds queues instead of clashing with existing ones' TTL.
    pub fn tier_queue(&self, ms: u64) -> String {
        format!("{}.retry.{ms}ms", self.prefix)
    }
    /// Delays of the retry tiers, ascending.
    pub fn tiers_ms(&self) -> &[u64] {
        &self.tiers_ms
    }
    /// The shortest tier that delays by at least `ms`, or the longest tier.
    pub fn tier_at_least(&self, ms: u64) -> u64 {
        let longest = self.tiers_ms.last().copied().unwrap_or(ms);
        self.tiers_ms.iter().copied().find(|t| *t >= ms).unwrap_or(longest)
    }
    /// Exchange dead letters go to (from workers and from the broker's delivery limit).
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
    /// Queue holding dead letters until they are recorded in Postgres.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    /// Every queue, for operators and for test clean-up.
    pub fn queues(&self) -> Vec<String> {
        let mut q = vec![
            self.work_queue(),
            self.work_queue_of(Priority::High),
            self.work_queue_of(Priority::Low),
            self.dead_letter_queue(),
        ];
        q.extend(self.tiers_ms.iter().map(|ms| self.tier_queue(*ms)));
        q.extend((0..self.partitions).map(|p| self.ordered_queue(p)));
        q
    }
    /// The queues sluice's workers consume (and operators can pause): the three work queues
    /// and the dead-letter queue.
    pub fn consumed_queues(&self) -> Vec<String> {
        let mut q: Vec<String> = Priority::ALL.into_iter().map(|p| self.work_queue_of(p)).collect();
        q.push(self.dead_letter_queue());
        q
    }
    /// Every exchange.
    pub fn exchanges(&self) -> Vec<String> {
        vec![self.work_exchange(), self.retry_exchange(), self.dead_letter_exchange()]
    }

    /// Declares everything (idempotent). Quorum queues throughout: replicated in a cluster,
    /// and they count deliveries, which is what catches a message that crashes its worker.
    #[tracing::instrument(skip_all, fields(prefix = %self.prefix))]
    pub async fn declare(&self, ch: &Channel) -> lapin::Result<()> {
        for ex in self.exchanges() {
            ch.exchange_declare(ex.into(), ExchangeKind::Direct, durable_exchange(), FieldTable::default()).await?;
        }
        for priority in Priority::ALL {
            let work = quorum_args([
                ("x-delivery-limit", long(i64::from(self.delivery_limit))),
                ("x-dead-letter-exchange", string(&self.dead_letter_exchange())),
                ("x-dead-letter-routing-key", string(DEAD_KEY)),
            ]);
            let (queue, key) = (self.work_queue_of(priority), Self::work_key(priority));
            self.queue(ch, &queue, work, &self.work_exchange(), key).await?;
        }
        for p in 0..self.partitions {
            // One consumer at a time, whoever else subscribes: a standby takes over, from the
            // first unacked message, only when the active one's channel is gone.
            let ordered = quorum_args([
                ("x-single-active-consumer", AMQPValue::Boolean(true)),
                ("x-delivery-limit", long(i64::from(self.delivery_limit))),
                ("x-dead-letter-exchange", string(&self.dead_letter_exchange())),
                ("x-dead-letter-routing-key", string(DEAD_KEY)),
            ]);
            self.queue(ch, &self.ordered_queue(p), ordered, &self.work_exchange(), &Self::ordered_key(p)).await?;
        }
        self.queue(ch, &self.dead_letter_queue(), quorum_args([]), &self.dead_letter_exchange(), DEAD_KEY).await?;
        for ms in &self.tiers_ms {
            // A tier holds messages for its TTL, then dead-letters them back to the work
            // exchange; at-least-once dead-lettering so a broker failure cannot drop a retry.
            let args = quorum_args([
                ("x-message-ttl", long(i64::try_from(*ms).unwrap_or(i64::MAX))),
                ("x-dead-letter-exchange", string(&self.work_exchange())),
                ("x-dead-letter-routing-key", string(WORK_KEY)),
                ("x-dead-letter-strategy", string("at-least-once")),
                ("x-overflow", string("reject-publish")),
            ]);
            let name = self.tier_queue(*ms);
            self.queue(ch, &name, args, &self.retry_exchange(), &name).await?;
        }
        Ok(())
    }

    /// Deletes every queue and exchange (tests and benchmarks clean up with it). Errors are
    /// ignored: a name that is already gone is what the caller wants.
    pub async fn delete(&self, ch: &Channel) {
        for q in self.queues() {
            let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
        }
        for e in self.exchanges() {
            let _ = ch.exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
    }

    async fn queue(&self, ch: &Channel, name: &str, args: FieldTable, exchange: &str, key: &str) -> lapin::Result<()> {
        ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args).await?;
        ch.queue_bind(name.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
            .await
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() }
}

fn quorum_args<const N: usize>(extra: [(&str, AMQPValue); N]) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(ShortString::from("x-queue-type"), string("quorum"));
    for (k, v) in extra {
        t.insert(ShortString::from(k), v);
    }
    t
}

fn long(v: i64) -> AMQPValue {
    AMQPValue::LongLongInt(v)
}

fn string(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_asked_for_is_met_by_the_next_tier_up_within_the_longest() {
        let t = Topology::new("p", &[800, 100, 200, 1600, 400], 5);
        assert_eq!(t.tier_at_least(150), 200);
        assert_eq!(t.tier_at_least(200), 200);
        assert_eq!(t.tier_at_least(10_000), 1600);
    }

    #[test]
    fn a_key_always_lands_in_the_same_partition_and_keys_spread_over_all() {
        let t = Topology::new("p", &[100], 5).with_partitions(8);
        assert_eq!(t.partition_of("t", "account-1"), t.partition_of("t", "account-1"));
        // Pinned: a changed hash would send a key's later commands to another partition.
        assert_eq!(
            t.partition_of("t", "account-1"),
            Topology::new("q", &[], 1).with_partitions(8).partition_of("t", "account-1")
        );
        let used: std::collections::HashSet<u16> = (0..200).map(|i| t.partition_of("t", &format!("k{i}"))).collect();
        assert_eq!(used.len(), 8);
        assert_ne!(t.partition_of("a", "b\0c"), 8);
    }
}
