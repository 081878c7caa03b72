//! A TCP proxy a test can cut or stall: makes RabbitMQ or Postgres unreachable for one app
//! only, so a fault test does not disturb the tests running beside it.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Forward,
    /// Closes every connection and refuses new ones.
    Cut,
    /// Keeps every socket open but moves no byte: a partition the peers must detect with
    /// heartbeats, since no FIN or RST ever arrives.
    Stall,
}

pub struct Proxy {
    pub port: u16,
    mode: Arc<watch::Sender<Mode>>,
    target: Arc<std::sync::Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards 127.0.0.1:<port> to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(watch::channel(Mode::Forward).0);
        let gate = mode.clone();
        let target = Arc::new(std::sync::Mutex::new(target));
        let dest = target.clone();
        let task = tokio::spawn(async move {
            // Owns every connection's task: aborting the proxy aborts them all.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                while conns.try_join_next().is_some() {}
                let gate = gate.clone();
                let mode = *gate.borrow();
                match mode {
                    Mode::Cut => continue, // closed at once
                    Mode::Stall => {
                        // Accepted and never answered: the peer's own timeouts must notice.
                        conns.spawn(async move {
                            let _held = inbound;
                            let _ = gate.subscribe().wait_for(|m| *m != Mode::Stall).await;
                        });
                        continue;
                    }
                    Mode::Forward => {}
                }
                let to = *dest.lock().expect("proxy target");
                conns.spawn(async move {
                    let Ok(outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let mut cut = gate.subscribe();
                    tokio::select! {
                        _ = pump(ri, wo, gate.subscribe()) => {}
                        _ = pump(ro, wi, gate.subscribe()) => {}
                        _ = cut.wait_for(|m| *m == Mode::Cut) => {}
                    }
                });
            }
        });
        Self { port, mode, target, task }
    }

    /// Closes every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Stops moving bytes without closing anything.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Sends new connections to `to` from now on, as a virtual IP or pooler does when the
    /// database fails over; connections already forwarded stay where they are.
    pub fn retarget(&self, to: SocketAddr) {
        *self.target.lock().expect("proxy target") = to;
    }

    /// Forwards again (stalled connections resume, as after a healed partition).
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

/// Copies one direction, holding still while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if mode.wait_for(|m| *m == Mode::Forward).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Stop reading as soon as the stall begins; bytes already read are still delivered.
            _ = mode.wait_for(|m| *m != Mode::Forward) => continue,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
