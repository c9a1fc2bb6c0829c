//! Integration tests of the upstream layer against real hyper servers on 127.0.0.1:0.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::*;
use crate::config::UpstreamConfig;
use crate::observability::metrics::Registry;

// ---------- harness ----------

type Handler =
    Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

/// A hyper server (HTTP/1 and h2c, optionally TLS) counting connections and requests.
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// `notify_waiters` closes every open connection.
    kill: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn address(&self) -> String {
        self.addr.to_string()
    }
}

fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// Answers `name` (and the request's version, host, number of hosts and URI in
/// headers).
fn named(name: &'static str) -> Handler {
    handler(move |req: Request<Incoming>| async move {
        let host = req.headers().get("host").cloned();
        let hosts = req.headers().get_all("host").iter().count();
        Response::builder()
            .header("x-server", name)
            .header("x-hosts", hosts)
            .header("x-version", format!("{:?}", req.version()))
            .header("x-uri", req.uri().to_string())
            .header("x-host", host.unwrap_or_else(|| http::HeaderValue::from_static("-")))
            .body(body::full(name))
            .unwrap()
    })
}

async fn serve(h: Handler) -> Server {
    serve_with(h, None).await
}

async fn serve_with(h: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let kill = Arc::new(Notify::new());
    let (acc, reqs, k) = (Arc::clone(&accepted), Arc::clone(&requests), Arc::clone(&kill));
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            acc.fetch_add(1, Ordering::SeqCst);
            let (h, reqs, tls, kill) = (Arc::clone(&h), Arc::clone(&reqs), tls.clone(), Arc::clone(&k));
            let killed = kill.notified_owned();
            tokio::spawn(async move {
                tokio::pin!(killed);
                killed.as_mut().enable();
                let svc = hyper::service::service_fn(move |req| {
                    reqs.fetch_add(1, Ordering::SeqCst);
                    let fut = h(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let serve = async {
                    match tls {
                        Some(tls) => {
                            let Ok(stream) = tls.accept(tcp).await else { return };
                            let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
                        }
                        None => {
                            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc).await;
                        }
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = killed => {}
                }
            });
        }
    });
    Server { addr, accepted, requests, kill, task }
}

/// A port nothing listens on.
async fn dead_address() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

fn upstream(yaml: &str) -> Arc<Upstream> {
    upstream_in(yaml, Path::new("."))
}

fn upstream_in(yaml: &str, dir: &Path) -> Arc<Upstream> {
    let cfg: UpstreamConfig = serde_saphyr::from_str(yaml).unwrap();
    Arc::new(Upstream::build(&"test".parse().unwrap(), &cfg, dir, &Registry::default()).unwrap())
}

fn get(path: &str) -> Request<Body> {
    Request::builder().uri(path).header("host", "client.example").body(body::empty()).unwrap()
}

fn post(path: &str, data: &'static str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", "client.example")
        .header("content-length", data.len())
        .body(body::full(data))
        .unwrap()
}

fn target_of(resp: &Response<Body>) -> String {
    resp.extensions().get::<UpstreamTarget>().unwrap().0.to_string()
}

fn header(resp: &Response<Body>, name: &str) -> String {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

async fn text(resp: Response<Body>) -> String {
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Polls `cond` every 5ms for up to 3s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..600 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

// ---------- pool ----------

#[tokio::test]
async fn reuses_keep_alive_connections_and_keeps_host() {
    let srv = serve(named("a")).await;
    let up = upstream(&format!("targets: [{{ address: '{}' }}]", srv.address()));
    for i in 0..5 {
        let resp = up.forward(get(&format!("http://client.example/p/{i}?q=1"))).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "x-uri"), format!("/p/{i}?q=1"), "origin-form upstream");
        assert_eq!(header(&resp, "x-host"), "client.example");
        assert_eq!(text(resp).await, "a");
        let pool = Arc::clone(&up.shared.targets[0].pool);
        eventually("the connection to go idle", || pool.idle_len() == 1).await;
    }
    assert_eq!(srv.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(up.shared.targets[0].pool.connects(), 1);
    assert_eq!(up.targets_status()[0].in_flight, 0);
}

#[tokio::test]
async fn a_connection_still_reading_its_response_is_not_handed_out_and_is_reused_once_done() {
    // 4 MiB: more than the connection buffers, so it stays busy until it is read.
    const LEN: usize = 4 << 20;
    let srv = serve(handler(|_req: Request<Incoming>| async move {
        Response::new(body::full(Bytes::from(vec![b'x'; LEN])))
    }))
    .await;
    let up = upstream(&format!("targets: [{{ address: '{}' }}]", srv.address()));
    let pool = Arc::clone(&up.shared.targets[0].pool);
    let first = up.forward(get("/one")).await.unwrap();
    // The first response is not read yet: its connection is pooled but busy.
    let second = up.forward(get("/two")).await.unwrap();
    assert_eq!(pool.connects(), 2, "the busy connection was not used for a second request");
    for resp in [first, second] {
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes().len(), LEN);
    }
    // Both connections are back: two requests at once need no third.
    let pool_ready = Arc::clone(&pool);
    eventually("both connections to be pooled", move || pool_ready.idle_len() == 2).await;
    let (a, b) = tokio::join!(up.forward(get("/again/a")), up.forward(get("/again/b")));
    for resp in [a.unwrap(), b.unwrap()] {
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes().len(), LEN);
    }
    assert_eq!(pool.connects(), 2, "finished connections are reused, both of them");
}

