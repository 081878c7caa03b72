//! The HTTP/1.1 server loop: what a hostile client could otherwise hold open is bounded.
//!
//! `axum::serve` sets no timer, so hyper's header-read timeout never fires there, and it takes
//! every connection it is offered: 3,000 clients sending one header line a second held 3,000
//! sockets for as long as they liked. Here every connection must finish a request's headers
//! within `http.header_read_timeout_ms` of opening, or of its previous response (hyper arms the
//! same timer while a kept-alive connection waits for its next request, so it is also the idle
//! timeout), and past `http.max_connections` open connections a new one is answered 503 and
//! closed while those already open keep being served.

use crate::config::HttpSettings;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const TOO_MANY_BODY: &str =
    r#"{"error":{"code":"too_many_connections","message":"the server has too many open connections; retry shortly"}}"#;

/// The answer to a connection past the bound, written straight to the socket.
static TOO_MANY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{TOO_MANY_BODY}",
        TOO_MANY_BODY.len()
    )
    .into_bytes()
});

/// Serves `router` on `listener` until `shutdown` fires, then lets open requests finish.
pub async fn serve(listener: TcpListener, router: Router, settings: &HttpSettings, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(settings.header_read_timeout_ms))
        .max_header_size(settings.max_header_bytes);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken:
                    // pause briefly rather than spin, as the listener stays readable.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(&stream);
            metrics::counter!("sluice_http_connections_refused_total").increment(1);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req)
        });
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            metrics::gauge!("sluice_http_connections_open").increment(1.0);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            metrics::gauge!("sluice_http_connections_open").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers 503 without reading the request; the socket's empty send buffer takes the whole
/// answer at once, and a client that cannot take it is simply dropped.
fn refuse(stream: &TcpStream) {
    let _ = stream.try_write(&TOO_MANY);
}

/// The client's address as the server saw it (the TCP peer).
pub fn peer_of(parts: &axum::http::request::Parts) -> Option<SocketAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// The client's IP address, when the request came through [`serve`] (not in a `oneshot` test).
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(peer_of(parts).map(|a| a.ip())))
    }
}
