//! The reference: the same broker and database with nothing of sluice in between — lapin
//! publishing persistent messages with confirms to a quorum queue, and a consumer inserting
//! them in batches (one transaction per batch, inbox-style `ON CONFLICT DO NOTHING`).

use super::components::{Broker, Cpu, PerCommand};
use super::machine::{CpuClock, MachineUsage};
use super::rate;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Messages per insert transaction.
const BATCH: usize = 500;

/// What the raw pipeline achieved.
#[derive(Clone)]
pub struct RawFigures {
    pub n: usize,
    pub publish_rate: f64,
    pub drain_rate: f64,
    pub pipeline_rate: f64,
    /// The whole machine during the three phases (None for a median over runs).
    pub machine: Option<MachineUsage>,
    /// CPU per message during the both-at-once phase (the load generator is the raw client).
    pub cpu: Option<PerCommand>,
}

impl RawFigures {
    /// The median of each figure over several runs.
    pub fn median(all: Vec<RawFigures>) -> RawFigures {
        let mid = |f: fn(&RawFigures) -> f64| super::summary::median(all.iter().map(f).collect());
        RawFigures {
            n: all.first().map_or(0, |r| r.n),
            publish_rate: mid(|r| r.publish_rate),
            drain_rate: mid(|r| r.drain_rate),
            pipeline_rate: mid(|r| r.pipeline_rate),
            machine: None,
            cpu: None,
        }
    }

    pub fn print(&self) {
        println!("raw pipeline (lapin + sqlx, no HTTP, no handler), {} messages:", self.n);
        println!("  publish with confirms        {:>9.0} msg/s", self.publish_rate);
        println!("  consume + batched insert     {:>9.0} msg/s", self.drain_rate);
        println!("  both at once (the limit)     {:>9.0} msg/s", self.pipeline_rate);
        if let Some(m) = self.machine {
            println!("{}", m.line());
        }
        if let Some(cpu) = self.cpu {
            println!("{} (both at once; the raw client is the load generator)", cpu.line(false));
        }
    }
}

/// Runs the three raw phases on queue `<prefix>.raw` and a table in `db_url`, with `window`
/// publishes awaiting confirmation at once.
pub async fn run(amqp: &str, db_url: &str, prefix: &str, n: usize, window: usize) -> anyhow::Result<RawFigures> {
    let pool = PgPool::connect(db_url).await?;
    sqlx::query(
        "CREATE TABLE raw_inbox (id uuid PRIMARY KEY, body jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    let conn = Connection::connect(amqp, ConnectionProperties::default()).await?;
    let queue = format!("{prefix}.raw");
    let publisher = conn.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString(LongString::from("quorum")));
    publisher.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args).await?;

    let machine = CpuClock::now();
    let result = async {
        let started = Instant::now();
        publish(&publisher, &queue, n, window).await?;
        let publish_rate = rate(n, started.elapsed());

        let started = Instant::now();
        let consumer = tokio::spawn(consume(conn.create_channel().await?, queue.clone(), pool.clone(), n));
        consumer.await??;
        let drain_rate = rate(n, started.elapsed());

        let started = Instant::now();
        let before = Cpu::now(&[], Broker::Local);
        let consumer = tokio::spawn(consume(conn.create_channel().await?, queue.clone(), pool.clone(), n));
        publish(&publisher, &queue, n, window).await?;
        consumer.await??;
        let pipeline_rate = rate(n, started.elapsed());
        let cpu = Some(before.per_command(&Cpu::now(&[], Broker::Local), n));
        anyhow::Ok(RawFigures { n, publish_rate, drain_rate, pipeline_rate, machine: machine.usage(), cpu })
    }
    .await;
    let _ = publisher.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = conn.close(200, "bench done".into()).await;
    pool.close().await;
    result
}

/// A body shaped like a sluice command (~300 bytes).
fn body(i: usize) -> Vec<u8> {
    let v = serde_json::json!({
        "id": Uuid::now_v7(), "tenant": "bench", "type": "event.record",
        "payload": {"name": "bench.event", "data": {"i": i, "text": "lorem ipsum dolor sit amet consectetur"}},
        "submitted_at": chrono::Utc::now(),
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

async fn publish(ch: &Channel, queue: &str, n: usize, window: usize) -> anyhow::Result<()> {
    let props = BasicProperties::default().with_delivery_mode(2);
    publish_confirmed(ch, "", queue, &props, window.max(1), (0..n).map(body)).await
}

/// Publishes `bodies` as mandatory messages with `props`, awaiting confirms `window` at a time.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    props: &BasicProperties,
    window: usize,
    bodies: impl Iterator<Item = Vec<u8>>,
) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(window);
    let mut bodies = bodies.peekable();
    while let Some(body) = bodies.next() {
        let opts = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        pending.push(ch.basic_publish(exchange.into(), routing_key.into(), opts, &body, props.clone()).await?);
        if pending.len() == window || bodies.peek().is_none() {
            for confirm in pending.drain(..) {
                anyhow::ensure!(confirm.await?.is_ack(), "broker nacked a publish");
            }
        }
    }
    Ok(())
}

async fn consume(ch: Channel, queue: String, pool: PgPool, n: usize) -> anyhow::Result<()> {
    ch.basic_qos(u16::try_from(BATCH * 2).unwrap_or(u16::MAX), BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let mut done = 0;
    while done < n {
        let mut batch = Vec::with_capacity(BATCH);
        // Take what is there, up to a batch, waiting at most 2 ms after the first message.
        let first = consumer.next().await.ok_or_else(|| anyhow::anyhow!("consumer ended"))??;
        batch.push(first);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(2);
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(d)) => batch.push(d?),
                _ => break,
            }
        }
        let mut ids = Vec::with_capacity(batch.len());
        let mut bodies = Vec::with_capacity(batch.len());
        for d in &batch {
            let v: Value = serde_json::from_slice(&d.data)?;
            ids.push(v["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).unwrap_or_else(Uuid::now_v7));
            bodies.push(v);
        }
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO raw_inbox (id, body) SELECT * FROM unnest($1::uuid[], $2::jsonb[]) ON CONFLICT DO NOTHING",
        )
        .bind(&ids)
        .bind(&bodies)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(last) = batch.last() {
            last.ack(BasicAckOptions { multiple: true }).await?;
        }
        done += batch.len();
    }
    let _ = ch.close(200, "done".into()).await;
    Ok(())
}
