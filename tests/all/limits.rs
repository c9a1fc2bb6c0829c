//! Request limits answer with the right status, and slow clients are cut off.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Client, TestServer, config, gateway, url};

fn limited(upstream: std::net::SocketAddr) -> String {
    config(&format!(
        r#"    limits:
      max_header_bytes: 8KiB
      max_body_bytes: 1KiB
      max_uri_bytes: 1KiB
      header_read_timeout: 300ms
upstreams:
  app:
    targets: [{{ address: "{upstream}" }}]
routes:
  - name: app
    match: {{ path_prefix: / }}
    target: {{ upstream: app }}
  - name: echo
    match: {{ path_prefix: /echo }}
    target: {{ echo: {{}} }}
"#
    ))
}

/// Sends raw bytes and returns the status line's code (0 if the connection closed).
async fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => panic!("no answer within 5s"),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn oversized_requests_get_431_413_414() {
    let up = TestServer::echo().await;
    let gw = gateway(&limited(up.addr)).await;
    let addr = gw.addr("public");
    let client = Client::http1();

    // Headers over 8 KiB, but under hyper's read buffer: our own check.
    let req = http::Request::get(url(addr, "/"))
        .header("x-big", "a".repeat(8 * 1024))
        .body(crate::harness::full(""));
    assert_eq!(client.send(req.unwrap()).await.status, 431);
    // Far beyond any buffer: hyper's parser limit, still 431.
    let mut huge = b"GET / HTTP/1.1\r\nhost: t\r\n".to_vec();
    for i in 0..200 {
        huge.extend_from_slice(format!("x-h{i}: {}\r\n", "b".repeat(200)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    assert_eq!(raw_status(addr, &huge).await, 431);

    let long = format!("/{}", "u".repeat(2000));
    let reply = client.get(&url(addr, &long)).await;
    assert_eq!(reply.status, 414);
    assert_eq!(reply.json()["error"]["code"], "uri_too_long");

    // Declared length over the limit: refused before anything is forwarded.
    let reply = client.post(&url(addr, "/upload"), vec![b'x'; 4096]).await;
    assert_eq!(reply.status, 413);
    assert_eq!(up.request_count(), 0);
    // Chunked body that crosses the limit while streaming, to the echo target.
    let chunked = b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n800\r\n";
    let mut req = chunked.to_vec();
    req.extend_from_slice(&[b'y'; 0x800]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(raw_status(addr, &req).await, 413);
    // Within limits everything passes.
    assert_eq!(client.post(&url(addr, "/upload"), vec![b'x'; 512]).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn streamed_body_over_the_limit_upstream_gets_413() {
    let up = TestServer::echo().await;
    let gw = gateway(&limited(up.addr)).await;
    let mut req = b"POST /up HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n800\r\n".to_vec();
    req.extend_from_slice(&[b'y'; 0x800]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(raw_status(gw.addr("public"), &req).await, 413);
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_header_sender_is_cut_off() {
    let up = TestServer::echo().await;
    let gw = gateway(&limited(up.addr)).await;
    let mut s = TcpStream::connect(gw.addr("public")).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n").await.unwrap();
    // Never finish the head. The gateway must close the connection on its own
    // (header_read_timeout is 300ms; we allow it far longer).
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue, // a 408 may come first
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "the slow client was not disconnected");
    assert_eq!(up.request_count(), 0);
    gw.shutdown().await;
}
