//! Test harness: upstream servers, gateways from config strings, clients.
//!
//! ```ignore
//! let up = TestServer::named("a").await;
//! let gw = gateway(&format!("... address: {} ...", up.addr)).await;
//! let resp = Client::http1().get(&gw.url("public", "/x")).await;
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice::Gateway;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A body holding `b`.
pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A real HTTP server (HTTP/1.1 and h2c) on 127.0.0.1:0 that counts what it sees.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Requests received.
    pub requests: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
}

impl TestServer {
    /// Serves every request with `handler`.
    pub async fn start<F, Fut>(handler: F) -> TestServer
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, handler)
    }

    /// Serves on an already bound listener (to reuse a port).
    pub fn start_on<F, Fut>(listener: TcpListener, handler: F) -> TestServer
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let handler = Arc::new(handler);
        let (conns, reqs) = (Arc::clone(&connections), Arc::clone(&requests));
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                let _ = stream.set_nodelay(true);
                conns.fetch_add(1, Ordering::SeqCst);
                let handler = Arc::clone(&handler);
                let reqs = Arc::clone(&reqs);
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        reqs.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        TestServer { addr, connections, requests, stop }
    }

    /// Answers every request with `200` and its name as the body.
    pub async fn named(name: &'static str) -> TestServer {
        Self::start(move |_req| async move { Response::new(full(name)) }).await
    }

    /// Answers with a JSON description of the request and streams the request body back
    /// in the `x-body-bytes` header's absence... (see `echo_json`).
    pub async fn echo() -> TestServer {
        Self::start(echo_json).await
    }

    /// Requests seen so far.
    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes open connections.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An upstream handler: reads the whole body and answers with JSON describing the
/// request as the upstream saw it.
pub async fn echo_json(req: Request<Incoming>) -> Response<TestBody> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (k.as_str().to_owned(), serde_json::Value::String(v.to_str().unwrap_or("?").to_owned()))
        })
        .collect();
    let doc = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body.len(),
    });
    Response::new(full(serde_json::to_vec(&doc).unwrap()))
}

