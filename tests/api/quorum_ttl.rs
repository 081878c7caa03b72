//! The broker fact the scheduling design rests on (docs/job-control.md): in a RabbitMQ quorum
//! queue, a message with a short per-message TTL behind one with a long TTL does not expire
//! until the long one has left the head, so TTL queues cannot hold arbitrary delays in order.
//! sluice's retry tiers give every message of a queue the same TTL, where this cannot bite.

use crate::helpers::AMQP;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_quorum_queue_a_short_ttl_behind_a_long_one_expires_only_after_it() {
    let conn = Connection::connect(AMQP, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (held, expired) = (format!("ttl-held-{id}"), format!("ttl-expired-{id}"));
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("")));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(expired.as_str())));
    ch.queue_declare(held.as_str().into(), QueueDeclareOptions::durable(), args).await.unwrap();
    ch.queue_declare(expired.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default()).await.unwrap();
    let started = Instant::now();
    for (body, ttl) in [("long", "1500"), ("short", "50")] {
        let props = BasicProperties::default().with_delivery_mode(2).with_expiration(ttl.into());
        let confirm = ch
            .basic_publish("".into(), held.as_str().into(), BasicPublishOptions::default(), body.as_bytes(), props)
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    let mut consumer = ch
        .basic_consume(
            expired.as_str().into(),
            "ttl-test".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut order = Vec::new();
    while order.len() < 2 {
        let next = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await.expect("dead-lettered in time");
        let delivery = next.expect("consumer open").expect("delivery");
        order.push((String::from_utf8_lossy(&delivery.data).into_owned(), started.elapsed()));
    }
    eprintln!("dead-lettered: {order:?}");
    assert_eq!(order[0].0, "long", "the head expires first: {order:?}");
    // Far beyond its own 50 ms: it waited for the head. (Not ≥ 1500 ms to the millisecond: the
    // broker's expiry clock was seen to run some 10 ms ahead of this process's.)
    assert!(order[1].1 >= Duration::from_millis(1200), "the 50 ms message waited behind the head: {order:?}");
    for q in [&held, &expired] {
        let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
    }
    let _ = conn.close(200, "done".into()).await;
}
