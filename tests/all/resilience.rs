//! Load balancing, passive health, retries and timeouts, end to end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Response, StatusCode};
use http_body_util::BodyExt;

use crate::harness::{Client, TestServer, config, dead_addr, full, gateway, get_streamed, url};

fn pool(targets: &str, extra: &str) -> String {
    config(&format!(
        "upstreams:\n  app:\n    targets:\n{targets}{extra}routes:\n  - name: app\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n"
    ))
}

#[tokio::test]
async fn weighted_round_robin_splits_traffic() {
    let a = TestServer::named("a").await;
    let b = TestServer::named("b").await;
    let c = TestServer::named("c").await;
    let targets = format!(
        "      - {{ address: \"{}\", weight: 2 }}\n      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n",
        a.addr, b.addr, c.addr
    );
    let gw = gateway(&pool(&targets, "")).await;
    let client = Client::http1();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        *seen.entry(client.get(&url(gw.addr("public"), "/")).await.text()).or_default() += 1;
    }
    assert_eq!((seen["a"], seen["b"], seen["c"]), (20, 10, 10), "{seen:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn least_outstanding_avoids_the_busy_target() {
    // The "slow" target holds every request until released.
    let release = Arc::new(tokio::sync::Notify::new());
    let slow = TestServer::start({
        let release = Arc::clone(&release);
        move |_req| {
            let release = Arc::clone(&release);
            async move {
                release.notified().await;
                Response::new(full("slow"))
            }
        }
    })
    .await;
    let fast = TestServer::named("fast").await;
    let targets =
        format!("      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n", slow.addr, fast.addr);
    let gw = gateway(&pool(&targets, "    balance: least_outstanding\n")).await;
    let addr = gw.addr("public");
    // Occupy the slow target: send requests one by one until one is held there (with
    // both idle, the balancer may pick either).
    let mut held = None;
    for _ in 0..10 {
        let task = tokio::spawn(async move { Client::http1().get(&url(addr, "/")).await.text() });
        while slow.request_count() == 0 && !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if slow.request_count() == 1 {
            held = Some(task);
            break;
        }
        assert_eq!(task.await.unwrap(), "fast");
    }
    let held = held.expect("a request reached the slow target");
    // With one request outstanding there, every new one goes to the idle target.
    let client = Client::http1();
    for _ in 0..5 {
        assert_eq!(client.get(&url(addr, "/")).await.text(), "fast");
    }
    assert_eq!(slow.request_count(), 1, "nothing else was sent to the busy target");
    // A stored permit if the handler is not waiting yet.
    release.notify_one();
    assert_eq!(held.await.unwrap(), "slow");
    gw.shutdown().await;
}

