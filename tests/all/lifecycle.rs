//! Graceful shutdown and idle connections.

use std::time::Duration;

use http::Response;

use crate::harness::{Client, TestServer, config, full, gateway, held_upstream, refuses_connections, url};

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

/// A listener that closes connections idle for 200 ms, with one static route.
const IDLE_200MS: &str = "    limits: { idle_timeout: 200ms }\nroutes:\n  - name: ok\n    match: { path: / }\n    target: { static: { body: ok } }\n";

#[tokio::test]
async fn idle_keepalive_connections_are_closed() {
    let gw = gateway(&config(IDLE_200MS)).await;
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

/// An HTTP/2 connection with nothing in flight is told to go away once idle for the
/// listener's `idle_timeout`: the driver's clock ticks for HTTP/2 as for HTTP/1.
#[tokio::test]
async fn an_idle_http2_connection_is_sent_a_goaway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = gateway(&config(IDLE_200MS)).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("public")).await.unwrap();
    // The connection preface and an empty SETTINGS frame (prior knowledge).
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    // Frames as they come (9-byte headers: length, type, flags, stream), until a
    // GOAWAY (type 7) or the end.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let goaway = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut at = 0;
            while got.len() >= at + 9 {
                let len =
                    usize::from(got[at]) << 16 | usize::from(got[at + 1]) << 8 | usize::from(got[at + 2]);
                if got[at + 3] == 0x07 {
                    return true;
                }
                at += 9 + len;
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert_eq!(goaway, Ok(true), "no GOAWAY on an idle HTTP/2 connection ({} bytes read)", got.len());
    drop(s);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_listener_speaks_only_the_protocols_it_lists() {
    // hyper-util's auto builder sniffs the protocol whatever it is told, so before
    // the listener used hyper's single-protocol connections an `http1` listener
    // answered the HTTP/2 preface.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = |protocols: &str| {
        config(&format!(
            "    protocols: [{protocols}]\nroutes:\n  - name: ok\n    match: {{ path: / }}\n    target: {{ static: {{ body: ok }} }}\n"
        ))
    };
    // What the server sends back to `bytes` on a fresh connection, until it closes or
    // goes quiet.
    async fn answer(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }
    const H1: &[u8] = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
    // The HTTP/2 connection preface and an empty SETTINGS frame (prior knowledge).
    const H2: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    // A server that speaks HTTP/2 answers the preface with its own SETTINGS frame.
    let is_h2_settings = |b: &[u8]| b.len() >= 9 && b[3] == 0x04;

    let h1_only = gateway(&listener("http1")).await;
    assert!(answer(h1_only.addr("public"), H1).await.starts_with(b"HTTP/1.1 200"));
    let got = answer(h1_only.addr("public"), H2).await;
    assert!(!is_h2_settings(&got), "an http1 listener speaks no HTTP/2");
    h1_only.shutdown().await;

    let h2_only = gateway(&listener("http2")).await;
    assert!(is_h2_settings(&answer(h2_only.addr("public"), H2).await));
    assert!(
        !answer(h2_only.addr("public"), H1).await.starts_with(b"HTTP/1.1"),
        "an http2 listener speaks no HTTP/1.1"
    );
    h2_only.shutdown().await;
}

#[tokio::test]
async fn past_max_connections_a_client_waits_until_a_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = gateway(&config(
        "    limits: { max_connections: 1 }\nroutes:\n  - name: ok\n    match: { path: / }\n    target: { static: { body: ok } }\n",
    ))
    .await;
    let addr = gw.addr("public");
    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
    async fn answered(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 256];
        matches!(tokio::time::timeout(within, s.read(&mut buf)).await, Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200"))
    }
    // A holds the one connection (keep-alive).
    let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
    a.write_all(GET).await.unwrap();
    assert!(answered(&mut a, Duration::from_secs(10)).await);
    // B gets into the kernel's backlog, but is not served while A is open — A is.
    let mut b = tokio::net::TcpStream::connect(addr).await.unwrap();
    b.write_all(GET).await.unwrap();
    a.write_all(GET).await.unwrap();
    assert!(answered(&mut a, Duration::from_secs(10)).await, "A keeps being served");
    assert!(!answered(&mut b, Duration::from_millis(300)).await, "B was served past max_connections");
    // A goes away: B is accepted and answered.
    drop(a);
    assert!(answered(&mut b, Duration::from_secs(10)).await, "B is served once a connection is free");
    gw.shutdown().await;
}

fn upstream_route(up: &TestServer, server: &str) -> String {
    config(&format!(
        "{server}upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: app\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n",
        up.addr
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_under_load_finishes_every_accepted_request_and_refuses_new_connections() {
    const IN_FLIGHT: usize = 50;
    let (up, release) = held_upstream().await;
    let gw = gateway(&upstream_route(&up, "")).await;
    let addr = gw.addr("public");
    let calls: Vec<_> = (0..IN_FLIGHT)
        .map(|_| tokio::spawn(async move { Client::http1().get(&url(addr, "/work")).await }))
        .collect();
    while up.request_count() < IN_FLIGHT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = gw.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    // Draining: the listener is closed at once, while the accepted requests wait.
    assert!(
        refuses_connections(addr, Duration::from_secs(5)).await,
        "new connections are refused while draining"
    );
    assert!(!shutdown.is_finished(), "the shutdown waits for the requests in flight");
    release.send_replace(true);
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!((reply.status.as_u16(), reply.text()), (200, "done".to_owned()));
        // A keep-alive client learns the connection ends with this response.
        assert_eq!(reply.header("connection"), Some("close"));
    }
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("shutdown completes").unwrap();
    assert_eq!(up.request_count(), IN_FLIGHT, "nothing was retried or lost");
}

#[tokio::test]
async fn past_the_grace_period_the_remaining_connections_are_closed() {
    let (up, _release) = held_upstream().await;
    let gw = gateway(&upstream_route(&up, "server: { grace_period: 200ms }\n")).await;
    let addr = gw.addr("public");
    let stuck = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /stuck HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map(|_| buf)
    });
    while up.request_count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The upstream never answers: the shutdown ends at the grace period anyway, and
    // the client sees its connection closed, not an answer.
    tokio::time::timeout(Duration::from_secs(10), gw.shutdown())
        .await
        .expect("the grace period bounds the drain");
    let seen =
        tokio::time::timeout(Duration::from_secs(10), stuck).await.expect("the client is let go").unwrap();
    assert!(seen.as_ref().map_or(true, |b| b.is_empty()), "no response on a closed connection: {seen:?}");
}

/// The kernel's accept queue of the socket listening on `port`, as `ss` reports it
/// (`Send-Q` of a listening socket is its backlog).
fn listen_backlog(port: u16) -> Option<u64> {
    let out = std::process::Command::new("ss").args(["-Hltn", &format!("sport = :{port}")]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().next()?.split_whitespace().nth(2)?.parse().ok()
}

#[tokio::test]
async fn a_listener_queues_a_burst_as_large_as_its_connection_limit() {
    if !sluice_tests::have(sluice_tests::runs("ss", &["-V"]), "ss", "apt-get install -y iproute2") {
        return;
    }
    let somaxconn: u64 =
        std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    let limit = somaxconn.min(3000);
    let gw = gateway(&config(&format!(
        "    limits: {{ max_connections: {limit} }}\nroutes:\n  - name: ok\n    match: {{ path: / }}\n    target: {{ static: {{ body: ok }} }}\n"
    )))
    .await;
    // tokio's own default is 1024: a burst of more connections than that lost SYNs.
    assert_eq!(listen_backlog(gw.addr("public").port()), Some(limit));
    gw.shutdown().await;
}
