//! What a hostile client can hold: connections that never finish their headers are closed by
//! the header timeout without keeping anyone else from being served, and past the connection
//! bound a new connection is refused with a 503 while those already open are still served.

use crate::helpers::{eventually, spawn_app_with, Probe, DEADLINE};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client that sends a request's headers one byte a second and never finishes them; returns
/// true once the server closed the connection.
async fn slowloris(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"POST /v1/commands HTTP/1.1\r\nHost: x\r\n").await.is_err() {
        return true;
    }
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => return matches!(r, Ok(0) | Err(_)) || drain_to_close(&mut s).await,
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if s.write_all(b"a").await.is_err() {
                    return true;
                }
            }
        }
    }
}

async fn drain_to_close(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slow_header_connections_do_not_stop_a_normal_client_and_are_closed_by_the_header_timeout() {
    let app = spawn_app_with(|s| s.http.header_read_timeout_ms = 3000, &Probe::default()).await;
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let slow: Vec<_> = (0..2000).map(|_| tokio::spawn(slowloris(port))).collect();
    // While they hold their connections, a normal client gets its 202s.
    for i in 0..20 {
        let r = app.submit("event.record", json!({"name": "normal", "data": i})).await;
        assert_eq!(r.status(), 202);
    }
    let closed = tokio::time::timeout(DEADLINE, futures_util::future::join_all(slow)).await.expect("all ended");
    let closed = closed.into_iter().filter(|c| matches!(c, Ok(true))).count();
    assert_eq!(closed, 2000, "the server closed every connection that never finished its headers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_bound_a_new_connection_gets_503_and_open_ones_are_still_served() {
    let app = spawn_app_with(|s| s.http.max_connections = 20, &Probe::default()).await;
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    // The app's own client keeps one kept-alive connection open: it is one of the twenty.
    assert_eq!(app.submit("event.record", json!({"name": "first", "data": 0})).await.status(), 202);
    let mut idle = Vec::new();
    for _ in 0..19 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"));
    }
    let answer = eventually(DEADLINE, || async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut text)).await.ok()?.ok()?;
        (!text.is_empty()).then_some(text)
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections") && answer.contains("Retry-After: 1"), "{answer}");
    let r = app.submit("event.record", json!({"name": "still.served", "data": 1})).await;
    let status = r.status();
    assert_eq!(status, 202, "a connection already open is still served: {}", r.text().await.unwrap_or_default());
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_request_timeout_is_answered_503_with_retry_after() {
    let app = spawn_app_with(|s| s.http.request_timeout_ms = 500, &Probe::default()).await;
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    // Headers promise a body that arrives too slowly.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!(
        "POST /v1/commands HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\nConnection: close\r\n\r\n{{",
        app.key
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let mut text = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut text)).await.expect("answered").expect("read");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after: 1"), "{text}");
    assert!(text.contains("\"code\":\"timeout\""), "{text}");
}