#[tokio::test]
async fn dead_target_is_retried_ejected_and_readmitted() {
    let alive = TestServer::named("alive").await;
    // A target that fails (503) until told to recover.
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&healthy);
    let flaky = TestServer::start(move |_req| {
        let ok = flag.load(Ordering::SeqCst);
        async move {
            let mut r = Response::new(full(if ok { "flaky" } else { "down" }));
            if !ok {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            r
        }
    })
    .await;
    let targets =
        format!("      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n", flaky.addr, alive.addr);
    let extra = "    retries: { attempts: 1, on_status: [503] }\n    health:\n      passive: { failures: 2, eject_for: 300ms }\n    circuit_breaker: { enabled: false }\n";
    let gw = gateway(&pool(&targets, extra)).await;
    let client = Client::http1();
    for _ in 0..6 {
        let reply = client.get(&url(gw.addr("public"), "/")).await;
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "alive"));
    }
    // After two failures the flaky target is ejected: it gets no more traffic.
    let hits = flaky.request_count();
    assert!(hits <= 3, "flaky got {hits} requests");
    for _ in 0..6 {
        assert_eq!(client.get(&url(gw.addr("public"), "/")).await.text(), "alive");
    }
    assert_eq!(flaky.request_count(), hits, "an ejected target got traffic");
    // It recovers; after eject_for it is readmitted and serves again.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut texts = Vec::new();
    for _ in 0..6 {
        texts.push(client.get(&url(gw.addr("public"), "/")).await.text());
    }
    assert!(texts.iter().any(|t| t == "flaky"), "readmitted target got no traffic: {texts:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn connect_failures_are_retried_even_for_post() {
    let dead = dead_addr().await;
    let alive = TestServer::named("alive").await;
    let targets = format!("      - {{ address: \"{dead}\" }}\n      - {{ address: \"{}\" }}\n", alive.addr);
    let gw = gateway(&pool(&targets, "    retries: { attempts: 1 }\n")).await;
    let client = Client::http1();
    for _ in 0..4 {
        let reply = client.post(&url(gw.addr("public"), "/"), "payload").await;
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "alive"));
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn post_is_not_retried_after_it_was_sent() {
    // Reads the request, then drops the connection without answering.
    let rude = TestServer::start(|req: http::Request<hyper::body::Incoming>| async move {
        let _ = req.into_body().collect().await;
        panic!("drop the connection");
    })
    .await;
    let rude2 = TestServer::start(|req: http::Request<hyper::body::Incoming>| async move {
        let _ = req.into_body().collect().await;
        panic!("drop the connection");
    })
    .await;
    let targets =
        format!("      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n", rude.addr, rude2.addr);
    let gw =
        gateway(&pool(&targets, "    retries: { attempts: 1 }\n    circuit_breaker: { enabled: false }\n"))
            .await;
    let reply = Client::http1().post(&url(gw.addr("public"), "/"), "charge my card").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"]["code"], "upstream_failed");
    assert_eq!(rude.request_count() + rude2.request_count(), 1, "a POST that was sent must not be retried");
    // A GET is idempotent: it is retried on the other target.
    let reply = Client::http1().get(&url(gw.addr("public"), "/")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(rude.request_count() + rude2.request_count(), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_times_out_with_504() {
    let slow = TestServer::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(full("too late"))
    })
    .await;
    let targets = format!("      - {{ address: \"{}\" }}\n", slow.addr);
    let gw =
        gateway(&pool(&targets, "    timeouts: { request: 200ms }\n    retries: { attempts: 0 }\n")).await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/")).await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.json()["error"]["code"], "upstream_timeout");
    assert!(!reply.text().contains("127.0.0.1"), "errors do not leak upstream addresses");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_pool_whose_only_target_is_down_answers_502_connect_failed() {
    let targets = format!("      - {{ address: \"{}\" }}\n", dead_addr().await);
    let gw = gateway(&pool(&targets, "")).await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "upstream_connect_failed");
    assert!(reply.header("x-request-id").is_some());
    gw.shutdown().await;
}

/// Answers the first request for each path with `429` and `Retry-After: <last path
/// segment>`, and later ones with `200` and the body it received.
async fn once_too_many() -> (TestServer, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    let seen: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let log = Arc::clone(&seen);
    let server = TestServer::start(move |req: http::Request<hyper::body::Incoming>| {
        let log = Arc::clone(&log);
        async move {
            let path = req.uri().path().to_owned();
            let body =
                String::from_utf8(req.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
            let first = {
                let mut log = log.lock().unwrap();
                let first = !log.iter().any(|(p, _)| *p == path);
                log.push((path.clone(), body.clone()));
                first
            };
            if first {
                let secs = path.rsplit('/').next().unwrap().to_owned();
                let mut r = Response::new(full("slow down"));
                *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                r.headers_mut().insert("retry-after", secs.parse().unwrap());
                return r;
            }
            Response::new(full(format!("ok: {body}")))
        }
    })
    .await;
    (server, seen)
}

#[tokio::test]
async fn non_idempotent_retries_resend_the_body_and_honour_retry_after() {
    let (up, seen) = once_too_many().await;
    let target = format!("      - {{ address: \"{}\" }}\n", up.addr);
    let replay =
        "    retries: { attempts: 2, on_status: [429], non_idempotent: true, max_retry_after: 5s }\n";
    let gw = gateway(&pool(&target, replay)).await;
    let client = Client::http1();
    let sent = |path: &str| {
        seen.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, b)| b.clone()).collect::<Vec<_>>()
    };

    // Retry-After: 0 and 1 are within max_retry_after: the POST is resent, body and all.
    for path in ["/a/0", "/b/1"] {
        let reply = client.post(&url(gw.addr("public"), path), "the prompt").await;
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "ok: the prompt"), "{path}");
        assert_eq!(sent(path), ["the prompt", "the prompt"], "{path}: sent twice with its body");
    }
    // A longer Retry-After than max_retry_after: the 429 goes to the client.
    let reply = client.post(&url(gw.addr("public"), "/c/60"), "x").await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("60"));
    assert_eq!(sent("/c/60").len(), 1);
    gw.shutdown().await;

    // Without non_idempotent a POST that was sent is never resent.
    let plain = "    retries: { attempts: 2, on_status: [429] }\n";
    let gw = gateway(&pool(&target, plain)).await;
    let reply = Client::http1().post(&url(gw.addr("public"), "/d/0"), "once").await;
    assert_eq!(reply.status, 429);
    assert_eq!(sent("/d/0"), ["once"]);
    gw.shutdown().await;
}

