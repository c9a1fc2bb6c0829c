//! Idle HTTP/1.1 connections: after a quiet tick a connection parks (its buffers are
//! released; `sluice_connections_parked` counts it) and its next request wakes it;
//! bytes of a next request read before parking are kept; the idle timeout, not the
//! header-read timeout, governs the wait between requests; and a request head gets
//! `header_read_timeout` from its first byte however slowly it trickles in.

use std::net::SocketAddr;
use std::time::Duration;

use sluice::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::gateway;

fn config(limits: &str) -> String {
    format!(
        "version: 1
admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: public
    address: 127.0.0.1:0
    limits: {{ {limits} }}
routes:
  - name: one
    match: {{ path: /one }}
    target: {{ static: {{ body: one }} }}
  - name: two
    match: {{ path: /two }}
    target: {{ static: {{ body: two }} }}
"
    )
}

/// Reads one response (a static route's: `content-length`) and returns its body, or
/// `None` if the connection closed first.
async fn response(s: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if got.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&got[end + 4..end + 4 + len]).into_owned());
            }
        }
        let n =
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("an answer").ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// The listener's `sluice_connections_parked` gauge.
async fn parked(gw: &Gateway) -> u64 {
    let mut s = TcpStream::connect(gw.addr("admin")).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).await.unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix("sluice_connections_parked{listener=\"public\"} "))
        .unwrap_or_else(|| panic!("no parked gauge:\n{page}"))
        .parse()
        .unwrap()
}

/// Whether the gateway closes `s` within `within` (bytes it sends first are ignored).
async fn closed_within(s: &mut (impl tokio::io::AsyncRead + Unpin), within: Duration) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A keep-alive connection that has had one request (`/one`) answered.
async fn served_once(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    assert_eq!(response(&mut s).await.as_deref(), Some("one"));
    s
}

#[tokio::test]
async fn an_idle_connection_parks_and_its_next_request_wakes_it() {
    let gw = gateway(&config("idle_timeout: 20s, header_read_timeout: 800ms")).await;
    let mut s = served_once(gw.addr("public")).await;
    let mut gauge = 0;
    for _ in 0..100 {
        gauge = parked(&gw).await;
        if gauge == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gauge, 1, "the quiet connection parked");
    s.write_all(b"GET /two HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    assert_eq!(response(&mut s).await.as_deref(), Some("two"), "the parked connection serves on");
    assert_eq!(parked(&gw).await, 0, "a woken connection is not parked");
    gw.shutdown().await;
}

/// Polls the parked gauge until it reads `want` (5 s at most); returns the last reading.
async fn parked_reaches(gw: &Gateway, want: u64) -> u64 {
    let mut gauge = parked(gw).await;
    for _ in 0..100 {
        if gauge == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gauge = parked(gw).await;
    }
    gauge
}

#[tokio::test]
async fn many_parked_connections_wake_at_once_are_each_served_and_park_again() {
    // Plain HTTP/1 connections park out of their tasks, in the listener's lot; a
    // batch of them turning readable together must each get its own answer.
    let gw = gateway(&config("idle_timeout: 20s, header_read_timeout: 800ms")).await;
    let addr = gw.addr("public");
    let mut conns = Vec::new();
    for _ in 0..40 {
        conns.push(served_once(addr).await);
    }
    assert_eq!(parked_reaches(&gw, 40).await, 40, "all 40 quiet connections parked");
    for s in &mut conns {
        s.write_all(b"GET /two HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    }
    for (i, s) in conns.iter_mut().enumerate() {
        assert_eq!(response(s).await.as_deref(), Some("two"), "connection {i} after waking");
    }
    assert_eq!(parked_reaches(&gw, 40).await, 40, "woken and quiet again, they park again");
    for s in &mut conns {
        s.write_all(b"GET /one HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
        assert_eq!(response(s).await.as_deref(), Some("one"), "a second wake-up");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_parked_connection_closes_at_its_idle_timeout_and_at_shutdown() {
    let gw = gateway(&config("idle_timeout: 2s, header_read_timeout: 800ms")).await;
    let mut s = served_once(gw.addr("public")).await;
    assert_eq!(parked_reaches(&gw, 1).await, 1, "parked");
    assert!(closed_within(&mut s, Duration::from_secs(6)).await, "closed by the idle timeout");
    assert_eq!(parked_reaches(&gw, 0).await, 0, "no longer counted");
    gw.shutdown().await;

    let gw = gateway(&config("idle_timeout: 60s, header_read_timeout: 800ms")).await;
    let mut s = served_once(gw.addr("public")).await;
    assert_eq!(parked_reaches(&gw, 1).await, 1, "parked");
    // The drain closes a parked connection at once instead of waiting out its
    // idle timeout (or the grace period).
    let (closed, ()) = tokio::join!(closed_within(&mut s, Duration::from_secs(5)), gw.shutdown());
    assert!(closed, "closed at shutdown");
}

#[tokio::test]
async fn part_of_a_next_request_read_before_parking_is_kept() {
    let gw = gateway(&config("idle_timeout: 20s, header_read_timeout: 2s")).await;
    let mut s = TcpStream::connect(gw.addr("public")).await.unwrap();
    // The first request and the start of the second in one write: hyper reads both.
    s.write_all(b"GET /one HTTP/1.1\r\nhost: t\r\n\r\nGET /two HTTP/1.1\r\nhos").await.unwrap();
    assert_eq!(response(&mut s).await.as_deref(), Some("one"));
    // Quiet for longer than a tick (500 ms here): the driver takes the socket back
    // from hyper with those bytes, and carries on with them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"t: t\r\n\r\n").await.unwrap();
    assert_eq!(response(&mut s).await.as_deref(), Some("two"));
    gw.shutdown().await;
}

#[tokio::test]
async fn the_wait_between_requests_is_the_idle_timeouts_not_the_header_timeouts() {
    let gw = gateway(&config("idle_timeout: 3s, header_read_timeout: 1s")).await;
    let mut s = served_once(gw.addr("public")).await;
    // Twice the header timeout between requests: the connection is still there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.write_all(b"GET /two HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    assert_eq!(response(&mut s).await.as_deref(), Some("two"), "not closed by the header timeout");
    assert!(closed_within(&mut s, Duration::from_secs(10)).await, "closed by the idle timeout");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_head_trickling_in_slower_than_a_tick_is_cut_off_after_the_header_timeout() {
    let gw = gateway(&config("idle_timeout: 30s, header_read_timeout: 1s")).await;
    let mut s = served_once(gw.addr("public")).await;
    // Idle long enough to park, then a head one byte at a time, each after a quiet
    // tick (250 ms here): neither parking nor waking may restart the head's clock.
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(b"GET /two HTTP/1.1\r\n").await.unwrap();
    let (mut reader, mut writer) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    // 40 bytes would take 16 s; the head's second is up long before.
    let closed = closed_within(&mut reader, Duration::from_secs(10)).await;
    trickle.abort();
    assert!(closed, "the trickling head was not cut off");
    gw.shutdown().await;
}
