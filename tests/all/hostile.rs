//! Hostile clients at the edge, over raw sockets: a request must be routed by the one
//! authority the upstream receives, its path must not walk around route rules,
//! upgrades must not open tunnels a route does not allow, header names must not
//! smuggle, a slow body must neither hold a connection forever nor switch an
//! upstream off for everyone, and every error the gateway makes has a JSON body.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Client, TestServer, config, gateway, url};

/// What a raw exchange returned: the status, the head (lowercased) and the body.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", self.head, self.body))
    }
    /// The upstream's view of the request, from the echo upstream's JSON.
    fn seen_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
}

/// Reads one response (head and a `content-length` body) from `s`.
async fn read_response(s: &mut TcpStream) -> Raw {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer within 10s")
            .unwrap_or(0);
        assert!(n > 0, "connection closed before a response: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
    while got.len() < head_end + len {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "body cut short");
        got.extend_from_slice(&buf[..n]);
    }
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = String::from_utf8_lossy(&got[head_end..head_end + len]).into_owned();
    Raw { status, head, body }
}

async fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_response(&mut s).await
}

/// A gateway whose one route answers with the echo target (which reads the body),
/// on a listener with these `limits`.
async fn echo_gateway(limits: &str) -> sluice::Gateway {
    gateway(&config(&format!(
        "    limits: {limits}\nroutes:\n  - name: echo\n    match: {{ path_prefix: / }}\n    target: {{ echo: {{}} }}\n"
    )))
    .await
}

/// A host-routed config: `vhost.test` has its own route that answers 403 (as an auth
/// plugin would), every other host goes to the echo upstream.
fn vhosts(upstream: SocketAddr) -> String {
    config(&format!(
        r#"upstreams:
  app:
    targets: [{{ address: "{upstream}" }}]
routes:
  - name: vhost
    match: {{ hosts: [vhost.test], path_prefix: / }}
    target: {{ static: {{ status: 403, body: "vhost denied" }} }}
  - name: any
    match: {{ path_prefix: / }}
    target: {{ upstream: app }}
"#
    ))
}

