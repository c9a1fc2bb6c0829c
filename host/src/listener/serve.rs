//! The accept loop and per-connection serving: TLS, the protocol (ALPN, or the first
//! bytes of a cleartext connection), then the HTTP/1 driver (`h1.rs`) or hyper's
//! HTTP/2 connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::ListenerSpec;
use super::activity::{Activity, Alarms, Clock, Guarded, InFlight, Verdict, Woke};
use super::canned::CannedErrors;
use super::h1::Park;
use super::lot::{Idle, Lot, Parked};
use crate::body::Body;
use crate::config::Name;
use crate::observability::metrics::{OpenConnection, Protocol};
use crate::snapshot::{Snapshot, SnapshotCell};

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
    /// The client's IP address as text: the `X-Forwarded-For` each of the
    /// connection's requests gets (when it is the first hop).
    pub peer_ip: http::HeaderValue,
}

impl ConnInfo {
    pub fn new(listener: Arc<ListenerSpec>, peer: SocketAddr, local: SocketAddr, tls: bool) -> ConnInfo {
        let peer_ip = crate::proxy::headers::ip_value(peer.ip());
        ConnInfo { listener, peer, local, tls, peer_ip }
    }
}

/// Accepts connections on `tcp` until `shutdown` turns true, then waits up to the
/// current snapshot's grace period for open connections to finish their requests.
///
/// `tcp` becomes a tokio listener on the runtime this runs on. `slots` holds the
/// listener's connection limit, shared by the accept loops of every worker. Idle
/// plaintext HTTP/1 connections wait in this loop's [`Lot`] between requests, without
/// a task; a parked connection that turns readable gets a new one.
pub async fn serve(
    tcp: std::net::TcpListener,
    name: Name,
    cell: Arc<SnapshotCell>,
    slots: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (tcp, mut lot) = match TcpListener::from_std(tcp).and_then(|t| Ok((t, Lot::new()?))) {
        Ok(x) => x,
        Err(e) => {
            warn!(listener = %name, error = %e, "cannot register the listener's socket");
            return;
        }
    };
    let mut conns: JoinSet<Option<Parked>> = JoinSet::new();
    let mut woke = Vec::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*shutdown.borrow() {
        let accept = async {
            let permit = Arc::clone(&slots).acquire_owned().await.expect("semaphore is never closed");
            match tcp.accept().await {
                Ok((stream, peer)) => Some((stream, peer, permit)),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    None
                }
            }
        };
        let event = tokio::select! {
            accepted = accept => Event::Accepted(accepted),
            Some(joined) = conns.join_next(), if !conns.is_empty() => Event::Joined(joined.ok().flatten()),
            r = lot.woken(&mut woke) => Event::Woken(r),
            _ = sweep.tick(), if lot.len() > 0 => Event::Sweep,
            _ = shutdown.changed() => break,
        };
        match event {
            Event::Accepted(None) => {}
            Event::Accepted(Some((stream, peer, permit))) => {
                let Some(spec) = cell.load().listener(&name) else {
                    // The listener left the config; the gateway closes it.
                    break;
                };
                let cell = Arc::clone(&cell);
                let shutdown = shutdown.clone();
                conns.spawn(async move {
                    let left = serve_connection(stream, peer, spec, cell, shutdown).await;
                    left.map(|idle| Parked::new(idle, permit))
                });
            }
            Event::Joined(None) => {}
            Event::Joined(Some(parked)) => lot.park(parked),
            Event::Woken(Ok(())) => {
                for parked in woke.drain(..) {
                    let cell = Arc::clone(&cell);
                    let shutdown = shutdown.clone();
                    conns.spawn(resume(parked, cell, shutdown));
                }
            }
            Event::Woken(Err(e)) => {
                warn!(listener = %name, error = %e, "the parked connections' wait failed; closing them");
                close_all(&mut lot);
            }
            Event::Sweep => {
                lot.expired(Instant::now(), &mut woke);
                woke.drain(..).for_each(Parked::close);
            }
        }
    }
    drop(tcp);
    // Parked connections are between requests: they close now, as idle ones do.
    close_all(&mut lot);
    let grace = cell.load().grace_period();
    debug!(listener = %name, open = conns.len(), "draining connections");
    let drained = tokio::time::timeout(grace, async {
        while let Some(joined) = conns.join_next().await {
            if let Ok(Some(parked)) = joined {
                parked.close();
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(listener = %name, open = conns.len(), "grace period over; closing remaining connections");
        conns.abort_all();
    }
}

/// What woke the accept loop.
enum Event {
    /// A connection, with its slot under the limit (none if the accept failed).
    Accepted(Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)>),
    /// A connection's task ended; with its socket if it parked.
    Joined(Option<Parked>),
    /// Parked connections turned readable (they are in the loop's `woke`).
    Woken(std::io::Result<()>),
    /// Time to close parked connections whose idle timeout passed.
    Sweep,
}

fn close_all(lot: &mut Lot) {
    let mut out = Vec::new();
    lot.drain(&mut out);
    out.into_iter().for_each(Parked::close);
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    spec: Arc<ListenerSpec>,
    cell: Arc<SnapshotCell>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Idle> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(spec.address);
    let known = match (&spec.tls, spec.http1, spec.http2) {
        (None, true, false) => Protocol::Http1,
        (None, false, true) => Protocol::Http2,
        _ => Protocol::Pending,
    };
    let open = spec.metrics.accepted(known);
    let tls = spec.tls.is_some();
    let info = Arc::new(ConnInfo::new(Arc::clone(&spec), peer, local, tls));
    let conn = Conn { info, cell, open, spec: &spec, shutdown: &mut shutdown };
    if let Some(tls) = &spec.tls {
        // Boxed: a TLS connection's state (the handshake's, rustls' own) is large,
        // and it would size every plaintext connection's task too.
        Box::pin(conn.tls(stream, Arc::clone(tls))).await;
        return None;
    }
    let (http2, prefix, stream) = match (spec.http1, spec.http2) {
        // Boxed, like every state a connection leaves behind: the task's size is that
        // of its largest state.
        (true, true) => Box::pin(sniff(stream, spec.limits.header_read_timeout)).await?,
        (false, true) => (true, Bytes::new(), stream),
        _ => (false, Bytes::new(), stream),
    };
    // Each protocol's state boxed on its own: a task is as large as its largest
    // state.
    if http2 {
        Box::pin(conn.http2(stream, prefix)).await;
        None
    } else {
        Box::pin(conn.http1(stream, prefix)).await
    }
}

/// A parked connection's next stretch of HTTP/1, in a new task: its socket turned
/// readable. It carries on where it left off (the header-read timeout runs from now).
async fn resume(
    parked: Parked,
    cell: Arc<SnapshotCell>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Parked> {
    let (idle, permit) = parked.resumed();
    let Idle { socket, peer, local, spec, open, .. } = idle;
    let stream = match TcpStream::from_std(socket) {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, error = %e, "cannot register a woken connection");
            return None;
        }
    };
    let info = Arc::new(ConnInfo::new(Arc::clone(&spec), peer, local, false));
    let conn = Conn { info, cell, open, spec: &spec, shutdown: &mut shutdown };
    let left = Box::pin(conn.http1(stream, Bytes::new())).await?;
    Some(Parked::new(left, permit))
}