#[tokio::test]
async fn host_header_override() {
    let srv = serve(named("a")).await;
    let up =
        upstream(&format!("{{ targets: [{{ address: '{}' }}], host_header: api.internal }}", srv.address()));
    let resp = up.forward(get("/")).await.unwrap();
    assert_eq!(header(&resp, "x-host"), "api.internal");
}

/// The client's one Host goes on untouched; a request without one gets the target's
/// address, and one with two (a plugin may append) goes on with the first, once.
#[tokio::test]
async fn host_header_is_added_when_missing_and_given_once() {
    let srv = serve(named("a")).await;
    let up = upstream(&format!("targets: [{{ address: '{}' }}]", srv.address()));
    let bare = Request::builder().uri("/").body(body::empty()).unwrap();
    let resp = up.forward(bare).await.unwrap();
    assert_eq!(header(&resp, "x-host"), srv.address(), "no Host: the target's address");
    assert_eq!(header(&resp, "x-hosts"), "1");
    let absolute = Request::builder().uri("http://abs.example:81/x").body(body::empty()).unwrap();
    let resp = up.forward(absolute).await.unwrap();
    assert_eq!(header(&resp, "x-host"), "abs.example:81", "no Host: the target's authority");
    let twice = Request::builder()
        .uri("/")
        .header("host", "first.example")
        .header("host", "second.example")
        .body(body::empty())
        .unwrap();
    let resp = up.forward(twice).await.unwrap();
    assert_eq!(header(&resp, "x-host"), "first.example");
    assert_eq!(header(&resp, "x-hosts"), "1", "two Hosts go on as one");
    let resp = up.forward(get("/")).await.unwrap();
    assert_eq!(
        (header(&resp, "x-host").as_str(), header(&resp, "x-hosts").as_str()),
        ("client.example", "1")
    );
}