#[tokio::test]
async fn one_validated_authority_routes_the_request_and_is_what_the_upstream_gets() {
    let up = TestServer::echo().await;
    let gw = gateway(&vhosts(up.addr)).await;
    let addr = gw.addr("public");

    // Absolute form: routed by the target's authority, and the upstream gets that
    // authority, never the Host header that would have picked vhost.test's route.
    let r = raw(addr, b"GET http://plain.example/x HTTP/1.1\r\nHost: vhost.test\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.seen_header("host").as_deref(), Some("plain.example"));
    assert_eq!(r.json()["uri"], "/x");
    // And the reverse: the absolute form naming vhost.test gets vhost.test's route.
    let r = raw(addr, b"GET http://vhost.test/x HTTP/1.1\r\nHost: plain.example\r\n\r\n").await;
    assert_eq!(r.status, 403);

    // A trailing dot is the same host.
    let r = raw(addr, b"GET /x HTTP/1.1\r\nHost: vhost.test.\r\n\r\n").await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = raw(addr, b"GET /x HTTP/1.1\r\nHost: VHost.Test.:8080\r\n\r\n").await;
    assert_eq!(r.status, 403, "{}", r.body);

    // Malformed or ambiguous hosts are 400 with the JSON error body; nothing reaches
    // the upstream.
    let before = up.request_count();
    for request in [
        &b"GET /x HTTP/1.1\r\nHost: vhost.test@other\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: plain.example\r\nHost: vhost.test\r\n\r\n",
        b"GET /x HTTP/1.1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x:abc\r\n\r\n",
        b"GET http://user@plain.example/x HTTP/1.1\r\nHost: plain.example\r\n\r\n",
    ] {
        let r = raw(addr, request).await;
        assert_eq!(r.status, 400, "{:?}: {}{}", String::from_utf8_lossy(request), r.head, r.body);
        assert_eq!(r.json()["error"]["code"], "bad_request", "{}", r.body);
    }
    assert_eq!(up.request_count(), before, "a refused request reached the upstream");

    // HTTP/1.0 without Host is still served (the field is optional there).
    let r = raw(addr, b"GET /x HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", r.body);

    // HTTP/2: `:authority` decides, and a `host` that disagrees is refused.
    let req = http::Request::get(format!("http://vhost.test:{}/x", addr.port()))
        .body(crate::harness::full(""))
        .unwrap();
    let direct = {
        // Connect to the gateway while naming vhost.test as the authority.
        let (sender, conn) = h2_to(addr).await;
        tokio::spawn(conn);
        sender
    };
    let reply = send_h2(direct.clone(), req).await;
    assert_eq!(reply.0, 403, "{}", reply.1);
    let req = http::Request::get(format!("http://plain.example:{}/x", addr.port()))
        .header("host", "vhost.test")
        .body(crate::harness::full(""))
        .unwrap();
    let reply = send_h2(direct, req).await;
    assert_eq!(reply.0, 400, "{}", reply.1);
    assert!(reply.1.contains("bad_request"), "{}", reply.1);
    gw.shutdown().await;
}

type H2Sender = hyper::client::conn::http2::SendRequest<crate::harness::TestBody>;

/// An HTTP/2 (prior knowledge) connection to `addr`, whatever the request URIs name.
async fn h2_to(
    addr: SocketAddr,
) -> (H2Sender, impl std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap()
}

async fn send_h2(mut sender: H2Sender, req: http::Request<crate::harness::TestBody>) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Paths normalised before routing: dot segments, encoded dots and doubled slashes
/// cannot reach `/private` through `/big`'s route, and encoded slashes are refused.
#[tokio::test]
async fn dot_segments_and_encodings_cannot_walk_around_route_rules() {
    let up = TestServer::echo().await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  app:
    targets: [{{ address: "{}" }}]
routes:
  - name: big
    match: {{ path_prefix: /big }}
    target: {{ upstream: app }}
  - name: private
    match: {{ path_prefix: /private }}
    target: {{ static: {{ status: 403, body: "private" }} }}
"#,
        up.addr
    )))
    .await;
    let addr = gw.addr("public");
    for path in [
        "/big/../private/secret.txt",
        "/big/%2e%2e/private/secret.txt",
        "/big/%2E%2E/private/secret.txt",
        "/big/.%2e/private/secret.txt",
        "//private/secret.txt",
        "/big/./../private/secret.txt",
    ] {
        let r = raw(addr, format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }
    for path in
        ["/big/..%2fprivate/secret.txt", "/big%2F..%2Fprivate", "/big/..%5Cprivate", "/big/..\\private"]
    {
        let r = raw(addr, format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "bad_request");
    }
    // What the upstream receives is the normalised path, query untouched.
    let r = raw(addr, b"GET /big/./a//b/%7Euser?q=%2e%2e/x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["uri"], "/big/a/b/~user?q=%2e%2e/x");
    gw.shutdown().await;
}

/// A raw upstream that records every request head it reads on a connection and
/// answers `101 Switching Protocols` to the first whatever it asked for.
async fn switching_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut first = true;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    log.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).to_lowercase());
                    if first {
                        first = false;
                        let _ = s
                            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                            .await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn an_h2c_upgrade_opens_no_tunnel_past_the_routes() {
    let (up, seen) = switching_upstream().await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  app:
    targets: [{{ address: "{up}" }}]
routes:
  - name: private
    match: {{ path_prefix: /private }}
    target: {{ static: {{ status: 403, body: "private" }} }}
  - name: app
    match: {{ path_prefix: / }}
    target: {{ upstream: app }}
"#
    )))
    .await;
    let mut s = TcpStream::connect(gw.addr("public")).await.unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await
    .unwrap();
    let r = read_response(&mut s).await;
    // The upstream switched although nothing allowed it: 502, no tunnel.
    assert_eq!(r.status, 502, "{}{}", r.head, r.body);
    assert_eq!(r.json()["error"]["code"], "upstream_unexpected_upgrade");
    // The next request on the same client connection is routed as usual.
    let _ = s.write_all(b"GET /private/secret HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.is_empty() || rest.starts_with("HTTP/1.1 403"), "{rest}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap().join("\n---\n");
    assert!(!seen.contains("/private"), "a request reached the upstream through a tunnel:\n{seen}");
    assert!(!seen.contains("upgrade: h2c") && !seen.contains("http2-settings"), "{seen}");
    gw.shutdown().await;
}

#[tokio::test]
async fn underscored_header_names_are_dropped_or_refused() {
    let up = TestServer::echo().await;
    let yaml = |action: &str| {
        config(&format!(
            "    underscore_headers: {action}\nupstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: app\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n",
            up.addr
        ))
    };
    let gw = gateway(&yaml("drop")).await;
    let r = raw(
        gw.addr("public"),
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nTransfer_Encoding: chunked\r\nX_User: admin\r\n\r\nok",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let headers = r.json()["headers"].as_object().unwrap().clone();
    assert!(headers.keys().all(|k| !k.contains('_')), "{headers:?}");
    assert_eq!(r.json()["body_bytes"], 2);
    gw.shutdown().await;

    let gw = gateway(&yaml("reject")).await;
    let r = raw(gw.addr("public"), b"GET /x HTTP/1.1\r\nHost: t\r\nX_User: admin\r\n\r\n").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "bad_request");
    gw.shutdown().await;
}