/// The HTTP/2 connection preface (RFC 9113 §3.4): how a cleartext client speaking
/// HTTP/2 with prior knowledge (h2c) starts.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads a listener-speaks-both connection's first bytes until they show the
/// protocol: HTTP/2 if they are its preface, HTTP/1 as soon as one differs. Returns
/// the protocol, the bytes read, and the socket; `None` if the client sent nothing
/// decisive within `timeout` or went away.
async fn sniff(mut stream: TcpStream, timeout: Duration) -> Option<(bool, Bytes, TcpStream)> {
    use tokio::io::AsyncReadExt;
    let mut buf = BytesMut::with_capacity(H2_PREFACE.len());
    let read = tokio::time::timeout(timeout, async {
        while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            if stream.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
        }
        Some(())
    });
    match read.await {
        Ok(Some(())) => {}
        _ => return None,
    }
    let http2 = buf.starts_with(H2_PREFACE);
    Some((http2, buf.freeze(), stream))
}

/// One connection being served, whichever the protocol.
struct Conn<'a> {
    info: Arc<ConnInfo>,
    cell: Arc<SnapshotCell>,
    /// Counted as open until the connection ends; its protocol is settled once known
    /// (at accept, from ALPN, or from a cleartext connection's first bytes).
    open: OpenConnection,
    spec: &'a ListenerSpec,
    shutdown: &'a mut watch::Receiver<bool>,
}