#[tokio::test]
async fn stale_pooled_connection_is_replaced_even_for_post() {
    // Answers one request per connection, then closes it without saying so.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let acc = Arc::clone(&accepted);
    let _server = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            acc.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                let mut seen = Vec::new();
                while !seen.ends_with(b"hello") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    let up = upstream(&format!("{{ targets: [{{ address: '{addr}' }}], retries: {{ attempts: 0 }} }}"));
    for _ in 0..3 {
        let resp = up.forward(post("/", "hello")).await.unwrap();
        assert_eq!(text(resp).await, "ok");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn websocket_style_upgrade_passes_through() {
    let srv = serve(handler(|req: Request<Incoming>| async move {
        tokio::spawn(async move {
            let up = hyper::upgrade::on(req).await.unwrap();
            let mut io = TokioIo::new(up);
            let mut buf = [0u8; 4];
            io.read_exact(&mut buf).await.unwrap();
            io.write_all(&buf).await.unwrap();
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(body::empty())
            .unwrap()
    }))
    .await;
    let up = upstream(&format!("targets: [{{ address: '{}' }}]", srv.address()));
    let req = Request::builder()
        .uri("/ws")
        .header("host", "x")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(body::empty())
        .unwrap();
    let mut resp = up.forward(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut io = UpstreamUpgrade::take(&mut resp).expect("the switched connection");
    io.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn http2_prior_knowledge_multiplexes_one_connection() {
    let srv = serve(named("h2")).await;
    let up = upstream(&format!("{{ targets: [{{ address: '{}' }}], protocol: http2 }}", srv.address()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let up = Arc::clone(&up);
        tasks.push(tokio::spawn(async move { up.forward(get("/h2?x=1")).await.unwrap() }));
    }
    for t in tasks {
        let resp = t.await.unwrap();
        assert_eq!(header(&resp, "x-version"), "HTTP/2.0");
        assert_eq!(header(&resp, "x-uri"), "http://client.example/h2?x=1");
        assert_eq!(text(resp).await, "h2");
    }
    assert_eq!(srv.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http2_reconnects_after_the_connection_closes() {
    let srv = serve(named("h2")).await;
    let up = upstream(&format!("{{ targets: [{{ address: '{}' }}], protocol: http2 }}", srv.address()));
    text(up.forward(get("/")).await.unwrap()).await;
    srv.kill.notify_waiters();
    let pool = Arc::clone(&up.shared.targets[0].pool);
    eventually("the h2 connection to close", || pool.live_h2().is_none()).await;
    assert_eq!(text(up.forward(get("/")).await.unwrap()).await, "h2");
    assert_eq!(srv.accepted.load(Ordering::SeqCst), 2);
}

// ---------- tls ----------

struct Pki {
    dir: std::path::PathBuf,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn pki(alpn: &[&[u8]]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = std::env::temp_dir().join(format!(
        "sluice-upstream-tls-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Pki { dir, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)) }
}

#[tokio::test]
async fn tls_upstream_http1_verifies_ip_san() {
    let pki = pki(&[b"http/1.1"]);
    let srv = serve_with(named("tls"), Some(pki.acceptor.clone())).await;
    let up = upstream_in(
        &format!("{{ targets: [{{ address: '{}' }}], tls: {{ ca: ca.pem }} }}", srv.address()),
        &pki.dir,
    );
    let resp = up.forward(get("/")).await.unwrap();
    assert_eq!(header(&resp, "x-version"), "HTTP/1.1");
    assert_eq!(text(resp).await, "tls");
}

#[tokio::test]
async fn tls_upstream_http2_via_alpn_with_server_name() {
    let pki = pki(&[b"h2", b"http/1.1"]);
    let srv = serve_with(named("tls2"), Some(pki.acceptor.clone())).await;
    let yaml = format!(
        "{{ targets: [{{ address: '{}' }}], protocol: http2, tls: {{ ca: ca.pem, server_name: localhost }} }}",
        srv.address()
    );
    let up = upstream_in(&yaml, &pki.dir);
    let resp = up.forward(get("/x")).await.unwrap();
    assert_eq!(header(&resp, "x-version"), "HTTP/2.0");
    assert_eq!(header(&resp, "x-uri"), "https://client.example/x");
    assert_eq!(text(resp).await, "tls2");
}

#[tokio::test]
async fn tls_rejects_an_untrusted_certificate() {
    let trusted = pki(&[]);
    let other = pki(&[]);
    let srv = serve_with(named("tls"), Some(other.acceptor.clone())).await;
    let yaml = format!(
        "{{ targets: [{{ address: '{}' }}], tls: {{ ca: ca.pem }}, retries: {{ attempts: 0 }} }}",
        srv.address()
    );
    let up = upstream_in(&yaml, &trusted.dir);
    let err = up.forward(get("/")).await.unwrap_err();
    assert!(matches!(err, ProxyError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn tls_handshake_counts_toward_the_connect_timeout() {
    // Accepts TCP but never speaks TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let pki = pki(&[]);
    let yaml = format!(
        "{{ targets: [{{ address: '{addr}' }}], tls: {{ ca: ca.pem }}, timeouts: {{ connect: 100ms }}, retries: {{ attempts: 0 }} }}"
    );
    let up = upstream_in(&yaml, &pki.dir);
    let err = up.forward(get("/")).await.unwrap_err();
    assert!(matches!(err, ProxyError::ConnectTimeout { .. }), "{err}");
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(err.nothing_sent());
}

#[test]
fn a_bad_ca_file_is_a_problem_at_tls_ca() {
    let cfg: UpstreamConfig =
        serde_saphyr::from_str("{ targets: [{ address: '127.0.0.1:1' }], tls: { ca: does-not-exist.pem } }")
            .unwrap();
    let problems =
        Upstream::build(&"api".parse().unwrap(), &cfg, Path::new("/nonexistent"), &Registry::default())
            .unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "upstreams.api.tls.ca");
    assert!(problems[0].message.contains("cannot read ca file"), "{}", problems[0].message);
}

// ---------- balancing ----------

#[tokio::test]
async fn smooth_round_robin_splits_by_weight() {
    let (a, b) = (serve(named("a")).await, serve(named("b")).await);
    let up = upstream(&format!(
        "targets: [{{ address: '{}', weight: 3 }}, {{ address: '{}', weight: 1 }}]",
        a.address(),
        b.address()
    ));
    let mut seen = Vec::new();
    for _ in 0..40 {
        let resp = up.forward(get("/")).await.unwrap();
        seen.push(text(resp).await);
    }
    assert_eq!(seen.iter().filter(|s| *s == "a").count(), 30);
    assert_eq!(seen[..4], ["a", "a", "b", "a"], "interleaved, not bursty");
}

#[tokio::test]
async fn least_outstanding_prefers_the_idle_target() {
    let release = Arc::new(Notify::new());
    let hold = {
        let release = Arc::clone(&release);
        handler(move |req: Request<Incoming>| {
            let release = Arc::clone(&release);
            async move {
                if req.uri().path() == "/hold" {
                    release.notified().await;
                }
                body_response("held")
            }
        })
    };
    let (a, b) = (serve(hold.clone()).await, serve(hold).await);
    let up = upstream(&format!(
        "{{ balance: least_outstanding, targets: [{{ address: '{}' }}, {{ address: '{}' }}] }}",
        a.address(),
        b.address()
    ));
    let held = tokio::spawn({
        let up = Arc::clone(&up);
        async move { up.forward(get("/hold")).await.unwrap() }
    });
    let u = Arc::clone(&up);
    eventually("one request in flight", || u.targets_status().iter().any(|t| t.in_flight == 1)).await;
    let busy = up.targets_status().iter().position(|t| t.in_flight == 1).unwrap();
    let idle_addr = up.targets_status()[1 - busy].address.to_string();
    for _ in 0..6 {
        let resp = up.forward(get("/")).await.unwrap();
        assert_eq!(target_of(&resp), idle_addr);
        text(resp).await;
    }
    release.notify_one();
    text(held.await.unwrap()).await;
    assert!(up.targets_status().iter().all(|t| t.in_flight == 0));
}

fn body_response(s: &'static str) -> Response<Body> {
    Response::new(body::full(s))
}

// ---------- retries ----------

#[tokio::test]
async fn connect_failure_is_retried_on_another_target_for_get_and_post() {
    let ok = serve(handler(|req: Request<Incoming>| async move {
        let data = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(body::full(Bytes::from(format!("got:{}", String::from_utf8_lossy(&data)))))
    }))
    .await;
    let yaml =
        format!("targets: [{{ address: '{}' }}, {{ address: '{}' }}]", dead_address().await, ok.address());

    let up = upstream(&yaml);
    let resp = up.forward(get("/")).await.unwrap();
    assert_eq!(target_of(&resp), ok.address());

    let up = upstream(&yaml);
    let resp = up.forward(post("/", "payload")).await.unwrap();
    assert_eq!(target_of(&resp), ok.address());
    assert_eq!(text(resp).await, "got:payload");
}

/// Reads a request (up to `until`), then drops the connection without answering.
async fn drop_after_reading(until: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(until.len()).any(|w| w == until) {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn post_is_not_retried_once_sent_but_get_is() {
    let ok = serve(named("ok")).await;
    let (dropper, read) = drop_after_reading(b"\r\n\r\n").await;
    let yaml = format!("targets: [{{ address: '{dropper}' }}, {{ address: '{}' }}]", ok.address());

    let up = upstream(&yaml);
    let err = up.forward(post("/", "hello")).await.unwrap_err();
    assert!(matches!(err, ProxyError::Upstream { nothing_sent: false, .. }), "{err}");
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(read.load(Ordering::SeqCst), 1);
    assert_eq!(ok.requests.load(Ordering::SeqCst), 0, "a sent POST is never retried");

    let up = upstream(&yaml);
    let resp = up.forward(get("/")).await.unwrap();
    assert_eq!(text(resp).await, "ok");
    assert_eq!(read.load(Ordering::SeqCst), 2);
}

/// The head a retry resends comes back from the attempt before it (it is not
/// copied up front): the second target must see the very same request.
#[tokio::test]
async fn a_retried_request_reaches_the_next_target_whole() {
    let echo = || {
        handler(|req: Request<Incoming>| async move {
            let seen = format!(
                "{} {} host={} x-custom={}",
                req.method(),
                req.uri(),
                req.headers().get("host").map_or("-", |v| v.to_str().unwrap()),
                req.headers().get("x-custom").map_or("-", |v| v.to_str().unwrap()),
            );
            body_response(Box::leak(seen.into_boxed_str()))
        })
    };
    // After a status the route retries on, and after a target that took the request
    // and hung up without an answer.
    let busy =
        serve(handler(|_| async { Response::builder().status(503).body(body::full("busy")).unwrap() })).await;
    let (hangs_up, hung_up) = raw_upstream(|_, _| Some((Vec::new(), true)), 64).await;
    let first_saw = [Arc::clone(&busy.requests), hung_up];
    for (first, saw) in [busy.address(), hangs_up].into_iter().zip(first_saw) {
        let ok = serve(echo()).await;
        let up = upstream(&format!(
            "{{ targets: [{{ address: '{first}' }}, {{ address: '{}' }}], \
             retries: {{ attempts: 1, on_status: [503] }} }}",
            ok.address()
        ));
        // Until the first target has had the request: the balancer may start anywhere.
        for _ in 0..4 {
            let mut req = get("/p?q=1");
            req.headers_mut().insert("x-custom", http::HeaderValue::from_static("kept"));
            let resp = up.forward(req).await.unwrap();
            assert_eq!(
                text(resp).await,
                "GET /p?q=1 host=client.example x-custom=kept",
                "first target {first}"
            );
        }
        assert!(saw.load(Ordering::SeqCst) >= 1, "the first target {first} was tried");
        assert_eq!(ok.requests.load(Ordering::SeqCst), 4, "every request answered by the second");
    }
}

#[tokio::test]
async fn retries_on_configured_status_for_idempotent_requests() {
    let bad =
        serve(handler(|_| async { Response::builder().status(503).body(body::full("busy")).unwrap() })).await;
    let ok = serve(named("ok")).await;
    let yaml = format!(
        "{{ targets: [{{ address: '{}' }}, {{ address: '{}' }}], retries: {{ on_status: [503] }} }}",
        bad.address(),
        ok.address()
    );
    let up = upstream(&yaml);
    assert_eq!(text(up.forward(get("/")).await.unwrap()).await, "ok");
    // A POST with a body is not replayable: the 503 comes back as is.
    let up = upstream(&yaml);
    let resp = up.forward(post("/", "x")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn retry_budget_stops_retries_when_spent() {
    let ok = serve(named("ok")).await;
    let yaml = format!(
        "{{ targets: [{{ address: '{}' }}, {{ address: '{}' }}], retries: {{ attempts: 1, budget_percent: 0, min_per_second: 1 }},
           health: {{ passive: {{ failures: 0 }} }}, circuit_breaker: {{ enabled: false }} }}",
        dead_address().await,
        ok.address()
    );
    let up = upstream(&yaml);
    let mut results = Vec::new();
    for _ in 0..20 {
        // Round robin sends every first attempt to the dead target; the retry (the next
        // pick) goes to the live one while the budget lasts.
        results.push(up.forward(get("/")).await.is_ok());
    }
    // The reserve (1/s over the window) covers ten retries; after that, every request
    // whose first pick is the dead target fails — half of them, as round robin now
    // alternates without retry picks in between.
    let reserve = budget::WINDOW_SECS as usize;
    assert!(results[..reserve].iter().all(|ok| *ok), "{results:?}");
    assert_eq!(results[reserve..].iter().filter(|ok| !**ok).count(), 5, "{results:?}");
}

// ---------- timeouts ----------

#[tokio::test]
async fn slow_upstream_is_a_request_timeout() {
    let slow = serve(handler(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        body_response("late")
    }))
    .await;
    let up = upstream(&format!(
        "{{ targets: [{{ address: '{}' }}], timeouts: {{ request: 100ms }}, retries: {{ attempts: 0 }} }}",
        slow.address()
    ));
    // The upstream answers after 5 s: only the 100 ms timeout makes this an error.
    let err = up.forward(get("/")).await.unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamTimeout { .. }), "{err}");
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn the_request_timeout_holds_for_every_request_on_a_reused_connection() {
    // A connection's timer is kept from one request to the next: each request must
    // still get its own full timeout, and a slow answer on a reused connection fail.
    let srv = serve(handler(|req: Request<Incoming>| async move {
        let wait = req.uri().path().trim_start_matches('/').parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        body_response("done")
    }))
    .await;
    let up = upstream(&format!(
        "{{ targets: [{{ address: '{}' }}], timeouts: {{ request: 300ms }}, retries: {{ attempts: 0 }} }}",
        srv.address()
    ));
    let pool = Arc::clone(&up.shared.targets[0].pool);
    for wait in [0, 200, 0, 200] {
        // Each answer takes most of the timeout: a deadline left from an earlier
        // request would cut it.
        let resp = up.forward(get(&format!("/{wait}"))).await.unwrap();
        assert_eq!(text(resp).await, "done");
        eventually("the connection to go idle", || pool.idle_len() == 1).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let err = up.forward(get("/2000")).await.unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamTimeout { .. }), "{err}");
    assert_eq!(srv.accepted.load(Ordering::SeqCst), 1, "all on one connection");
}

// ---------- health and breaker ----------

#[tokio::test]
async fn passive_ejection_then_readmission() {
    let failing =
        serve(handler(|_| async { Response::builder().status(500).body(body::empty()).unwrap() })).await;
    let ok = serve(named("ok")).await;
    let up = upstream(&format!(
        "{{ targets: [{{ address: '{}' }}, {{ address: '{}' }}], retries: {{ attempts: 0 }},
           health: {{ passive: {{ failures: 2, eject_for: 200ms }} }}, circuit_breaker: {{ enabled: false }} }}",
        failing.address(),
        ok.address()
    ));
    for _ in 0..4 {
        text(up.forward(get("/")).await.unwrap()).await;
    }
    assert_eq!(failing.requests.load(Ordering::SeqCst), 2);
    assert!(up.targets_status()[0].ejected);
    for _ in 0..4 {
        assert_eq!(text(up.forward(get("/")).await.unwrap()).await, "ok");
    }
    assert_eq!(failing.requests.load(Ordering::SeqCst), 2, "ejected targets get nothing");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!up.targets_status()[0].ejected);
    for _ in 0..2 {
        text(up.forward(get("/")).await.unwrap()).await;
    }
    assert_eq!(failing.requests.load(Ordering::SeqCst), 3, "readmitted");
}

#[tokio::test]
async fn breaker_opens_half_opens_and_closes() {
    let fail = Arc::new(AtomicBool::new(true));
    let release = Arc::new(Notify::new());
    let srv = serve({
        let (fail, release) = (Arc::clone(&fail), Arc::clone(&release));
        handler(move |req: Request<Incoming>| {
            let (fail, release) = (Arc::clone(&fail), Arc::clone(&release));
            async move {
                if req.uri().path() == "/hold" {
                    release.notified().await;
                }
                let status = if fail.load(Ordering::SeqCst) { 502 } else { 200 };
                Response::builder().status(status).body(body::empty()).unwrap()
            }
        })
    })
    .await;
    let up = upstream(&format!(
        "{{ targets: [{{ address: '{}' }}], retries: {{ attempts: 0 }}, health: {{ passive: {{ failures: 0 }} }},
           circuit_breaker: {{ failures: 2, open_for: 200ms }} }}",
        srv.address()
    ));
    let circuit = |up: &Upstream| up.targets_status()[0].circuit;
    for _ in 0..2 {
        assert_eq!(up.forward(get("/")).await.unwrap().status(), StatusCode::BAD_GATEWAY);
    }
    assert_eq!(circuit(&up), CircuitState::Open);
    let err = up.forward(get("/")).await.unwrap_err();
    assert!(matches!(err, ProxyError::NoAvailableTarget { .. }), "{err}");
    assert_eq!(srv.requests.load(Ordering::SeqCst), 2);

    // The probe fails: open again.
    tokio::time::sleep(Duration::from_millis(220)).await;
    assert_eq!(up.forward(get("/")).await.unwrap().status(), StatusCode::BAD_GATEWAY);
    assert_eq!(circuit(&up), CircuitState::Open);
    assert!(up.forward(get("/")).await.is_err());

    // The next probe succeeds; while it is out, nothing else gets through.
    tokio::time::sleep(Duration::from_millis(220)).await;
    fail.store(false, Ordering::SeqCst);
    let probe = tokio::spawn({
        let up = Arc::clone(&up);
        async move { up.forward(get("/hold")).await.unwrap() }
    });
    let u = Arc::clone(&up);
    eventually("the probe to be in flight", || u.targets_status()[0].in_flight == 1).await;
    assert_eq!(circuit(&up), CircuitState::HalfOpen);
    assert!(matches!(up.forward(get("/")).await, Err(ProxyError::NoAvailableTarget { .. })));
    release.notify_one();
    assert_eq!(probe.await.unwrap().status(), StatusCode::OK);
    assert_eq!(circuit(&up), CircuitState::Closed);
    assert_eq!(up.forward(get("/")).await.unwrap().status(), StatusCode::OK);
}

fn health_server(healthy: Arc<AtomicBool>, probes: Arc<AtomicUsize>) -> Handler {
    handler(move |req: Request<Incoming>| {
        let (healthy, probes) = (Arc::clone(&healthy), Arc::clone(&probes));
        async move {
            if req.uri().path() == "/healthz" {
                probes.fetch_add(1, Ordering::SeqCst);
                let status = if healthy.load(Ordering::SeqCst) { 200 } else { 503 };
                return Response::builder().status(status).body(body::full("h")).unwrap();
            }
            body_response("app")
        }
    })
}

#[tokio::test]
async fn active_health_checks_mark_a_target_down_and_up() {
    let (healthy, probes) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicUsize::new(0)));
    let srv = serve(health_server(Arc::clone(&healthy), Arc::clone(&probes))).await;
    let up = upstream(&format!(
        "{{ targets: [{{ address: '{}' }}], health: {{ active: {{ path: /healthz, interval: 20ms, timeout: 500ms,
           healthy_threshold: 2, unhealthy_threshold: 2 }} }} }}",
        srv.address()
    ));
    up.start_health_checks();
    up.start_health_checks(); // idempotent
    let u = Arc::clone(&up);
    eventually("a few probes", || probes.load(Ordering::SeqCst) >= 2).await;
    assert!(up.targets_status()[0].healthy);

    healthy.store(false, Ordering::SeqCst);
    eventually("the target to be marked down", || !u.targets_status()[0].healthy).await;
    assert!(matches!(up.forward(get("/")).await, Err(ProxyError::NoAvailableTarget { .. })));

    healthy.store(true, Ordering::SeqCst);
    eventually("the target to be marked up", || u.targets_status()[0].healthy).await;
    assert_eq!(text(up.forward(get("/")).await.unwrap()).await, "app");
}

