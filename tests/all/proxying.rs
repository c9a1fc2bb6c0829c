//! Proxying through an upstream pool: headers, bodies both ways, upgrades.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Client, TestBody, TestServer, config, full, gateway, url};

fn one_upstream(addr: std::net::SocketAddr) -> String {
    config(&format!(
        "upstreams:\n  app:\n    targets:\n      - address: {addr}\nroutes:\n  - name: app\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n"
    ))
}

#[tokio::test]
async fn forwards_headers_and_request_id() {
    let up = TestServer::echo().await;
    let gw = gateway(&one_upstream(up.addr)).await;
    let client = Client::http1();
    let req = Request::get(url(gw.addr("public"), "/a/b?c=d"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("x-keep", "yes")
        .header("x-request-id", "req-123")
        .body(full(""))
        .unwrap();
    let reply = client.send(req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-request-id"), Some("req-123"));
    let seen = reply.json();
    assert_eq!(seen["uri"], "/a/b?c=d");
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "client-sent XFF is not trusted by default");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-keep"], "yes");
    assert_eq!(h["x-request-id"], "req-123");
    assert!(h.get("x-drop-me").is_none(), "headers named in Connection are hop-by-hop");

    // Without a client id one is generated, sent upstream and returned.
    let reply = client.get(&url(gw.addr("public"), "/")).await;
    let id = reply.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(reply.json()["headers"]["x-request-id"], id.as_str());
    gw.shutdown().await;
}

#[tokio::test]
async fn forwarded_header_when_configured() {
    let up = TestServer::echo().await;
    let yaml = one_upstream(up.addr).replace(
        "address: 127.0.0.1:0\n",
        "address: 127.0.0.1:0\n    forwarded: { forwarded: true, x_forwarded: false }\n",
    );
    let gw = gateway(&yaml).await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/")).await;
    let h = &reply.json()["headers"];
    let fwd = h["forwarded"].as_str().unwrap();
    assert!(fwd.starts_with("for=127.0.0.1;proto=http;host="), "{fwd}");
    assert!(h.get("x-forwarded-for").is_none());
    gw.shutdown().await;
}

/// Trusted forwarding headers are extended with this hop; untrusted ones (the
/// default) are replaced, all four of them, and a request without any gets only this
/// hop's.
#[tokio::test]
async fn forwarding_headers_are_extended_only_when_trusted() {
    let up = TestServer::echo().await;
    let send = |gw: &sluice::Gateway, spoof: bool| {
        let mut req = Request::get(url(gw.addr("public"), "/"));
        if spoof {
            req = req
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-forwarded-host", "evil.example")
                .header("forwarded", "for=6.6.6.6");
        }
        let req = req.body(full("")).unwrap();
        async move { Client::http1().send(req).await.json()["headers"].clone() }
    };
    let trusted = one_upstream(up.addr).replace(
        "address: 127.0.0.1:0\n",
        "address: 127.0.0.1:0\n    forwarded: { forwarded: true, trust_incoming: true }\n",
    );
    let gw = gateway(&trusted).await;
    let h = send(&gw, true).await;
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    let fwd = h["forwarded"].as_str().unwrap();
    assert!(fwd.starts_with("for=6.6.6.6, for=127.0.0.1;proto=http"), "{fwd}");
    let h = send(&gw, false).await;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(h["forwarded"].as_str().unwrap().starts_with("for=127.0.0.1;"));
    gw.shutdown().await;

    let untrusted = one_upstream(up.addr)
        .replace("address: 127.0.0.1:0\n", "address: 127.0.0.1:0\n    forwarded: { forwarded: true }\n");
    let gw = gateway(&untrusted).await;
    let h = send(&gw, true).await;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_ne!(h["x-forwarded-host"], "evil.example");
    assert!(h["forwarded"].as_str().unwrap().starts_with("for=127.0.0.1;"), "{}", h["forwarded"]);
    gw.shutdown().await;
}

/// An upstream that streams the request body straight back.
async fn mirror() -> TestServer {
    TestServer::start(|req: Request<hyper::body::Incoming>| async move {
        let body: TestBody = req.into_body().map_err(|e| e.into()).boxed();
        Response::new(body)
    })
    .await
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let up = mirror().await;
    let gw = gateway(&one_upstream(up.addr)).await;
    // 8 MiB in 64 KiB chunks, sent as a stream (chunked), mirrored back.
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> =
        (0..128).map(|_| Ok(Frame::data(chunk.clone()))).collect();
    let body: TestBody = StreamBody::new(stream::iter(chunks)).boxed();
    let req = Request::post(url(gw.addr("public"), "/upload")).body(body).unwrap();
    let reply = Client::http1().send(req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 8 * 1024 * 1024);
    assert!(reply.body.iter().all(|&b| b == b'x'));
    gw.shutdown().await;
}

#[tokio::test]
async fn response_streams_before_upstream_finishes() {
    // The upstream sends one chunk, then waits for a signal that only comes after the
    // client has seen the first chunk: a buffering proxy would deadlock here.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let up = TestServer::start(move |_req| {
        let rx = rx.clone();
        async move {
            let s = futures_util::stream::unfold(0u8, move |state| {
                let mut rx = rx.clone();
                async move {
                    match state {
                        0 => Some((Ok(Frame::data(Bytes::from_static(b"first;"))), 1)),
                        1 => {
                            let _ = rx.wait_for(|v| *v).await;
                            Some((Ok(Frame::data(Bytes::from_static(b"second"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            let body: TestBody = StreamBody::new(s).boxed();
            Response::new(body)
        }
    })
    .await;
    let gw = gateway(&one_upstream(up.addr)).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<TestBody>();
    let resp =
        client.request(Request::get(url(gw.addr("public"), "/s")).body(full("")).unwrap()).await.unwrap();
    let mut body = resp.into_body();
    let first =
        tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("first chunk arrives");
    assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "first;");
    tx.send(true).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
    gw.shutdown().await;
}

#[tokio::test]
async fn expect_continue_is_handled() {
    let up = TestServer::echo().await;
    let gw = gateway(&one_upstream(up.addr)).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("public")).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").await.unwrap();
    let mut out = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if n == 0 || text.contains("\"body_bytes\":5") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains("\"expect\""), "expect is not forwarded: {text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    // The upstream switches protocols and then echoes bytes back in upper case.
    let up = TestServer::start(|mut req: Request<hyper::body::Incoming>| async move {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = upgrade.await.unwrap();
            let mut io = hyper_util::rt::TokioIo::new(upgraded);
            let mut buf = [0u8; 64];
            loop {
                let n = io.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                let up: Vec<u8> = buf[..n].to_ascii_uppercase();
                if io.write_all(&up).await.is_err() {
                    break;
                }
            }
        });
        Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(""))
            .unwrap()
    })
    .await;
    let gw = gateway(&one_upstream(up.addr)).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("public")).await.unwrap();
    // Bytes right behind the head (read together with it) belong to the tunnel.
    s.write_all(b"GET /ws HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nearly")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed before the 101");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    let mut early = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut early)).await.unwrap().unwrap();
    assert_eq!(&early, b"EARLY");
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"PING");
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = TestServer::named("pooled").await;
    let gw = gateway(&one_upstream(up.addr)).await;
    let client = Client::http1();
    for _ in 0..20 {
        assert_eq!(client.get(&url(gw.addr("public"), "/")).await.text(), "pooled");
    }
    assert_eq!(up.request_count(), 20);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1, "one pooled upstream connection");
    gw.shutdown().await;
}

#[tokio::test]
async fn plugins_see_the_request_the_upstream_gets() {
    // The edge's work (request id, hop-by-hop headers, forwarding headers) is done
    // before the chain: a transform copying what it sees into new headers reports the
    // gateway's id, the gateway's X-Forwarded-For, and no hop-by-hop header.
    let up = TestServer::echo().await;
    let gw = gateway(&format!(
        "version: 1
listeners:
  - name: public
    address: 127.0.0.1:0
    request_id: {{ trust_incoming: false }}
upstreams:
  app:
    targets: [{{ address: \"{}\" }}]
routes:
  - name: app
    match: {{ path_prefix: / }}
    target: {{ upstream: app }}
    plugins:
      - name: transform
        config:
          request:
            headers:
              set:
                x-seen-id: \"{{{{header.x-request-id|none}}}}\"
                x-seen-xff: \"{{{{header.x-forwarded-for|none}}}}\"
                x-seen-hop: \"{{{{header.x-drop-me|none}}}}\"
",
        up.addr
    ))
    .await;
    let req = Request::get(url(gw.addr("public"), "/x"))
        .header("x-request-id", "from-the-client")
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .body(full(""))
        .unwrap();
    let reply = Client::http1().send(req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let id = reply.header("x-request-id").expect("the gateway's id").to_owned();
    assert_ne!(id, "from-the-client");
    let h = &reply.json()["headers"];
    assert_eq!(h["x-seen-id"], id.as_str(), "the plugin saw the gateway's id");
    assert_eq!(h["x-seen-xff"], "127.0.0.1", "the plugin saw the gateway's X-Forwarded-For");
    assert_eq!(h["x-seen-hop"], "none", "the plugin did not see a hop-by-hop header");
    assert_eq!(h["x-request-id"], id.as_str());
}

#[tokio::test]
async fn the_access_log_has_one_line_per_request_with_its_facts_and_none_when_disabled() {
    let up = TestServer::echo().await;
    let yaml = |enabled: bool| {
        format!(
            "version: 1\nserver:\n  access_log: {{ enabled: {enabled} }}\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nupstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: logged-{enabled}\n    match: {{ path_prefix: /a }}\n    target: {{ upstream: app }}\n",
            up.addr
        )
    };
    let log = crate::harness::AccessLog::get();
    let gw = gateway(&yaml(true)).await;
    let client = Client::http1();
    let ok = client.post(&url(gw.addr("public"), "/a/b?q=1"), "hello").await;
    assert_eq!(ok.status, 200);
    let missing = client.get(&url(gw.addr("public"), "/nowhere")).await;
    assert_eq!(missing.status, 404);
    let ids =
        [ok.header("x-request-id").unwrap().to_owned(), missing.header("x-request-id").unwrap().to_owned()];
    let lines = log.wait_for(2, |l| ids.contains(&l["request_id"])).await;
    assert_eq!(lines.len(), 2, "one line per request: {lines:?}");
    let (a, b) = (&lines[0], &lines[1]);
    assert_eq!(a["method"], "POST");
    assert_eq!(a["path"], "/a/b", "the path without the query");
    assert_eq!(a["status"], "200");
    assert_eq!(a["route"], "logged-true");
    assert_eq!(a["upstream"], up.addr.to_string());
    assert_eq!(a["consumer"], "-");
    assert_eq!(a["error"], "-");
    assert_eq!(a["completed"], "true");
    assert_eq!(a["listener"], "public");
    assert_eq!(a["client"], "127.0.0.1");
    assert_eq!(a["request_id"], ok.header("x-request-id").unwrap());
    assert_eq!(a["bytes_out"], ok.body.len().to_string());
    assert_eq!(b["status"], "404");
    assert_eq!(b["route"], "-");
    assert_eq!(b["error"], "no_route");
    gw.shutdown().await;

    let quiet = gateway(&yaml(false)).await;
    assert_eq!(client.get(&url(quiet.addr("public"), "/a")).await.status, 200);
    // Once it has shut down, any line it would write is written.
    quiet.shutdown().await;
    let quiet_lines = log.wait_for(0, |l| l["route"] == "logged-false").await;
    assert!(quiet_lines.is_empty(), "access_log.enabled: false writes no line: {quiet_lines:?}");
}

/// A response the client leaves mid-stream is logged incomplete; one whose last
/// delivered event was `data: [DONE]` is complete even though the client left before
/// the body's end (the OpenAI SDKs close right after it).
#[tokio::test]
async fn a_stream_left_mid_way_is_incomplete_and_one_left_after_done_is_complete() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestServer::start(|req: http::Request<hyper::body::Incoming>| async move {
        let last =
            if req.uri().path().ends_with("done") { "data: [DONE]\n\n" } else { "data: {\"n\":2}\n\n" };
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"data: {\"n\":1}\n\n"))))
                .await;
            let _ = tx.send(Ok(hyper::body::Frame::data(bytes::Bytes::from(last)))).await;
            // The server keeps the stream open; the client leaves first.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tx);
        });
        let body = http_body_util::StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|f| (f, rx))
        }));
        http::Response::new(http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(body, |e| {
            Box::new(e) as Box<dyn std::error::Error + Send + Sync>
        })))
    })
    .await;
    let log = crate::harness::AccessLog::get();
    let gw = gateway(&config(&format!(
        "upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: sse-left\n    match: {{ path_prefix: /sse }}\n    target: {{ upstream: app }}\n",
        up.addr
    )))
    .await;
    for (path, marker) in [("/sse/mid", "{\"n\":2}"), ("/sse/done", "[DONE]")] {
        let mut conn = tokio::net::TcpStream::connect(gw.addr("public")).await.unwrap();
        conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains(marker) {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        drop(conn);
    }
    let lines = log.wait_for(2, |l| l.get("route").is_some_and(|r| r == "sse-left")).await;
    let completed = |path: &str| lines.iter().find(|l| l["path"] == path).map(|l| l["completed"].clone());
    assert_eq!(completed("/sse/mid").as_deref(), Some("false"), "{lines:#?}");
    assert_eq!(completed("/sse/done").as_deref(), Some("true"), "{lines:#?}");
}