impl Conn<'_> {
    /// The TLS handshake (within `header_read_timeout`), then the protocol ALPN chose.
    async fn tls(self, stream: TcpStream, config: Arc<rustls::ServerConfig>) {
        let peer = self.info.peer;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshake =
            tokio::time::timeout(self.spec.limits.header_read_timeout, acceptor.accept(stream)).await;
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
        // HTTP/2 when ALPN chose it, or when the listener speaks nothing else (a
        // client that negotiated no protocol gets HTTP/2, not a version the listener
        // does not list).
        let http2 = h2 || !self.spec.http1;
        if http2 {
            Box::pin(self.http2(tls_stream, Bytes::new())).await
        } else {
            // A TLS connection parks in its task: nothing comes back.
            Box::pin(self.http1(tls_stream, Bytes::new())).await;
        }
    }

    fn handler(&self, activity: &Arc<Activity>, hands_over: bool) -> Handler {
        Handler {
            info: Arc::clone(&self.info),
            cell: Arc::clone(&self.cell),
            activity: Arc::clone(activity),
            hands_over,
        }
    }

    /// Serves HTTP/1; returns the connection if it parked out of its task.
    async fn http1<T: Park>(mut self, io: T, prefix: Bytes) -> Option<Idle> {
        self.open.identified(Protocol::Http1);
        let activity = Arc::new(Activity::new(true));
        let svc = self.handler(&activity, true);
        let left =
            super::h1::serve(io, prefix, svc, activity, self.spec, self.info.peer, self.shutdown).await?;
        let ConnInfo { peer, local, .. } = *self.info;
        Some(Idle {
            socket: left.socket,
            until: Instant::now() + left.idle_for,
            peer,
            local,
            spec: Arc::clone(&self.info.listener),
            open: self.open,
        })
    }

    async fn http2<T: Park>(mut self, io: T, prefix: Bytes) {
        self.open.identified(Protocol::Http2);
        let activity = Arc::new(Activity::new(false));
        let svc = self.handler(&activity, false);
        let limits = &self.spec.limits;
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            // Room above the listener's limit (h2 counts 32 bytes more per header than
            // the proxy does), so an oversized head reaches the proxy's own check and
            // gets its JSON 431 instead of the HTTP/2 layer's empty one.
            .max_header_list_size(
                u32::try_from(limits.max_header_bytes.saturating_mul(2) + 16 * 1024).unwrap_or(u32::MAX),
            )
            .max_concurrent_streams(256);
        let io = super::h1::Rewind::new(prefix, io);
        let conn = b.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let mut clock = Clock::new(limits);
        let mut alarms = Alarms::new(&clock, self.shutdown);
        let mut closing = *self.shutdown.borrow();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            match std::future::poll_fn(|cx| alarms.poll(cx, closing, |cx| conn.as_mut().poll(cx))).await {
                Woke::Done(res) => {
                    if let Err(e) = res {
                        debug!(peer = %self.info.peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                Woke::Shutdown => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Woke::Tick => {
                    if clock.tick(&activity) == Verdict::IdleTimeout {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// The connection, with the HTTP/1 parser's empty error answers given JSON bodies.
pub(super) fn canned<I>(io: I, spec: &ListenerSpec) -> CannedErrors<I> {
    let limits = &spec.limits;
    CannedErrors::new(
        io,
        spec.request_id.header.clone(),
        limits.max_uri_bytes as u64,
        limits.max_header_bytes as u64,
    )
}

/// What a connection's requests are handed to: the proxy, with the snapshot current
/// when each request arrives.
#[derive(Clone)]
pub(super) struct Handler {
    info: Arc<ConnInfo>,
    cell: Arc<SnapshotCell>,
    activity: Arc<Activity>,
    /// HTTP/1: a protocol switch is handed over by the listener (`upgrade.rs`).
    hands_over: bool,
}

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<Guarded<Body>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Guarded<Body>>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let snapshot = self.cell.load_full();
        let info = Arc::clone(&self.info);
        let in_flight = InFlight::start(&self.activity);
        if self.hands_over && req.headers().contains_key(http::header::UPGRADE) {
            req.extensions_mut().insert(self.activity.expect_switch());
        }
        boxed_in_place(|| answer(req, info, snapshot, in_flight))
    }
}

/// The box first, then the value written into it: a future's ~8 KB are built in
/// place rather than on the stack and copied in (which `Box::pin(value)` does, the
/// value being made before the box).
fn boxed_in_place<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// The proxy's answer, counted and guarded. An `async` block that makes the proxy's
/// future inside it: that future is built in place, in the box, when first polled.
/// (Built outside and moved in, as a combinator over it did, its ~7 KB were copied
/// twice per request, and an `async` block awaiting a captured future keeps two
/// copies of it.) The cost is the room of the arguments, kept beside it.
#[allow(clippy::manual_async_fn, reason = "keeps the request in place: see the proxy module's docs")]
fn answer(
    req: Request<Incoming>,
    info: Arc<ConnInfo>,
    snapshot: Arc<Snapshot>,
    in_flight: InFlight,
) -> impl Future<Output = Result<Response<Guarded<Body>>, Infallible>> {
    async move {
        let resp = crate::proxy::handle(req, info, snapshot).await;
        in_flight.answered(resp.status());
        Ok(resp.map(|body| Guarded::new(body, in_flight)))
    }
}