/// An HTTP/1.0 upstream's response reaches an HTTP/1.1 client as HTTP/1.1, and
/// `X-Forwarded-Host` keeps the port.
#[tokio::test]
async fn responses_speak_the_clients_version_and_forwarded_host_keeps_the_port() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).await.unwrap_or(0);
            *log.lock().unwrap() = String::from_utf8_lossy(&buf[..n]).to_lowercase();
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        }
    });
    let gw = gateway(&config(&format!(
        "upstreams:\n  old:\n    targets: [{{ address: \"{old}\" }}]\nroutes:\n  - name: old\n    match: {{ path_prefix: / }}\n    target: {{ upstream: old }}\n"
    )))
    .await;
    let r = raw(gw.addr("public"), b"GET / HTTP/1.1\r\nHost: api.test:8443\r\n\r\n").await;
    assert!(r.head.starts_with("http/1.1 200"), "{}", r.head);
    assert_eq!(r.body, "ok");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains("x-forwarded-host: api.test:8443"), "{seen}");
    gw.shutdown().await;
}

/// A listener with a short body timeout in front of an upstream whose breaker and
/// passive health would trip after a couple of failures.
fn slow_body_config(upstream: SocketAddr, body_timeout: &str, request_timeout: &str) -> String {
    config(&format!(
        r#"    limits: {{ body_read_timeout: {body_timeout} }}
upstreams:
  app:
    targets: [{{ address: "{upstream}" }}]
    timeouts: {{ request: {request_timeout} }}
    retries: {{ attempts: 0 }}
    health: {{ passive: {{ failures: 2, eject_for: 30s }} }}
    circuit_breaker: {{ failures: 2, open_for: 30s }}
routes:
  - name: app
    match: {{ path_prefix: / }}
    target: {{ upstream: app }}
"#
    ))
}

/// Clients that send one byte of a 10-byte body and then nothing: each is answered
/// `408` within the body timeout and its connection closed, and the upstream stays
/// in service for everyone else (before, each was a 504 counted against the target).
#[tokio::test]
async fn slow_bodies_time_out_as_the_clients_fault_and_never_switch_the_upstream_off() {
    let up = TestServer::echo().await;
    // The body timeout fires first; then the upstream's timeout fires first.
    for (body_timeout, request_timeout) in [("300ms", "5s"), ("5s", "300ms")] {
        let gw = gateway(&slow_body_config(up.addr, body_timeout, request_timeout)).await;
        let addr = gw.addr("public");
        let mut slow = Vec::new();
        for _ in 0..6 {
            slow.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nx")
                    .await
                    .unwrap();
                let r = read_response(&mut s).await;
                // The connection is closed after the answer.
                let mut rest = Vec::new();
                let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
                (r, closed.is_ok())
            }));
        }
        let client = Client::http1();
        for _ in 0..20 {
            let reply = client.post(&url(addr, "/ok"), "fine").await;
            assert_eq!(reply.status, 200, "a normal client was refused: {}", reply.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for task in slow {
            let (r, closed) = task.await.unwrap();
            assert_eq!(r.status, 408, "{body_timeout}/{request_timeout}: {}{}", r.head, r.body);
            assert_eq!(r.json()["error"]["code"], "body_timeout");
            assert!(closed, "the slow connection was left open");
        }
        // After all of them, the target is still in service.
        for _ in 0..5 {
            assert_eq!(client.post(&url(addr, "/ok"), "fine").await.status, 200);
        }
        let snapshot = gw.snapshot();
        let upstream = snapshot.upstreams.iter().find(|(n, _)| n.as_str() == "app").unwrap().1;
        for t in upstream.targets_status() {
            assert_eq!(t.circuit, sluice::upstream::CircuitState::Closed, "{body_timeout}/{request_timeout}");
            assert!(!t.ejected, "{body_timeout}/{request_timeout}: the target was ejected");
        }
        gw.shutdown().await;
    }
}

/// A body that stops half way with no upstream involved at all (the echo target
/// reads it) is cut off at the body timeout too.
#[tokio::test]
async fn a_body_that_stops_mid_way_is_closed_within_the_body_timeout() {
    let gw = echo_gateway("{ body_read_timeout: 300ms }").await;
    let mut s = TcpStream::connect(gw.addr("public")).await.unwrap();
    s.write_all(b"POST /e HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 408, "{}{}", r.head, r.body);
    let mut rest = Vec::new();
    // The echo target would wait for the rest of the body forever: the 408 above is
    // the body timeout's, and the connection is closed after it.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("connection closed");
    gw.shutdown().await;
}

/// A client dripping a large body slower than `min_body_rate` is cut off once the
/// grace (the body timeout) has passed, though no single gap is long.
#[tokio::test]
async fn a_body_below_the_minimum_rate_is_cut_off() {
    let gw = echo_gateway("{ body_read_timeout: 500ms, min_body_rate: 1KiB }").await;
    let mut s = TcpStream::connect(gw.addr("public")).await.unwrap();
    s.write_all(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let mut answer = None;
    while started.elapsed() < Duration::from_secs(5) {
        // 10 bytes every 100 ms: 100 B/s, no gap near 500 ms.
        if s.write_all(&[b'x'; 10]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 1];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), s.peek(&mut buf)).await
            && n > 0
        {
            answer = Some(read_response(&mut s).await);
            break;
        }
    }
    // At 100 B/s the 100 kB body would take 1000 s: an answer within the loop's bound
    // can only be the rate check's.
    let r = answer.expect("the gateway answered the dripping client");
    assert_eq!(r.status, 408, "{}{}", r.head, r.body);
    gw.shutdown().await;
}

