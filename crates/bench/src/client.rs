//! The load generator's client for single commands: one keep-alive HTTP/1.1 connection per
//! simulated client, driven by hyper directly. It shares the machine's two cores with what it
//! measures, so its own work per request is kept small: reqwest's pool, URL handling and
//! header building cost it about 30 µs a request, an eighth of the whole machine's work per
//! command.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// Where single commands go, and with which key.
#[derive(Clone)]
pub struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    uri: Uri,
    auth: HeaderValue,
}

impl Target {
    /// `POST /v1/commands` on `addr` with `key`.
    pub fn new(addr: SocketAddr, key: &str) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            uri: Uri::from_static("/v1/commands"),
            auth: HeaderValue::from_str(&format!("Bearer {key}"))?,
        })
    }
}

/// One client's connection, reopened after an error.
pub struct Poster {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Poster {
    /// A client of `target`; it connects on its first request.
    pub fn new(target: Target) -> Self {
        Self { target, sender: None }
    }

    /// Posts one command body; the answer's status.
    pub async fn post(&mut self, body: Vec<u8>) -> anyhow::Result<StatusCode> {
        let result = self.try_post(body).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_post(&mut self, body: Vec<u8>) -> anyhow::Result<StatusCode> {
        let mut sender = match self.sender.take() {
            Some(s) => s,
            None => connect(self.target.addr).await?,
        };
        // A kept-alive connection the server has closed: nothing was sent on it, so open
        // another rather than count a refusal.
        if sender.ready().await.is_err() {
            sender = connect(self.target.addr).await?;
            sender.ready().await?;
        }
        let sender = self.sender.insert(sender);
        let t = &self.target;
        let req = Request::builder()
            .method(Method::POST)
            .uri(t.uri.clone())
            .header(HOST, t.host.clone())
            .header(AUTHORIZATION, t.auth.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(req).await?;
        let status = response.status();
        // Read the answer to its end, so the connection is ready for the next request.
        response.into_body().collect().await?;
        Ok(status)
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Drives the connection until the sender is dropped or the server closes it.
    tokio::spawn(connection);
    Ok(sender)
}