/// A free loopback port (bound then released; fine for tests that need a dead port).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Polls `cond` every 10 ms until it holds, for at most `within`: for states that
/// send no completion signal (a file watcher, a pool's gauge). The bound is a
/// liveness guard, not a timing assertion.
pub async fn eventually(within: Duration, cond: impl Fn() -> bool) -> bool {
    let until = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether connecting to `addr` is refused within `within` (its listener closed).
pub async fn refuses_connections(addr: SocketAddr, within: Duration) -> bool {
    let until = tokio::time::Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET url` whose body may end in an error (a stream cut short): the status, then
/// the body or the error it ended with, read within `within`.
pub async fn get_streamed(url: &str, within: Duration) -> (StatusCode, Result<Bytes, hyper::Error>) {
    let resp = HyperClient::builder(TokioExecutor::new())
        .build_http::<TestBody>()
        .get(url.parse().unwrap())
        .await
        .expect("the response head arrives");
    let status = resp.status();
    let body = tokio::time::timeout(within, resp.into_body().collect()).await.expect("the body ends");
    (status, body.map(|c| c.to_bytes()))
}

/// Starts a gateway from YAML config text.
pub async fn gateway(yaml: &str) -> Gateway {
    match Gateway::builder().config_yaml(yaml) {
        Ok(b) => b.start().await.unwrap_or_else(|e| panic!("gateway failed to start: {e}")),
        Err(e) => panic!("config rejected:\n{e}"),
    }
}

/// A one-listener config with the given upstreams and routes sections appended.
pub fn config(rest: &str) -> String {
    format!("version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\n{rest}")
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub version: http::Version,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not json ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP client (hyper-util's pooled client) speaking HTTP/1.1 or h2c.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, TestBody>,
}

impl Client {
    pub fn http1() -> Client {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        Client { inner: HyperClient::builder(TokioExecutor::new()).build(conn) }
    }

    /// An HTTP/1.1 client that reads responses with up to `n` header values
    /// (hyper's default is 100).
    pub fn http1_max_headers(n: usize) -> Client {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        Client { inner: HyperClient::builder(TokioExecutor::new()).http1_max_headers(n).build(conn) }
    }

    pub fn h2c() -> Client {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        Client { inner: HyperClient::builder(TokioExecutor::new()).http2_only(true).build(conn) }
    }

    pub async fn send(&self, req: Request<TestBody>) -> Reply {
        let resp = tokio::time::timeout(Duration::from_secs(30), self.inner.request(req))
            .await
            .expect("request finished within 30s")
            .expect("request succeeded at the HTTP level");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Reply { status: parts.status, headers: parts.headers, version: parts.version, body }
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Request::get(url).body(full("")).unwrap()).await
    }

    pub async fn post(&self, url: &str, body: impl Into<Bytes>) -> Reply {
        self.send(Request::post(url).body(full(body)).unwrap()).await
    }
}

/// `http://addr{path}`.
pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// One access-log line: its fields by name.
pub type AccessLine = std::collections::BTreeMap<String, String>;

/// The access-log lines (`sluice::access` events) of every gateway of this test
/// binary, as field maps. One global subscriber, installed on first use: a scoped
/// (per-thread) one misses events whose callsite another test's thread hit first
/// (tracing caches each callsite's interest). Tests pick their own lines by route
/// name or request id.
#[derive(Clone, Default)]
pub struct AccessLog(std::sync::Arc<std::sync::Mutex<Vec<AccessLine>>>);

impl AccessLog {
    /// The binary's access log.
    pub fn get() -> AccessLog {
        static LOG: std::sync::OnceLock<AccessLog> = std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let log = AccessLog::default();
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(log.clone()))
                .expect("no other global subscriber in the tests");
            log
        })
        .clone()
    }

    /// The lines `keep` selects, once there are `n` of them: a line is written when
    /// its response body ends, which may be just after the client read it. Bounded
    /// (10 s) so a missing line fails the test instead of hanging it.
    pub async fn wait_for(&self, n: usize, keep: impl Fn(&AccessLine) -> bool) -> Vec<AccessLine> {
        for _ in 0..1000 {
            let lines: Vec<AccessLine> = self.0.lock().unwrap().iter().filter(|l| keep(l)).cloned().collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.0.lock().unwrap().iter().filter(|l| keep(l)).cloned().collect()
    }
}

struct Fields(std::collections::BTreeMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Only the access log: every other span and event stays disabled, as in a gateway
/// at the default log level.
const ACCESS_TARGET: &str = "sluice::access";

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AccessLog {
    fn register_callsite(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if meta.target() == ACCESS_TARGET {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, _: tracing_subscriber::layer::Context<'_, S>) -> bool {
        meta.target() == ACCESS_TARGET
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == ACCESS_TARGET {
            let mut fields = Fields(Default::default());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

/// An upstream that holds every request until `release` holds `true`.
pub async fn held_upstream() -> (TestServer, tokio::sync::watch::Sender<bool>) {
    let (release, released) = tokio::sync::watch::channel(false);
    let up = TestServer::start(move |_req| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Response::new(full("done"))
        }
    })
    .await;
    (up, release)
}

/// An OTLP/HTTP collector: every export posted to `path`, decoded as `M` (the real
/// protobuf), is handed to `keep` with the request's headers.
pub async fn otlp_collector<M, F>(path: &'static str, keep: F) -> TestServer
where
    M: prost::Message + Default + 'static,
    F: Fn(&http::HeaderMap, M) + Clone + Send + Sync + 'static,
{
    use http_body_util::BodyExt;
    TestServer::start(move |req: Request<Incoming>| {
        let keep = keep.clone();
        async move {
            assert_eq!(req.uri().path(), path);
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            keep(&parts.headers, M::decode(body).expect("an OTLP protobuf"));
            Response::new(full(""))
        }
    })
    .await
}
