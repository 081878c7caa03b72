//! RabbitMQ: a supervised connection per role (API, workers), reconnected with backoff to the
//! first cluster node that answers, topology re-declared on every connect, publishing with
//! confirms.

mod burst;
pub mod headers;
mod inspect;
mod publisher;
pub mod topology;
pub mod wire;

pub use inspect::QueueStat;
pub use publisher::{Message, PublishError};
pub use topology::Topology;

use crate::config::BrokerSettings;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::{Connection, ConnectionProperties, Event};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

type EventStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Event> + Send>>;

/// Why one node could not be connected to.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("the node did not {0} within {1:?}")]
    Timeout(&'static str, Duration),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

/// A live connection with its publishing channels.
pub struct Link {
    /// The AMQP connection; consumers open their own channels on it.
    pub connection: Connection,
    /// `host:port` of the node connected to.
    pub node: String,
    publish_channels: Vec<publisher::PublishChannel>,
    next: AtomicUsize,
    /// Set when a user of this link saw one of its channels die.
    broken: AtomicBool,
}

impl Link {
    fn channel(&self) -> &publisher::PublishChannel {
        self.channel_at(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Channel `i` (modulo their number): messages on one channel reach a queue in the order
    /// they were sent, which messages spread over several need not.
    fn channel_at(&self, i: usize) -> &publisher::PublishChannel {
        &self.publish_channels[i % self.publish_channels.len()]
    }
}

/// Handle to the supervised broker connection; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    settings: BrokerSettings,
    topology: Topology,
    role: &'static str,
    link: watch::Sender<Option<Arc<Link>>>,
    in_flight: Arc<Semaphore>,
    blocked: AtomicBool,
    /// Wakes `wait_unblocked` callers when `blocked` clears.
    unblocked: Notify,
    reconnect: Notify,
}

impl Broker {
    /// Starts the supervisor of a connection named for `role` (`api`, `worker`, `cli`); the
    /// returned handle is usable at once (publishes fail with `Unavailable` until the first
    /// connection is up).
    pub fn start(settings: BrokerSettings, topology: Topology, role: &'static str, cancel: CancellationToken) -> Self {
        let inner = Arc::new(Inner {
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight_publishes)),
            settings,
            topology,
            role,
            link: watch::channel(None).0,
            blocked: AtomicBool::new(false),
            unblocked: Notify::new(),
            reconnect: Notify::new(),
        });
        let broker = Self { inner };
        // The name RabbitMQ's management UI and `rabbitmqctl list_connections` show.
        let name = format!("sluice {role} pid {}", std::process::id());
        tokio::spawn(broker.clone().supervise(name, cancel));
        broker
    }

    /// What this connection is for: `api`, `worker` or `cli`.
    pub fn role(&self) -> &'static str {
        self.inner.role
    }

    /// The deployment's exchange and queue names.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The current connection, if there is one.
    pub fn link(&self) -> Option<Arc<Link>> {
        self.inner.link.borrow().clone()
    }

    /// Waits for a connection with declared topology; `None` once `cancel` fires.
    pub async fn wait_link(&self, cancel: &CancellationToken) -> Option<Arc<Link>> {
        self.wait_new_link(None, cancel).await
    }

    /// Waits for a connection other than `old` (the one that just failed the caller).
    pub async fn wait_new_link(&self, old: Option<&Arc<Link>>, cancel: &CancellationToken) -> Option<Arc<Link>> {
        let mut rx = self.inner.link.subscribe();
        let is_new = |l: &Option<Arc<Link>>| match (l, old) {
            (Some(new), Some(old)) => !Arc::ptr_eq(new, old),
            (Some(_), None) => true,
            (None, _) => false,
        };
        tokio::select! {
            r = rx.wait_for(is_new) => r.ok().and_then(|l| l.clone()),
            () = cancel.cancelled() => None,
        }
    }

    /// Connected, topology declared, and not blocked by a resource alarm.
    pub fn is_ready(&self) -> bool {
        self.link().is_some_and(|l| l.connection.status().connected()) && !self.inner.blocked.load(Ordering::Relaxed)
    }

    /// Waits until RabbitMQ no longer blocks this connection's publishers (a resource alarm
    /// ended, or a new connection replaced the blocked one); false if `cancel` fired first.
    async fn wait_unblocked(&self, cancel: &CancellationToken) -> bool {
        loop {
            // Registered before the check, so a clear between the two is not missed.
            let mut cleared = std::pin::pin!(self.inner.unblocked.notified());
            cleared.as_mut().enable();
            if !self.inner.blocked.load(Ordering::Relaxed) {
                return true;
            }
            tokio::select! {
                () = cleared => {}
                () = cancel.cancelled() => return false,
            }
        }
    }

    fn set_blocked(&self, blocked: bool) {
        self.inner.blocked.store(blocked, Ordering::Relaxed);
        if !blocked {
            self.inner.unblocked.notify_waiters();
        }
    }

    /// Asks the supervisor to replace `link`, one of whose channels died. A request about a
    /// link that was already replaced is ignored.
    pub fn request_reconnect(&self, link: &Arc<Link>) {
        link.broken.store(true, Ordering::Relaxed);
        self.inner.reconnect.notify_one();
    }

    /// Closes the connection (at the very end of shutdown, after consumers drained).
    pub async fn close(&self) {
        if let Some(link) = self.inner.link.send_replace(None) {
            let _ = link.connection.close(200, "shutting down".into()).await;
        }
    }

    async fn supervise(self, name: String, cancel: CancellationToken) {
        let s = &self.inner.settings;
        let mut backoff = self.backoff();
        // The address tried first on the next connect: the one after the node last connected
        // to, so a node that died is tried last rather than waited on first.
        let mut next = 0;
        loop {
            let link = tokio::select! {
                r = self.connect_any(&name, next) => r,
                () = cancel.cancelled() => break,
            };
            let (link, mut events) = match link {
                Ok((i, ok)) => {
                    next = i + 1;
                    ok
                }
                Err(()) => {
                    let delay = backoff.next().unwrap_or(Duration::from_millis(s.reconnect_max_ms));
                    tracing::warn!(retry_in = ?delay, "cannot connect to any RabbitMQ node");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = cancel.cancelled() => break,
                    }
                }
            };
            backoff = self.backoff();
            tracing::info!(node = %link.node, "connected to RabbitMQ, topology declared");
            metrics::counter!("sluice_broker_connects_total", "node" => link.node.clone()).increment(1);
            self.set_blocked(false);
            self.inner.link.send_replace(Some(link.clone()));
            let reason = loop {
                tokio::select! {
                    ev = events.next() => match ev {
                        Some(Event::Error(e)) => break format!("connection error: {e}"),
                        Some(Event::ConnectionBlocked(why)) => {
                            tracing::warn!(reason = %why, "RabbitMQ blocked publishing (resource alarm)");
                            self.set_blocked(true);
                        }
                        Some(Event::ConnectionUnblocked) => {
                            tracing::info!("RabbitMQ unblocked publishing");
                            self.set_blocked(false);
                        }
                        Some(_) => {}
                        None => break "connection event stream ended".to_owned(),
                    },
                    () = self.inner.reconnect.notified() => {
                        if link.broken.load(Ordering::Relaxed) {
                            break "a channel failed".to_owned();
                        }
                    }
                    () = cancel.cancelled() => break "shutting down".to_owned(),
                }
            };
            if cancel.is_cancelled() {
                // Draining consumers still ack and publish on this link; `close` ends it.
                break;
            }
            self.inner.link.send_replace(None);
            tracing::warn!(%reason, node = %link.node, "lost RabbitMQ connection; reconnecting");
            let _ = link.connection.close(320, "reconnecting".into()).await;
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        let s = &self.inner.settings;
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(s.reconnect_min_ms))
            .with_max_delay(Duration::from_millis(s.reconnect_max_ms))
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Tries every address once, from `first` on (modulo their number); returns the index of
    /// the one connected to.
    async fn connect_any(&self, name: &str, first: usize) -> Result<(usize, (Arc<Link>, EventStream)), ()> {
        let s = &self.inner.settings;
        let uris = match s.amqp_uris() {
            Ok(uris) => uris,
            Err(e) => {
                // Settings validation refuses this at start-up; only a hand-built value gets here.
                tracing::error!(error = %e, "no usable broker address");
                return Err(());
            }
        };
        for k in 0..uris.len() {
            let i = (first + k) % uris.len();
            let node = format!("{}:{}", uris[i].authority.host, uris[i].authority.port);
            match self.connect(name, uris[i].clone(), &node).await {
                Ok(ok) => return Ok((i, ok)),
                Err(e) => tracing::warn!(%node, error = %e, "cannot connect to RabbitMQ node"),
            }
            metrics::counter!("sluice_broker_connect_failures_total", "node" => node).increment(1);
        }
        Err(())
    }

    async fn connect(
        &self,
        name: &str,
        uri: lapin::uri::AMQPUri,
        node: &str,
    ) -> Result<(Arc<Link>, EventStream), ConnectError> {
        let s = &self.inner.settings;
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let connection = tokio::time::timeout(s.connect_timeout(), Connection::connect_uri(uri, props))
            .await
            .map_err(|_| ConnectError::Timeout("accept the connection", s.connect_timeout()))??;
        // Declaring two dozen quorum queues on a busy or freshly formed cluster takes longer
        // than a handshake; a node that answered but then stalls still must not hold us for ever.
        let setup_time = s.connect_timeout() * 6;
        tokio::time::timeout(setup_time, self.set_up(connection, node))
            .await
            .map_err(|_| ConnectError::Timeout("declare the topology", setup_time))?
            .map_err(ConnectError::Amqp)
    }

    /// Declares the topology and opens the publishing channels on a new connection.
    async fn set_up(&self, connection: Connection, node: &str) -> lapin::Result<(Arc<Link>, EventStream)> {
        let s = &self.inner.settings;
        let events: EventStream = Box::pin(connection.events_listener());
        let setup = connection.create_channel().await?;
        self.inner.topology.declare(&setup).await?;
        let _ = setup.close(200, "topology declared".into()).await;
        let mut publish_channels = Vec::with_capacity(s.publish_channels);
        for _ in 0..s.publish_channels {
            let ch = connection.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            publish_channels.push(publisher::PublishChannel::new(ch, s.publish_bursts));
        }
        Ok((
            Arc::new(Link {
                connection,
                node: node.to_owned(),
                publish_channels,
                next: AtomicUsize::new(0),
                broken: AtomicBool::new(false),
            }),
            events,
        ))
    }
}