#[tokio::test]
async fn health_task_stops_when_the_upstream_is_dropped() {
    let probes = Arc::new(AtomicUsize::new(0));
    let srv = serve(health_server(Arc::new(AtomicBool::new(true)), Arc::clone(&probes))).await;
    let up = upstream(&format!(
        "{{ targets: [{{ address: '{}' }}], health: {{ active: {{ path: /healthz, interval: 10ms }} }} }}",
        srv.address()
    ));
    up.start_health_checks();
    eventually("probes", || probes.load(Ordering::SeqCst) >= 3).await;
    let weak = Arc::downgrade(&up.shared);
    drop(up);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after_drop = probes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(probes.load(Ordering::SeqCst), after_drop, "no probes after drop");
    assert!(weak.upgrade().is_none(), "nothing keeps the upstream's state alive");
}

#[tokio::test]
async fn no_targets_available_is_503() {
    let up = upstream("targets: [{ address: '127.0.0.1:1', weight: 0 }]");
    let err = up.forward(get("/")).await.unwrap_err();
    assert!(matches!(err, ProxyError::NoAvailableTarget { .. }));
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn version_is_normalised_per_protocol() {
    let cfg: UpstreamConfig = serde_saphyr::from_str("targets: [{ address: '10.0.0.1:80' }]").unwrap();
    let up = Upstream::build(&"v".parse().unwrap(), &cfg, Path::new("."), &Registry::default()).unwrap();
    let req = Request::builder().version(Version::HTTP_2).uri("https://h.example/a?b").body(()).unwrap();
    let (mut head, ()) = req.into_parts();
    up.shared.targets[0].pool.prepare(&mut head);
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(head.uri, "/a?b");
    assert_eq!(head.headers["host"], "h.example", "an h2 client's authority becomes Host");
}

// ---------- the HTTP/1 client on the wire (raw sockets) ----------

/// A raw TCP upstream: each connection reads request heads and answers each with
/// `answer(request number on this connection, head)` written in `pieces`-byte writes;
/// `None` closes the connection, and so does an answer whose flag is set, once
/// written. Counts connections.
async fn raw_upstream(
    answer: impl Fn(usize, &str) -> Option<(Vec<u8>, bool)> + Send + Sync + 'static,
    pieces: usize,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (count, answer) = (Arc::clone(&accepted), Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for n in 0.. {
                    let head_end = loop {
                        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut buf = [0u8; 4096];
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => seen.extend_from_slice(&buf[..k]),
                        }
                    };
                    let head = String::from_utf8_lossy(&seen[..head_end]).into_owned();
                    seen.drain(..head_end);
                    let Some((reply, close)) = answer(n, &head) else { return };
                    for piece in reply.chunks(pieces) {
                        if tcp.write_all(piece).await.is_err() {
                            return;
                        }
                        tcp.flush().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn chunked_responses_with_trailers_and_interim_heads_arrive_whole_and_the_connection_is_reused() {
    let (addr, accepted) = raw_upstream(
        |n, _| {
            let reply = format!(
                "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
                 HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-n: {n}\r\n\r\n\
                 5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n"
            );
            Some((reply.into_bytes(), false))
        },
        3,
    )
    .await;
    let up = upstream(&format!("targets: [{{ address: '{addr}' }}]"));
    for n in 0..3 {
        let resp = up.forward(get("/chunked")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "x-n"), n.to_string(), "request {n} on the one connection");
        let collected = resp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "12");
        assert_eq!(collected.to_bytes(), "hello, world");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_response_without_length_ends_with_its_connection() {
    let (addr, accepted) =
        raw_upstream(|n, _| Some((format!("HTTP/1.0 200 OK\r\n\r\nuntil close {n}").into_bytes(), true)), 4)
            .await;
    let up = upstream(&format!("targets: [{{ address: '{addr}' }}]"));
    for _ in 0..2 {
        let resp = up.forward(get("/")).await.unwrap();
        assert_eq!(resp.version(), Version::HTTP_10);
        let body = tokio::time::timeout(Duration::from_secs(5), text(resp)).await;
        assert_eq!(body.expect("the body ends at the connection's end"), "until close 0");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a connection read to its end is not reused");
}

#[tokio::test]
async fn a_response_cut_short_is_an_error_and_the_connection_is_not_reused() {
    let (addr, accepted) = raw_upstream(
        |n, _| match n {
            0 => Some((b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec(), false)),
            _ => None,
        },
        64,
    )
    .await;
    // The first connection answers once, cut short, then hangs up on a second request.
    let up = upstream(&format!("{{ targets: [{{ address: '{addr}' }}], retries: {{ attempts: 0 }} }}"));
    let resp = up.forward(get("/")).await.unwrap();
    let mut body = resp.into_body();
    assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "short");
    // The server's task waits on the next request; nothing more comes for this one.
    let more = tokio::time::timeout(Duration::from_millis(300), body.frame()).await;
    assert!(more.is_err(), "no more body arrived");
    drop(body);
    let resp = up.forward(get("/")).await.unwrap();
    drop(resp);
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a body dropped mid-way closes its connection");
}

#[tokio::test]
async fn request_bodies_are_framed_by_length_or_chunked() {
    let heads = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&heads);
    let srv = serve(handler(move |req: Request<Incoming>| {
        let seen = Arc::clone(&seen);
        async move {
            let framing = ["content-length", "transfer-encoding"]
                .iter()
                .map(|h| format!("{h}={}", req.headers().get(*h).map_or("-", |v| v.to_str().unwrap())))
                .collect::<Vec<_>>()
                .join(" ");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            seen.lock().unwrap().push(format!("{framing} body={}", String::from_utf8_lossy(&body)));
            Response::new(body::empty())
        }
    }))
    .await;
    let up =
        upstream(&format!("{{ targets: [{{ address: '{}' }}], retries: {{ attempts: 0 }} }}", srv.address()));
    up.forward(post("/", "known")).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, body::BoxError>>(2);
    let streamed = Request::builder()
        .method(Method::POST)
        .uri("/")
        .header("host", "x")
        .body(body::boxed(http_body_util::StreamBody::new(tokio_stream_of(rx))))
        .unwrap();
    let sending = tokio::spawn({
        let up = Arc::clone(&up);
        async move { up.forward(streamed).await.map(|r| r.status()) }
    });
    for piece in ["one ", "two ", "three"] {
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(piece.as_bytes())))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tx);
    assert_eq!(sending.await.unwrap().unwrap(), StatusCode::OK);
    let mut empty_post = post("/", "");
    *empty_post.body_mut() = body::empty();
    up.forward(empty_post).await.unwrap();
    assert_eq!(
        *heads.lock().unwrap(),
        [
            "content-length=5 transfer-encoding=- body=known",
            "content-length=- transfer-encoding=chunked body=one two three",
            "content-length=0 transfer-encoding=- body=",
        ]
    );
}

/// A stream of what `rx` receives.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_target_that_hangs_up_on_an_idle_connection_is_found_out_before_the_next_request() {
    // Answers one request per connection, then closes it while it idles in the pool.
    let (addr, accepted) =
        raw_upstream(|_, _| Some((b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), true)), 64)
            .await;
    let up = upstream(&format!("{{ targets: [{{ address: '{addr}' }}], retries: {{ attempts: 0 }} }}"));
    for _ in 0..3 {
        // A POST is not retried once sent: it only succeeds if the closed connection
        // is never written to.
        let resp = up.forward(post("/", "x")).await.unwrap();
        assert_eq!(text(resp).await, "ok");
        let pool = Arc::clone(&up.shared.targets[0].pool);
        eventually("the connection to go idle", || pool.idle_len() == 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn malformed_response_heads_are_upstream_errors() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\nx"[..],
        b"NOT HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
    ] {
        let (addr, _) = raw_upstream(move |_, _| Some((reply.to_vec(), false)), 64).await;
        let up = upstream(&format!("{{ targets: [{{ address: '{addr}' }}], retries: {{ attempts: 0 }} }}"));
        let err = up.forward(get("/")).await.unwrap_err();
        assert!(matches!(err, ProxyError::Upstream { .. }), "{}: {err}", String::from_utf8_lossy(reply));
    }
    let huge = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(h1::MAX_HEAD));
    let (addr, _) = raw_upstream(move |_, _| Some((huge.clone().into_bytes(), false)), 4096).await;
    let up = upstream(&format!("{{ targets: [{{ address: '{addr}' }}], retries: {{ attempts: 0 }} }}"));
    let err = up.forward(get("/")).await.unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}

