//! Publishing with confirms: a publish succeeds only once RabbitMQ has taken responsibility.

use super::Broker;
use lapin::options::BasicPublishOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::BasicProperties;
use lapin::Confirmation;
use std::sync::atomic::Ordering;

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

/// Publishes of a pipelined batch sent before their confirms are awaited.
const WINDOW: usize = 512;

impl Broker {
    /// Publishes many persistent, mandatory messages, pipelined: a window of them is sent, then
    /// their confirms are awaited together. One result per message, in order; after a failure
    /// of the connection the rest fail without being sent.
    #[tracing::instrument(skip_all, fields(messages = msgs.len()))]
    pub async fn publish_many(&self, msgs: &[Message<'_>]) -> Vec<Result<(), PublishError>> {
        let mut results: Vec<Result<(), PublishError>> = Vec::with_capacity(msgs.len());
        for window in msgs.chunks(WINDOW) {
            if self.inner.blocked.load(Ordering::Relaxed) {
                results.extend(window.iter().map(|_| Err(PublishError::Blocked)));
                continue;
            }
            let Some(link) = self.link() else {
                results.extend(window.iter().map(|_| Err(PublishError::Unavailable)));
                continue;
            };
            let n = u32::try_from(window.len()).unwrap_or(u32::MAX);
            let wait = self.inner.settings.publish_timeout();
            let permits = match tokio::time::timeout(wait, self.inner.in_flight.acquire_many(n)).await {
                Ok(Ok(p)) => p,
                _ => {
                    results.extend(window.iter().map(|_| Err(PublishError::Overloaded)));
                    continue;
                }
            };
            let channel = link.channel();
            let mut confirms = Vec::with_capacity(window.len());
            for msg in window {
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(ShortString::from("application/json"))
                    .with_message_id(ShortString::from(msg.message_id))
                    .with_headers(msg.headers.clone());
                let opts = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
                confirms.push(
                    channel.basic_publish(msg.exchange.into(), msg.routing_key.into(), opts, msg.body, props).await,
                );
            }
            let waited = futures_util::future::join_all(confirms.into_iter().map(|sent| async move {
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
            }))
            .await;
            drop(permits);
            let published = waited.iter().filter(|r| r.is_ok()).count();
            metrics::counter!("sluice_published_total").increment(published as u64);
            if waited.iter().any(|r| matches!(r, Err(PublishError::Channel(_)))) && !channel.status().connected() {
                self.request_reconnect(&link);
            }
            results.extend(waited);
        }
        results
    }
}

impl PublishError {
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
