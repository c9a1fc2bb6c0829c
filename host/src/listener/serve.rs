//! The accept loop and per-connection serving.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::ListenerSpec;
use super::canned::CannedErrors;
use crate::config::Name;
use crate::observability::metrics::{OpenConnection, Protocol};
use crate::snapshot::SnapshotCell;

/// What the proxy knows about the connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The listener's settings, as of when the connection was accepted.
    pub listener: Arc<ListenerSpec>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Accepts connections on `tcp` until `shutdown` turns true, then waits up to the
/// current snapshot's grace period for open connections to finish their requests.
///
/// `tcp` becomes a tokio listener on the runtime this runs on. `slots` holds the
/// listener's connection limit, shared by the accept loops of every worker.
pub async fn serve(
    tcp: std::net::TcpListener,
    name: Name,
    cell: Arc<SnapshotCell>,
    slots: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tcp = match TcpListener::from_std(tcp) {
        Ok(t) => t,
        Err(e) => {
            warn!(listener = %name, error = %e, "cannot register the listener's socket");
            return;
        }
    };
    let mut conns = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        while conns.try_join_next().is_some() {}
        let Some(spec) = cell.load().listener(&name) else {
            // The listener left the config; the gateway closes it.
            break;
        };
        let cell = Arc::clone(&cell);
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            serve_connection(stream, peer, spec, cell, shutdown).await;
            drop(permit);
        });
    }
    drop(tcp);
    let grace = cell.load().grace_period();
    debug!(listener = %name, open = conns.len(), "draining connections");
    let drained = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(listener = %name, open = conns.len(), "grace period over; closing remaining connections");
        conns.abort_all();
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    spec: Arc<ListenerSpec>,
    cell: Arc<SnapshotCell>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(spec.address);
    let known = match (&spec.tls, spec.http1, spec.http2) {
        (None, true, false) => Protocol::Http1,
        (None, false, true) => Protocol::Http2,
        _ => Protocol::Pending,
    };
    let open = Arc::new(spec.metrics.accepted(known));
    match &spec.tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
            let handshake =
                tokio::time::timeout(spec.limits.header_read_timeout, acceptor.accept(stream)).await;
            let tls_stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let info = Arc::new(ConnInfo { listener: Arc::clone(&spec), peer, local, tls: true });
            // HTTP/2 when ALPN chose it, or when the listener speaks nothing else
            // (a client that negotiated no protocol gets HTTP/2, not a version the
            // listener does not list).
            let mode = if h2 || !spec.http1 { Mode::Http2 } else { Mode::Http1 };
            open.identified(if matches!(mode, Mode::Http2) { Protocol::Http2 } else { Protocol::Http1 });
            serve_http(canned(TokioIo::new(tls_stream), &spec), info, mode, cell, open, shutdown).await;
        }
        None => {
            let mode = match (spec.http1, spec.http2) {
                (true, true) => Mode::Auto,
                (false, true) => Mode::Http2,
                _ => Mode::Http1,
            };
            let info = Arc::new(ConnInfo { listener: Arc::clone(&spec), peer, local, tls: false });
            serve_http(canned(TokioIo::new(stream), &spec), info, mode, cell, open, shutdown).await;
        }
    }
}

/// The connection, with the HTTP/1 parser's empty error answers given JSON bodies.
fn canned<I>(io: I, spec: &ListenerSpec) -> CannedErrors<I> {
    let limits = &spec.limits;
    CannedErrors::new(
        io,
        spec.request_id.header.clone(),
        limits.max_uri_bytes as u64,
        limits.max_header_bytes as u64,
    )
}

#[derive(Clone, Copy)]
enum Mode {
    Http1,
    Http2,
    Auto,
}

/// Activity of one connection, for the idle timeout.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

/// One request in flight on a connection: counted while it lives. The count drops
/// when the request's future does, however it ends — answered, or dropped because the
/// client reset the HTTP/2 stream or went away — so the idle timeout keeps working.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

