//! Publishing with confirms: a publish succeeds only once RabbitMQ has taken responsibility.

use super::Broker;
use super::Link;
use futures_util::future::{ready, FutureExt};
use futures_util::stream::{FuturesOrdered, StreamExt};
use lapin::options::BasicPublishOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::BasicProperties;
use lapin::Confirmation;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub message_id: &'a str,
    pub headers: FieldTable,
}

/// Why a publish was not confirmed; none of these means the message is durable.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to RabbitMQ")]
    Unavailable,
    #[error("RabbitMQ is blocking publishers (resource alarm)")]
    Blocked,
    #[error("too many publishes awaiting confirmation")]
    Overloaded,
    #[error("RabbitMQ did not confirm in time")]
    Timeout,
    #[error("RabbitMQ refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for {0}")]
    Unroutable(String),
    #[error("publish failed: {0}")]
    Channel(#[from] lapin::Error),
}

impl Broker {
    /// Publishes a persistent, mandatory message and waits for the broker's confirm.
    #[tracing::instrument(skip_all, fields(exchange = msg.exchange, routing_key = msg.routing_key, message_id = msg.message_id))]
    pub async fn publish(&self, msg: Message<'_>) -> Result<(), PublishError> {
        if self.inner.blocked.load(Ordering::Relaxed) {
            return Err(PublishError::Blocked);
        }
        let _permit = self.inner.in_flight.try_acquire().map_err(|_| PublishError::Overloaded)?;
        let link = self.link().ok_or(PublishError::Unavailable)?;
        let channel = link.channel();
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(msg.message_id))
            .with_headers(msg.headers);
        let publish = async {
            let opts = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
            let confirm =
                channel.basic_publish(msg.exchange.into(), msg.routing_key.into(), opts, msg.body, props).await?;
            confirm.await
        };
        let outcome = tokio::time::timeout(self.inner.settings.publish_timeout(), publish).await;
        let result = match outcome {
            Err(_) => Err(PublishError::Timeout),
            Ok(Err(e)) => Err(PublishError::Channel(e)),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable(msg.exchange.to_owned())),
            Ok(Ok(Confirmation::Nack(_) | Confirmation::NotRequested)) => Err(PublishError::Nacked),
        };
        if result.is_ok() {
            metrics::counter!("sluice_published_total").increment(1);
        }
        if let Err(e) = &result {
            metrics::counter!("sluice_publish_failures_total", "reason" => e.reason()).increment(1);
            if matches!(e, PublishError::Channel(_)) && !channel.status().connected() {
                self.request_reconnect(&link);
            }
        }
        result
    }
}

/// Publishes of a pipelined batch awaiting their confirms at once (a sliding window).
const WINDOW: usize = 1024;

impl Broker {
    /// Publishes many persistent, mandatory messages, pipelined: up to a window of them await
    /// their confirms while the next are sent. One result per message, in order.
    #[tracing::instrument(skip_all, fields(messages = msgs.len()))]
    pub async fn publish_many(&self, msgs: &[Message<'_>]) -> Vec<Result<(), PublishError>> {
        let mut results: Vec<Result<(), PublishError>> = Vec::with_capacity(msgs.len());
        let wait = self.inner.settings.publish_timeout();
        // At most a quarter of the process's publish permits, so single commands still get in.
        let window = WINDOW.min(self.inner.settings.max_in_flight_publishes / 4).max(1);
        let mut pending = FuturesOrdered::new();
        let mut broken: Option<Arc<Link>> = None;
        for msg in msgs {
            while pending.len() >= window {
                if let Some(r) = pending.next().await {
                    results.push(r);
                }
            }
            if self.inner.blocked.load(Ordering::Relaxed) {
                pending.push_back(ready(Err(PublishError::Blocked)).boxed());
                continue;
            }
            let Some(link) = self.link() else {
                pending.push_back(ready(Err(PublishError::Unavailable)).boxed());
                continue;
            };
            // Confirms of this batch free permits too: keep collecting them while waiting.
            let deadline = tokio::time::Instant::now() + wait;
            let permit = loop {
                tokio::select! {
                    p = self.inner.in_flight.clone().acquire_owned() => break p.ok(),
                    Some(r) = pending.next(), if !pending.is_empty() => results.push(r),
                    () = tokio::time::sleep_until(deadline) => break None,
                }
            };
            let Some(permit) = permit else {
                pending.push_back(ready(Err(PublishError::Overloaded)).boxed());
                continue;
            };
            let channel = link.channel();
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(msg.message_id))
                .with_headers(msg.headers.clone());
            let opts = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
            let sent = channel.basic_publish(msg.exchange.into(), msg.routing_key.into(), opts, msg.body, props).await;
            if sent.is_err() && !channel.status().connected() {
                broken = Some(link.clone());
            }
            pending.push_back(
                async move {
                    let _permit = permit;
                    match sent {
                        Ok(confirm) => match tokio::time::timeout(wait, confirm).await {
                            Err(_) => Err(PublishError::Timeout),
                            Ok(Err(e)) => Err(PublishError::Channel(e)),
                            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable(String::new())),
                            Ok(Ok(Confirmation::Nack(_) | Confirmation::NotRequested)) => Err(PublishError::Nacked),
                        },
                        Err(e) => Err(PublishError::Channel(e)),
                    }
                }
                .boxed(),
            );
        }
        while let Some(r) = pending.next().await {
            results.push(r);
        }
        let published = results.iter().filter(|r| r.is_ok()).count();
        metrics::counter!("sluice_published_total").increment(published as u64);
        if let Some(link) = broken {
            self.request_reconnect(&link);
        }
        results
    }
}

impl PublishError {
    /// Whether the broker surely did not take the message (as opposed to a lost or late
    /// confirm, after which it may have).
    pub fn definitely_not_published(&self) -> bool {
        matches!(self, Self::Unavailable | Self::Blocked | Self::Overloaded | Self::Nacked | Self::Unroutable(_))
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Blocked => "blocked",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::Nacked => "nacked",
            Self::Unroutable(_) => "unroutable",
            Self::Channel(_) => "channel",
        }
    }
}