/// A streamed request body the test feeds piece by piece; it ends when `tx` drops.
fn streamed_post()
-> (Request<Body>, tokio::sync::mpsc::Sender<Result<http_body::Frame<Bytes>, body::BoxError>>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/upload")
        .header("host", "x")
        .body(body::boxed(http_body_util::StreamBody::new(tokio_stream_of(rx))))
        .unwrap();
    (req, tx)
}

#[tokio::test]
async fn a_target_that_refuses_an_upload_early_is_heard_before_the_body_ends() {
    // The target answers 413 as soon as it has the head, then neither reads nor
    // closes. The body never ends: only reading while sending hears the answer (else
    // the request times out, 2 s).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut buf = [0u8; 1024];
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!")
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let up = upstream(&format!(
        "{{ targets: [{{ address: '{addr}' }}], timeouts: {{ request: 2s }}, retries: {{ attempts: 0 }} }}"
    ));
    let (req, tx) = streamed_post();
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"first piece")))).await.unwrap();
    let resp = up.forward(req).await.expect("the target's own answer");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(text(resp).await, "too big!");
    drop(tx);
    // The target never got the whole message: the connection is not reused.
    let (req, tx) = streamed_post();
    drop(tx);
    let _ = up.forward(req).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_target_that_answers_while_it_reads_gets_the_whole_body() {
    // The target sends a 200 head at once, then reads the (chunked) body to its end
    // and sends it back: the body must go on after the early success head.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else { return };
        let mut seen = Vec::new();
        let mut answered = false;
        loop {
            let mut buf = [0u8; 1024];
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            let Some(head_end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            if !answered {
                answered = true;
                tcp.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
            }
            let body = &seen[head_end + 4..];
            if body.ends_with(b"0\r\n\r\n") {
                let echo = format!("{:x}\r\n{}\r\n0\r\n\r\n", body.len(), String::from_utf8_lossy(body));
                tcp.write_all(echo.as_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_secs(5)).await;
                return;
            }
        }
    });
    let up = upstream(&format!("{{ targets: [{{ address: '{addr}' }}], retries: {{ attempts: 0 }} }}"));
    let (req, tx) = streamed_post();
    let sending = tokio::spawn({
        let up = Arc::clone(&up);
        async move { text(up.forward(req).await.unwrap()).await }
    });
    for piece in ["one ", "two ", "three"] {
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(piece.as_bytes())))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(tx);
    let echoed = tokio::time::timeout(Duration::from_secs(10), sending).await.expect("an answer").unwrap();
    assert_eq!(echoed, "4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n");
}