async fn serve_http<I>(
    io: I,
    info: Arc<ConnInfo>,
    mode: Mode,
    cell: Arc<SnapshotCell>,
    open: Arc<OpenConnection>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let limits = info.listener.limits.clone();
    let peer = info.peer;
    let activity = Arc::new(Activity {
        started: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_ms: AtomicU64::new(0),
    });
    let svc = {
        let activity = Arc::clone(&activity);
        service_fn(move |req: hyper::Request<Incoming>| {
            // A listener speaking both protocols learns which from the first request.
            open.identified(Protocol::of(req.version()));
            let snapshot = cell.load_full();
            let info = Arc::clone(&info);
            let in_flight = InFlight::start(&activity);
            async move {
                let resp = crate::proxy::handle(req, info, snapshot).await;
                drop(in_flight);
                Ok::<_, Infallible>(resp)
            }
        })
    };
    // One protocol only: hyper's own connection for it. (hyper-util's auto builder
    // sniffs the protocol in `serve_connection_with_upgrades` whatever `http1_only`
    // says, so an HTTP/1-only listener would still speak h2c.)
    match mode {
        Mode::Http1 => {
            let conn = http1_builder(&limits).serve_connection(io, svc).with_upgrades();
            tokio::pin!(conn);
            drive(conn, |c| c.graceful_shutdown(), &activity, &limits, peer, &mut shutdown).await;
        }
        Mode::Http2 => {
            let conn = http2_builder(&limits).serve_connection(io, svc);
            tokio::pin!(conn);
            drive(conn, |c| c.graceful_shutdown(), &activity, &limits, peer, &mut shutdown).await;
        }
        Mode::Auto => {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            http1_settings!(builder.http1(), limits);
            http2_settings!(builder.http2(), limits);
            let conn = builder.serve_connection_with_upgrades(io, svc);
            tokio::pin!(conn);
            drive(conn, |c| c.graceful_shutdown(), &activity, &limits, peer, &mut shutdown).await;
        }
    }
}

/// The HTTP/1.1 settings of a listener's connections, on hyper's builder or the auto
/// builder's (same methods, different types).
macro_rules! http1_settings {
    ($builder:expr, $limits:expr) => {
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout($limits.header_read_timeout)
            .max_buf_size(($limits.max_header_bytes + 1024).max(8192))
            .keep_alive(true)
    };
}

/// The HTTP/2 settings of a listener's connections (see [`http1_settings`]).
macro_rules! http2_settings {
    ($builder:expr, $limits:expr) => {
        $builder
            .timer(TokioTimer::new())
            // Room above the listener's limit (h2 counts 32 bytes more per header than
            // the proxy does), so an oversized head reaches the proxy's own check and
            // gets its JSON 431 instead of the HTTP/2 layer's empty one.
            .max_header_list_size(
                u32::try_from($limits.max_header_bytes.saturating_mul(2) + 16 * 1024).unwrap_or(u32::MAX),
            )
            .max_concurrent_streams(256)
    };
}
use {http1_settings, http2_settings};

fn http1_builder(limits: &super::Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    http1_settings!(b, limits);
    b
}

fn http2_builder(limits: &super::Limits) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    http2_settings!(b, limits);
    b
}

/// Runs a connection to its end: asked to finish gracefully on shutdown, or once it
/// has been idle (no request in flight) for the listener's idle timeout.
async fn drive<C, E>(
    mut conn: std::pin::Pin<&mut C>,
    graceful: impl Fn(std::pin::Pin<&mut C>),
    activity: &Activity,
    limits: &super::Limits,
    peer: SocketAddr,
    shutdown: &mut watch::Receiver<bool>,
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                graceful(conn.as_mut());
            }
            _ = ticker.tick(), if !closing => {
                if activity.in_flight.load(Ordering::Relaxed) == 0 && activity.idle_for() >= limits.idle_timeout {
                    closing = true;
                    graceful(conn.as_mut());
                }
            }
        }
    }
}
