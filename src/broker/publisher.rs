//! Publishing with confirms: a publish succeeds only once RabbitMQ has taken responsibility.

use super::{burst, Broker};
use futures_util::stream::{FuturesOrdered, StreamExt};
use lapin::options::BasicPublishOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub message_id: &'a str,
    pub headers: &'a FieldTable,
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

impl PublishError {
    /// What a client may be told: the kind of failure, without the AMQP library's or the
    /// broker's own text (that goes to the log).
    pub fn public(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Channel(_) => "the RabbitMQ channel failed".into(),
            other => other.to_string().into(),
        }
    }
}

/// A confirm-mode channel that messages are published on.
pub(super) struct PublishChannel {
    channel: Channel,
    // lapin numbers a publish (for its confirm) and queues its frames in two steps, each under
    // its own lock (`before_basic_publish`, then `push_frames` in `send_method_frame_with_body`).
    // Two tasks publishing on one channel at once can interleave them; RabbitMQ numbers
    // messages in the order their frames arrive, so a confirm would then be matched to the
    // other message, and a 202 could answer a command that RabbitMQ had not confirmed yet.
    // Both steps happen in the publish future's first poll, which runs under this lock.
    numbering: Arc<Mutex<()>>,
    /// Where single publishes go to be sent in bursts; `None` sends each as it comes.
    bursts: Option<mpsc::UnboundedSender<burst::Job>>,
}

impl PublishChannel {
    /// Wraps a confirm-mode channel; with `burst_depth` > 0 its single publishes go out in
    /// bursts, at most that many awaiting confirms at once.
    pub(super) fn new(channel: Channel, burst_depth: usize) -> Self {
        let numbering = Arc::new(Mutex::new(()));
        let bursts = (burst_depth > 0).then(|| burst::start(channel.clone(), numbering.clone(), burst_depth));
        Self { channel, numbering, bursts }
    }

    /// Sends a persistent, mandatory message; the returned confirm resolves when RabbitMQ
    /// takes (or refuses) it.
    async fn send(&self, msg: &Message<'_>) -> lapin::Result<PublisherConfirm> {
        let mut publish = pin!(self.channel.basic_publish(
            msg.exchange.into(),
            msg.routing_key.into(),
            options(),
            msg.body,
            properties(msg)
        ));
        match first_poll_in_order(&self.numbering, publish.as_mut()).await {
            Poll::Ready(sent) => sent,
            // The frames are queued; what is left is waiting for lapin's I/O loop to write them.
            Poll::Pending => publish.await,
        }
    }

    /// Publishes `msg` as part of the next burst and waits for its confirm.
    async fn send_in_burst(
        &self,
        bursts: &mpsc::UnboundedSender<burst::Job>,
        msg: &Message<'_>,
    ) -> Result<Confirmation, PublishError> {
        let (reply, answer) = oneshot::channel();
        let job = burst::Job {
            exchange: msg.exchange.into(),
            routing_key: msg.routing_key.into(),
            body: msg.body.to_vec(),
            properties: properties(msg),
            reply,
        };
        // The sender ended with its link: nothing was sent.
        bursts.send(job).map_err(|_| PublishError::Unavailable)?;
        match answer.await {
            Ok(confirmed) => Ok(confirmed?),
            // The sender was dropped with the job in it (the runtime is shutting down); it
            // may have been sent, so this is not a definite failure.
            Err(_) => Err(PublishError::Timeout),
        }
    }
}

/// Polls a publish once under the channel's `numbering` lock: lapin numbers it and queues its
/// frames in that first poll, and the lock keeps two publishes from interleaving the steps.
pub(super) async fn first_poll_in_order<F: Future + ?Sized>(
    numbering: &Mutex<()>,
    mut publish: Pin<&mut F>,
) -> Poll<F::Output> {
    poll_fn(|cx| {
        let _in_order = numbering.lock().unwrap_or_else(PoisonError::into_inner);
        Poll::Ready(publish.as_mut().poll(cx))
    })
    .await
}

/// A sluice message's properties: persistent, JSON, its id, its headers.
fn properties(msg: &Message<'_>) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(msg.message_id))
        .with_headers(msg.headers.clone())
}

/// Every publish is mandatory, so one that reaches no queue comes back instead of vanishing.
pub(super) fn options() -> BasicPublishOptions {
    BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() }
}

impl Broker {
    /// Publishes a persistent, mandatory message and waits for the broker's confirm.
    #[tracing::instrument(skip_all, fields(exchange = msg.exchange, routing_key = msg.routing_key, message_id = msg.message_id))]
    pub async fn publish(&self, msg: Message<'_>) -> Result<(), PublishError> {
        if self.inner.blocked.load(Ordering::Relaxed) {
            return self.failed(PublishError::Blocked);
        }
        self.publish_single(msg, None).await
    }

    /// Like `publish`, for the workers' retries and dead letters: while RabbitMQ blocks this
    /// connection (a resource alarm) it waits instead of failing, however long the alarm lasts.
    /// A blocked publish is not lost but read once the alarm ends, and confirmed then; and the
    /// worker's alternative, handing the message back, would run it again at once, with no
    /// backoff, each round counting toward the queue's delivery limit (and, after a timed-out
    /// publish that RabbitMQ later takes, running it twice). A shutdown (`cancel`) ends the
    /// wait: `Blocked` if nothing was sent yet, else `Timeout`.
    #[tracing::instrument(skip_all, fields(exchange = msg.exchange, routing_key = msg.routing_key, message_id = msg.message_id))]
    pub async fn publish_held(&self, msg: Message<'_>, cancel: &CancellationToken) -> Result<(), PublishError> {
        if !self.wait_unblocked(cancel).await {
            return self.failed(PublishError::Blocked);
        }
        self.publish_single(msg, Some(cancel)).await
    }