/// A raw upstream that misbehaves by path: `/reset` reads the request and resets the
/// connection, `/garbage` answers bytes that are not HTTP, `/midbody` promises 100
/// bytes and closes after 10. It counts the requests per path.
async fn misbehaving_upstream() -> (std::net::SocketAddr, Arc<std::sync::Mutex<HashMap<String, usize>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let counts = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let path = text.split(' ').nth(1).unwrap_or("").to_owned();
                *counts.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                match path.as_str() {
                    "/reset" => {
                        let _ = s.set_zero_linger();
                    }
                    "/garbage" => {
                        let _ = s.write_all(b"SURPRISE, NOT HTTP\r\n\r\n").await;
                    }
                    _ => {
                        let _ =
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await;
                    }
                }
                drop(s);
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn upstreams_that_reset_send_garbage_or_close_mid_body_get_the_documented_answer() {
    let (addr, seen) = misbehaving_upstream().await;
    let gw = gateway(&pool(
        &format!("      - {{ address: \"{addr}\" }}\n"),
        "    retries: { attempts: 1, budget_percent: 100 }\n    circuit_breaker: { enabled: false }\n    health: { passive: { failures: 0 } }\n",
    ))
    .await;
    let at = |path: &str| url(gw.addr("public"), path);
    let client = Client::http1();
    let count = |path: &str| seen.lock().unwrap().get(path).copied().unwrap_or(0);

    // A reset: 502, and the GET (idempotent, no body) was tried twice.
    let reply = client.get(&at("/reset")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "upstream_failed");
    assert_eq!(count("/reset"), 2, "a GET is retried once");
    // A POST that was sent is not retried.
    let reply = client.post(&at("/reset"), "pay once").await;
    assert_eq!(reply.status, 502);
    assert_eq!(count("/reset"), 3, "a sent POST is never resent");

    // Garbage instead of a response: 502.
    let reply = client.get(&at("/garbage")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "upstream_failed");

    // A body cut short: the client gets the head, then an error, never a complete body.
    let (status, body) = get_streamed(&at("/midbody"), Duration::from_secs(10)).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a truncated upstream body must not reach the client as complete");
    gw.shutdown().await;
}

/// An upstream that streams the start of an event stream and then sends nothing
/// (a provider stalled mid-stream) is cut after `timeouts.read`: the client sees an
/// incomplete body, and the upstream sees its connection closed.
#[tokio::test]
async fn an_upstream_that_stalls_mid_body_is_cut_after_the_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(b"b\r\ndata: one\n\n\r\n").await.unwrap();
        // Nothing more, until the gateway lets go of the connection.
        while !matches!(s.read(&mut buf).await, Ok(0) | Err(_)) {}
        let _ = closed_tx.send(());
    });
    let gw =
        gateway(&pool(&format!("      - {{ address: \"{addr}\" }}\n"), "    timeouts: { read: 300ms }\n"))
            .await;
    // Bounded well past the read timeout: without it the body would never end.
    let (status, body) = get_streamed(&url(gw.addr("public"), "/stream"), Duration::from_secs(20)).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a stalled stream must not reach the client as complete: {body:?}");
    tokio::time::timeout(Duration::from_secs(20), closed)
        .await
        .expect("the gateway closed the stalled upstream connection")
        .unwrap();
    gw.shutdown().await;
}
