//! Graceful shutdown and idle connections.

use std::time::Duration;

use http::Response;

use crate::harness::{Client, TestServer, config, full, gateway, url};

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let up = TestServer::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Response::new(full("slow but complete"))
    })
    .await;
    let yaml = config(&format!(
        "upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: app\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n",
        up.addr
    ));
    let gw = gateway(&yaml).await;
    let addr = gw.addr("public");
    let in_flight = tokio::spawn(async move { Client::http1().get(&url(addr, "/slow")).await });
    // Let the request reach the upstream, then shut down.
    while up.request_count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = gw.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "slow but complete");
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("shutdown completes").unwrap();
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn idle_keepalive_connections_are_closed() {
    let yaml = config(
        "    limits: { idle_timeout: 200ms }\nroutes:\n  - name: ok\n    match: { path: / }\n    target: { static: { body: ok } }\n",
    );
    let gw = gateway(&yaml).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.addr("public")).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The connection is kept alive: a second request on it is answered (a gateway
    // that closed after each response would pass the idle check below for nothing).
    s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "keep-alive: {n} bytes");
    // Stay idle: the gateway closes the keep-alive connection.
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "idle connection was not closed: {closed:?}");
    gw.shutdown().await;
}
