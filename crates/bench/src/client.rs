//! The load generator's client for single commands: one keep-alive HTTP/1.1 connection per
//! simulated client, written and read directly on its socket. It shares the machine's two
//! cores with what it measures, so its own work per request is kept to a write, a read and a
//! header parse: reqwest's pool, URL handling and header building cost about 30 µs a request,
//! and hyper's client connection, a task of its own that each request crosses to and back,
//! 17–20 µs; this costs under 10 (docs/performance.md).

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where single commands go, and with which key.
#[derive(Clone)]
pub struct Target {
    addr: SocketAddr,
    /// The request line and headers up to the body's length, the same for every request.
    head: String,
}

impl Target {
    /// `POST /v1/commands` on `addr` with `key`.
    pub fn new(addr: SocketAddr, key: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(key.bytes().all(|b| b.is_ascii_graphic()), "the API key must be visible ASCII");
        let head = format!(
            "POST /v1/commands HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: "
        );
        Ok(Self { addr, head })
    }
}

/// The status and whether the server keeps the connection open, from a response head.
struct Head {
    status: u16,
    /// Bytes of the head, then of the body.
    len: usize,
    body: usize,
    close: bool,
}

/// One client's connection, reopened after an error or a close.
pub struct Poster {
    target: Target,
    stream: Option<TcpStream>,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl Poster {
    /// A client of `target`; it connects on its first request.
    pub fn new(target: Target) -> Self {
        Self { target, stream: None, request: Vec::with_capacity(512), response: Vec::with_capacity(512) }
    }

    /// Posts one command body; the answer's status.
    pub async fn post(&mut self, body: &[u8]) -> anyhow::Result<u16> {
        self.request.clear();
        self.request.extend_from_slice(self.target.head.as_bytes());
        self.request.extend_from_slice(body.len().to_string().as_bytes());
        self.request.extend_from_slice(b"\r\n\r\n");
        self.request.extend_from_slice(body);
        let reused = self.stream.is_some();
        match self.exchange().await {
            Ok(status) => Ok(status),
            // A kept-alive connection the server had closed before reading the request: it
            // answered nothing, so the command was not taken. Send it once more on a new one.
            Err(Failure::ClosedUnanswered) if reused => {
                self.stream = None;
                self.exchange().await.map_err(Failure::into_error)
            }
            Err(e) => Err(e.into_error()),
        }
    }

    async fn exchange(&mut self) -> Result<u16, Failure> {
        let result = self.try_exchange().await;
        if !matches!(result, Ok((_, true))) {
            self.stream = None;
        }
        result.map(|(status, _)| status)
    }

    /// Writes the request, reads the whole answer; its status and whether the connection may
    /// carry the next request.
    async fn try_exchange(&mut self) -> Result<(u16, bool), Failure> {
        let stream = match self.stream.as_mut() {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(self.target.addr).await.map_err(Failure::Io)?;
                s.set_nodelay(true).map_err(Failure::Io)?;
                self.stream.insert(s)
            }
        };
        stream.write_all(&self.request).await.map_err(Failure::Io)?;
        self.response.clear();
        let head = loop {
            if stream.read_buf(&mut self.response).await.map_err(Failure::Io)? == 0 {
                return Err(if self.response.is_empty() { Failure::ClosedUnanswered } else { Failure::Truncated });
            }
            if let Some(head) = parse_head(&self.response)? {
                break head;
            }
        };
        while self.response.len() < head.len + head.body {
            if stream.read_buf(&mut self.response).await.map_err(Failure::Io)? == 0 {
                return Err(Failure::Truncated);
            }
        }
        // One request in flight per connection: nothing may follow the answer.
        if self.response.len() > head.len + head.body {
            return Err(Failure::Protocol("bytes after the response".into()));
        }
        Ok((head.status, !head.close))
    }
}

/// The head of `buf` once it is complete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf).map_err(|e| Failure::Protocol(e.to_string()))? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.unwrap_or(0);
    let mut body = None;
    let mut close = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
            body = Some(n.ok_or_else(|| Failure::Protocol("a bad content-length".into()))?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Failure::Protocol("a chunked answer (sluice sends lengths)".into()));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= h.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some(Head { status, len, body: body.unwrap_or(0), close }))
}

/// Why an exchange failed.
enum Failure {
    /// The connection ended before a byte of the answer: the request was not taken.
    ClosedUnanswered,
    /// It ended mid-answer.
    Truncated,
    Io(std::io::Error),
    Protocol(String),
}

impl Failure {
    fn into_error(self) -> anyhow::Error {
        match self {
            Self::ClosedUnanswered => anyhow::anyhow!("the server closed the connection without answering"),
            Self::Truncated => anyhow::anyhow!("the server closed the connection mid-answer"),
            Self::Io(e) => e.into(),
            Self::Protocol(why) => anyhow::anyhow!("not an HTTP/1.1 answer the bench reads: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_once_complete_with_its_length_and_close() {
        assert!(parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2").ok().flatten().is_none());
        let head =
            parse_head(b"HTTP/1.1 202 Accepted\r\nContent-Length: 12\r\n\r\n{\"id\"").ok().flatten().expect("complete");
        assert_eq!((head.status, head.body, head.close), (202, 12, false));
        assert_eq!(head.len, 45);
        let closing = parse_head(b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
            .ok()
            .flatten()
            .expect("complete");
        assert_eq!((closing.status, closing.close), (503, true));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }
}