    /// One publish of `publish` or `publish_held`, within the process's in-flight bound.
    async fn publish_single(
        &self,
        msg: Message<'_>,
        held_until: Option<&CancellationToken>,
    ) -> Result<(), PublishError> {
        let Ok(_permit) = self.inner.in_flight.try_acquire() else {
            return self.failed(PublishError::Overloaded);
        };
        let result = self.confirmed(&msg, held_until, None).await;
        if result.is_ok() {
            metrics::counter!("sluice_published_total").increment(1);
        }
        result
    }

    /// Publishes many persistent, mandatory messages, pipelined: up to a window of them are
    /// sent and await their confirms at once, in one task, so the frames of many publishes
    /// reach lapin's I/O loop together. One result per message, in order. All go on one
    /// channel, so those that reach a queue are in it in this order (a batch's ordered items).
    #[tracing::instrument(skip_all, fields(messages = msgs.len()))]
    pub async fn publish_many(&self, msgs: &[Message<'_>]) -> Vec<Result<(), PublishError>> {
        // At most a quarter of the process's publish permits, so single commands still get in.
        let window = WINDOW.min(self.inner.settings.max_in_flight_publishes / 4).max(1);
        let mut results = Vec::with_capacity(msgs.len());
        let mut pending = FuturesOrdered::new();
        let pinned = rand::random::<u32>() as usize;
        for msg in msgs {
            if pending.len() >= window {
                results.extend(pending.next().await);
            }
            // Waits for a permit (confirms of this batch free them too, as the window moves on),
            // but not past the publish timeout.
            let permit = self.inner.in_flight.clone().acquire_owned();
            let permit =
                tokio::time::timeout(self.inner.settings.publish_timeout(), permit).await.ok().and_then(Result::ok);
            let mut publish = Box::pin(self.publish_one_of_many(msg, pinned, permit));
            // Its frames are queued in its first poll: polled here, so they go out in order.
            let first = futures_util::poll!(publish.as_mut());
            pending.push_back(async move {
                match first {
                    std::task::Poll::Ready(r) => r,
                    std::task::Poll::Pending => publish.await,
                }
            });
        }
        while let Some(r) = pending.next().await {
            results.push(r);
        }
        let published = results.iter().filter(|r| r.is_ok()).count();
        metrics::counter!("sluice_published_total").increment(published as u64);
        results
    }

    async fn publish_one_of_many(
        &self,
        msg: &Message<'_>,
        channel: usize,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<(), PublishError> {
        if self.inner.blocked.load(Ordering::Relaxed) {
            return self.failed(PublishError::Blocked);
        }
        let Some(_permit) = permit else {
            return self.failed(PublishError::Overloaded);
        };
        self.confirmed(msg, None, Some(channel)).await
    }

    /// Sends `msg` on the current link and waits for its confirm, within the publish timeout; with
    /// `held_until` also for as long as RabbitMQ blocks the connection, until that token fires;
    /// on the link's channel `pinned` if given, else on the next in turn.
    async fn confirmed(
        &self,
        msg: &Message<'_>,
        held_until: Option<&CancellationToken>,
        pinned: Option<usize>,
    ) -> Result<(), PublishError> {
        let Some(link) = self.link() else {
            return self.failed(PublishError::Unavailable);
        };
        let channel = match pinned {
            Some(i) => link.channel_at(i),
            None => link.channel(),
        };
        let mut publish = pin!(async {
            match (&channel.bursts, pinned) {
                // A pipelined batch keeps its own channel and order; only singles are grouped.
                (Some(bursts), None) => channel.send_in_burst(bursts, msg).await,
                _ => Ok(channel.send(msg).await?.await?),
            }
        });
        let confirmed = loop {
            match tokio::time::timeout(self.inner.settings.publish_timeout(), publish.as_mut()).await {
                Ok(done) => break Some(done),
                Err(_) => match held_until {
                    Some(cancel) if self.inner.blocked.load(Ordering::Relaxed) => tokio::select! {
                        done = publish.as_mut() => break Some(done),
                        unblocked = self.wait_unblocked(cancel) => if !unblocked { break None },
                    },
                    _ => break None,
                },
            }
        };
        let result = match confirmed {
            None => Err(PublishError::Timeout),
            Some(Err(e)) => Err(e),
            Some(Ok(Confirmation::Ack(None))) => Ok(()),
            Some(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable(msg.exchange.to_owned())),
            Some(Ok(Confirmation::Nack(_) | Confirmation::NotRequested)) => Err(PublishError::Nacked),
        };
        if matches!(result, Err(PublishError::Channel(_))) && !channel.channel.status().connected() {
            self.request_reconnect(&link);
        }
        result.or_else(|e| self.failed(e))
    }

    fn failed(&self, e: PublishError) -> Result<(), PublishError> {
        metrics::counter!("sluice_publish_failures_total", "reason" => e.reason()).increment(1);
        Err(e)
    }
}

/// Publishes of a pipelined batch awaiting their confirms at once (a sliding window).
const WINDOW: usize = 1024;

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
