//! Worker threads (`Gateway::builder().workers(n)`, `sluice run --workers N`): every
//! listener is accepted from on every worker, through a reload too; a rate limit stays
//! exact when its requests land on different workers; a shutdown drains every worker.

use std::net::SocketAddr;
use std::time::Duration;

use sluice::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{TestServer, held_upstream, refuses_connections};

const WORKERS: usize = 2;

async fn start(yaml: &str) -> Gateway {
    Gateway::builder()
        .config_yaml(yaml)
        .unwrap_or_else(|e| panic!("config rejected:\n{e}"))
        .workers(WORKERS)
        .start()
        .await
        .unwrap_or_else(|e| panic!("gateway failed to start: {e}"))
}

/// One request on a connection of its own (so the kernel picks a worker for each):
/// the status and the body.
async fn fresh(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("the response finished")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status =
        text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// `n` requests at once, each on its own connection.
async fn fresh_at_once(addr: SocketAddr, path: &str, n: usize) -> Vec<(u16, String)> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_owned();
            tokio::spawn(async move { fresh(addr, &path).await })
        })
        .collect();
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.unwrap());
    }
    out
}

/// Connections of `listener` accepted by each worker, from the admin listener's metrics.
async fn accepted_by_worker(gw: &Gateway, listener: &str) -> Vec<u64> {
    let (status, page) = fresh(gw.addr("admin"), "/metrics").await;
    assert_eq!(status, 200, "{page}");
    let mut counts = vec![0; WORKERS];
    for line in page.lines().filter(|l| l.starts_with("sluice_worker_connections_accepted_total{")) {
        if !line.contains(&format!("listener=\"{listener}\"")) {
            continue;
        }
        let worker: usize =
            line.split("worker=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().parse().unwrap();
        let n: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        counts[worker] = n as u64;
    }
    counts
}

fn listener(name: &str) -> String {
    format!("  - name: {name}\n    address: 127.0.0.1:0\n")
}

fn static_routes(listeners: &[&str]) -> String {
    let mut out = String::from("routes:\n");
    for l in listeners {
        out += &format!(
            "  - name: {l}_route\n    listeners: [{l}]\n    match: {{ path_prefix: / }}\n    target: {{ static: {{ body: {l} }} }}\n"
        );
    }
    out
}

fn two_listener_config(names: &[&str]) -> String {
    let listeners: String = names.iter().map(|n| listener(n)).collect();
    format!("version: 1\nadmin: {{ address: 127.0.0.1:0 }}\nlisteners:\n{listeners}{}", static_routes(names))
}

#[tokio::test]
async fn every_listener_accepts_on_every_worker_and_a_reload_adds_and_closes_all_copies() {
    let gw = start(&two_listener_config(&["front", "back"])).await;
    for name in ["front", "back"] {
        let addr = gw.addr(name);
        for (status, body) in fresh_at_once(addr, "/", 40).await {
            assert_eq!((status, body.as_str()), (200, name));
        }
        // 40 connections over two sockets: all on one has a chance of 2^-39.
        let counts = accepted_by_worker(&gw, name).await;
        assert_eq!(counts.iter().sum::<u64>(), 40, "{name}: {counts:?}");
        assert!(counts.iter().all(|&n| n > 0), "{name}: every worker accepted some: {counts:?}");
    }

    // A reload that adds a listener binds it on every worker, and one that drops a
    // listener closes every copy of its socket.
    let front = gw.addr("front");
    let next =
        sluice::config::parse_str("next", &two_listener_config(&["back", "side"]), ".".into()).unwrap();
    gw.reload(next).await.unwrap();
    let side = gw.addr("side");
    for (status, body) in fresh_at_once(side, "/", 40).await {
        assert_eq!((status, body.as_str()), (200, "side"));
    }
    let counts = accepted_by_worker(&gw, "side").await;
    assert!(counts.iter().all(|&n| n > 0), "side: every worker accepted some: {counts:?}");
    assert!(refuses_connections(front, Duration::from_secs(5)).await, "no copy of front's socket is left");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_rate_limit_stays_exact_when_its_requests_land_on_different_workers() {
    let up = TestServer::named("app").await;
    let yaml = format!(
        "version: 1
admin: {{ address: 127.0.0.1:0 }}
listeners:
{}upstreams:
  app:
    targets: [{{ address: \"{}\" }}]
routes:
  - name: rl_workers
    match: {{ path_prefix: / }}
    target: {{ upstream: app }}
    plugins:
      - name: rate-limit
        config: {{ limits: [{{ name: per_hour, rate: 10, per: 1h }}] }}
        grants: {{ kv: true }}
        limits: {{ deadline: 10s }}
",
        listener("public"),
        up.addr
    );
    let gw = start(&yaml).await;
    let replies = fresh_at_once(gw.addr("public"), "/x", 60).await;
    let admitted = replies.iter().filter(|(s, _)| *s == 200).count();
    let refused = replies.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!((admitted, refused), (10, 50), "{replies:?}");
    assert_eq!(up.request_count(), 10, "refused requests never reached the upstream");
    let counts = accepted_by_worker(&gw, "public").await;
    assert!(counts.iter().all(|&n| n > 0), "the requests were spread over the workers: {counts:?}");
    gw.shutdown().await;
}

/// A gateway whose upstream holds every request, with `n` requests in flight spread
/// over both workers; `finish` releases them and checks each was answered once.
struct Held {
    gw: Gateway,
    addr: SocketAddr,
    up: crate::harness::TestServer,
    release: tokio::sync::watch::Sender<bool>,
    calls: Vec<tokio::task::JoinHandle<(u16, String)>>,
}

impl Held {
    async fn start(n: usize) -> Held {
        let (up, release) = held_upstream().await;
        let yaml = format!(
            "version: 1\nadmin: {{ address: 127.0.0.1:0 }}\nlisteners:\n{}upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: app\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n",
            listener("public"),
            up.addr
        );
        let gw = start(&yaml).await;
        let addr = gw.addr("public");
        let calls = (0..n).map(|_| tokio::spawn(fresh(addr, "/work"))).collect();
        while up.request_count() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let counts = accepted_by_worker(&gw, "public").await;
        assert!(counts.iter().all(|&c| c > 0), "requests in flight on every worker: {counts:?}");
        Held { gw, addr, up, release, calls }
    }

    async fn finish(self) {
        let n = self.calls.len();
        self.release.send_replace(true);
        for call in self.calls {
            assert_eq!(call.await.unwrap(), (200, "done".to_owned()));
        }
        assert_eq!(self.up.request_count(), n, "nothing was retried or lost");
    }
}

#[tokio::test]
async fn a_shutdown_drains_the_requests_in_flight_on_every_worker() {
    let held = Held::start(40).await;
    let stopping = held.gw.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    assert!(refuses_connections(held.addr, Duration::from_secs(5)).await, "every worker stopped accepting");
    assert!(!shutdown.is_finished(), "the shutdown waits for the requests in flight");
    held.finish().await;
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("shutdown completes").unwrap();
}

#[tokio::test]
async fn a_sigterm_drains_every_worker_and_loses_no_request() {
    // As `sluice run` does: handlers installed before the gateway starts.
    let signals = sluice::gateway::Signals::install().unwrap();
    let held = Held::start(20).await;
    let running = held.gw.clone();
    let serving = tokio::spawn(async move { running.run_until_signal(signals).await });
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    assert!(
        refuses_connections(held.addr, Duration::from_secs(5)).await,
        "SIGTERM stopped every accept loop"
    );
    held.finish().await;
    tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the drain ends").unwrap();
}