/// HTTP/2 heads over the listener's limit get the gateway's JSON 431, not the HTTP/2
/// layer's empty one.
#[tokio::test]
async fn oversized_http2_heads_get_the_json_error() {
    let gw = echo_gateway("{ max_header_bytes: 8KiB }").await;
    let client = Client::h2c();
    let req = http::Request::get(url(gw.addr("public"), "/"))
        .header("x-big", "a".repeat(12 * 1024))
        .body(crate::harness::full(""))
        .unwrap();
    let reply = client.send(req).await;
    assert_eq!(reply.status, 431);
    assert_eq!(reply.json()["error"]["code"], "headers_too_large");
    gw.shutdown().await;
}

/// Requests the HTTP/1 parser itself refuses (a bad method, target or header) get the
/// gateway's JSON error body too, not an empty one.
#[tokio::test]
async fn parser_errors_carry_the_json_error_body() {
    let gw = echo_gateway("{}").await;
    for request in [
        &b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET /a\x01b HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nbad header\r\n\r\n",
    ] {
        let r = raw(gw.addr("public"), request).await;
        assert_eq!(r.status, 400, "{:?}: {}", String::from_utf8_lossy(request), r.head);
        assert_eq!(r.json()["error"]["code"], "bad_request", "{}", r.body);
        assert!(r.json()["error"]["request_id"].as_str().is_some_and(|id| id.len() == 32));
    }
    gw.shutdown().await;
}

/// A request the client abandons (an HTTP/2 `RST_STREAM`) while the gateway waits on
/// a hung upstream no longer counts as in flight, so the connection's idle timeout
/// still closes it.
#[tokio::test]
async fn a_reset_stream_does_not_keep_its_connection_open_forever() {
    let hung = TestServer::start(|_req: http::Request<hyper::body::Incoming>| async move {
        std::future::pending::<()>().await;
        http::Response::new(crate::harness::full(""))
    })
    .await;
    let gw = gateway(&format!(
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\n    limits: {{ idle_timeout: 300ms }}\nupstreams:\n  hung:\n    targets: [{{ address: \"{}\" }}]\n    timeouts: {{ request: 1h }}\nroutes:\n  - name: hung\n    match: {{ path_prefix: / }}\n    target: {{ upstream: hung }}\n",
        hung.addr
    ))
    .await;
    let (mut sender, conn) = h2_to(gw.addr("public")).await;
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://localhost:{}/x", gw.addr("public").port()))
        .body(crate::harness::full(""))
        .unwrap();
    let pending = sender.send_request(req);
    // The request reaches the upstream, then the client gives up on it: dropping the
    // response future resets the stream.
    for _ in 0..200 {
        if hung.request_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(hung.request_count(), 1, "the request reached the upstream");
    drop(pending);
    // A liveness bound, not a timing assertion: the server closes the idle connection
    // (idle_timeout 300ms) well within it, or never does.
    let closed = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(closed.is_ok(), "the gateway never closed the connection after the stream was reset");
    gw.shutdown().await;
}

/// A client that asks before sending (`Expect: 100-continue`) a body over the limit
/// gets the 413 straight away, never a `100 Continue`, and sends nothing more.
#[tokio::test]
async fn an_oversized_body_announced_with_expect_continue_is_refused_before_it_is_sent() {
    let gw = echo_gateway("{ max_body_bytes: 1KiB }").await;
    let r = raw(
        gw.addr("public"),
        b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 413, "{}{}", r.head, r.body);
    assert!(!r.head.contains("100 continue"), "no 100 Continue before the refusal: {}", r.head);
    assert_eq!(r.json()["error"]["code"], "body_too_large");
    // Within the limit, the same question gets its 100 Continue and the body is read.
    let mut s = TcpStream::connect(gw.addr("public")).await.unwrap();
    s.write_all(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"), "{:?}", &buf[..n]);
    s.write_all(b"hello").await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200, "{}{}", r.head, r.body);
    gw.shutdown().await;
}
