//! Connections to one target: TCP (+TLS) establishment under the connect timeout,
//! HTTP/1.1 keep-alive connections kept idle between requests, and one shared
//! multiplexed HTTP/2 connection re-established when it closes.
//!
//! HTTP/1.1 speaks through the gateway's own client (`h1.rs`), run in the request's
//! task; HTTP/2 through hyper's. Either way, when a pooled connection turns out dead
//! before the request was written, the request comes back and is sent again on a
//! fresh connection; the caller learns whether anything was sent at all.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use http::header::HOST;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tracing::debug;

use super::h1::{self, Conn, Failure, Home};
use super::settings::{PoolSettings, Protocol};
use crate::body::{Body, BoxError};
use crate::error::ProxyError;

/// A failed send: the error, the request when it certainly was not sent, and its
/// head when it was (or may have been) and the caller asked to keep it.
pub(crate) struct SendError {
    pub error: ProxyError,
    pub request: Option<Outgoing>,
    pub head: Option<Box<Parts>>,
}

/// A request on its way to a target, its head boxed: handed down a send's layers
/// (the upstream's attempts, the pool, the connection) it moves as a pointer and a
/// body, not as a `Request`'s ~240 bytes, each layer's future copying it in
/// (BENCHMARKS.md, P1); and a head kept for a retry is boxed already.
pub(crate) struct Outgoing {
    pub head: Box<Parts>,
    pub body: Body,
}

impl Outgoing {
    pub fn new(req: Request<Body>) -> Outgoing {
        let (head, body) = req.into_parts();
        Outgoing { head: Box::new(head), body }
    }

    pub fn into_request(self) -> Request<Body> {
        Request::from_parts(*self.head, self.body)
    }
}

/// A response, and the request's head when the caller asked to keep it.
pub(crate) type Sent = (Response<ResponseBody>, Option<Box<Parts>>);

/// The connections of one target.
pub(crate) struct Pool {
    address: Arc<str>,
    host: String,
    port: u16,
    /// `host:port` as an authority, for HTTP/2 requests without a `Host`.
    authority: Option<Authority>,
    server_name: Option<ServerName<'static>>,
    settings: Arc<PoolSettings>,
    /// Idle HTTP/1 connections, one list per worker (`crate::workers`): a connection's
    /// task runs on the worker that opened it, so a worker only reuses its own and
    /// no request wakes another thread.
    idle: Box<[Mutex<VecDeque<Idle>>]>,
    /// The most idle connections each list keeps (`max_idle`, split over the lists).
    max_idle_per_list: usize,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    h2_connect: tokio::sync::Mutex<()>,
    reaper_running: AtomicBool,
    /// Wakes the reaper when the pool is dropped (the sender goes with it).
    closed: tokio::sync::watch::Sender<()>,
    connects: AtomicU64,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("address", &self.address).finish_non_exhaustive()
    }
}

impl Pool {
    pub fn new(
        address: Arc<str>,
        host: String,
        port: u16,
        server_name: Option<ServerName<'static>>,
        settings: Arc<PoolSettings>,
    ) -> Pool {
        let authority = address.parse::<Authority>().ok();
        let lists = crate::workers::most_started().max(1);
        let max_idle_per_list = settings.max_idle.div_ceil(lists);
        Pool {
            address,
            host,
            port,
            authority,
            server_name,
            settings,
            idle: (0..lists).map(|_| Mutex::new(VecDeque::new())).collect(),
            max_idle_per_list,
            h2: Mutex::new(None),
            h2_connect: tokio::sync::Mutex::new(()),
            reaper_running: AtomicBool::new(false),
            closed: tokio::sync::watch::channel(()).0,
            connects: AtomicU64::new(0),
        }
    }

    /// Connections opened so far (tests and metrics).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Idle HTTP/1 connections currently pooled.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn idle_len(&self) -> usize {
        self.idle.iter().map(|l| l.lock().unwrap().len()).sum()
    }

    /// The idle list of the worker running this code.
    fn idle_list(&self) -> &Mutex<VecDeque<Idle>> {
        &self.idle[crate::workers::current().unwrap_or(0) % self.idle.len()]
    }

    /// Rewrites `req` for this target: origin-form URI for HTTP/1 (keeping the client's
    /// `Host`, or the configured one), absolute URI for HTTP/2 with the `Host` moved
    /// into `:authority`. Idempotent, so a returned request can be prepared again.
    pub fn prepare(&self, head: &mut Parts) {
        let s = &*self.settings;
        let path = head.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        // The upstream's own Host, else the client's, else the request target's
        // authority, else the target's address.
        let fallback = |uri: &Uri| {
            uri.authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .or_else(|| HeaderValue::from_str(&self.address).ok())
        };
        match s.protocol {
            Protocol::Http1 => {
                // One client Host stays where it is (taking it out and putting it back
                // cost two lookups per request); it is set when replaced, missing, or
                // given twice (a plugin may append one), as one.
                let set = match &s.host_header {
                    Some(h) => Some(h.clone()),
                    None => {
                        let mut given = head.headers.get_all(HOST).iter();
                        match (given.next(), given.next()) {
                            (Some(_), None) => None,
                            (Some(first), Some(_)) => Some(first.clone()),
                            (None, _) => fallback(&head.uri),
                        }
                    }
                };
                head.uri = Uri::from(path);
                head.version = Version::HTTP_11;
                if let Some(h) = set {
                    head.headers.insert(HOST, h);
                }
            }
            Protocol::Http2 => {
                let host = s
                    .host_header
                    .clone()
                    .or_else(|| head.headers.get(HOST).cloned())
                    .or_else(|| fallback(&head.uri));
                let authority = host
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                    .or_else(|| self.authority.clone());
                let scheme = if s.tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(scheme);
                parts.authority = authority;
                parts.path_and_query = Some(path.clone());
                head.uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from(path));
                head.version = Version::HTTP_2;
                head.headers.remove(HOST);
            }
        }
    }

    /// Sends a prepared request and waits (up to the request timeout) for the head of
    /// the response. With `keep_head`, the request's head comes back with the
    /// response or the failure, for a retry: the HTTP/1 client writes it without
    /// consuming it; for HTTP/2 (hyper takes the request) it is copied first.
    pub async fn send(
        self: &Arc<Self>,
        req: Outgoing,
        keep_head: bool,
        now: Instant,
    ) -> Result<Sent, SendError> {
        match self.settings.protocol {
            Protocol::Http1 => self.send_h1(req, keep_head, now).await,
            Protocol::Http2 => {
                let head = keep_head.then(|| Box::new(copy_head(&req.head)));
                match self.send_h2(req.into_request()).await {
                    Ok(resp) => Ok((resp.map(ResponseBody::H2), head)),
                    Err(e) => Err(SendError { head: if e.request.is_none() { head } else { None }, ..e }),
                }
            }
        }
    }

    /// `now`: the time the request is sent at; the response head is due
    /// `request_timeout` after it (after the connection is made, if one is).
    async fn send_h1(
        self: &Arc<Self>,
        mut req: Outgoing,
        keep_head: bool,
        mut now: Instant,
    ) -> Result<Sent, SendError> {
        let after = self.settings.request_timeout;
        loop {
            let (conn, reused) = match self.checkout_h1(now) {
                Some(c) => (c, true),
                // Boxed: connecting (TCP, TLS) is a large future and rare next to a
                // pooled connection, and every request's future would otherwise be
                // as large.
                None => match Box::pin(self.connect_h1()).await {
                    Ok(c) => {
                        now = Instant::now();
                        (c, false)
                    }
                    Err(error) => return Err(SendError { error, request: Some(req), head: None }),
                },
            };
            let home: Arc<dyn Home> = Arc::clone(self) as Arc<dyn Home>;
            let failure = match conn.send(req, home, now + after, keep_head).await {
                Ok((resp, head)) => return Ok((resp.map(ResponseBody::H1), head)),
                Err(failure) => failure,
            };
            match failure {
                Failure::NotSent { request, .. } if reused => {
                    // A stale keep-alive connection: nothing was written, go fresh.
                    debug!(target = %self.address, "pooled connection was closed, reconnecting");
                    req = request;
                }
                Failure::NotSent { request, error } => {
                    let error = self.upstream_error(error, true);
                    return Err(SendError { error, request: Some(request), head: None });
                }
                Failure::Sent { error, head } => {
                    return Err(SendError { error: self.upstream_error(error, false), request: None, head });
                }
                Failure::ClientBody(error) => {
                    return Err(SendError { error: client_body_error(error), request: None, head: None });
                }
                Failure::TimedOut { head } => {
                    let error = ProxyError::UpstreamTimeout { target: self.address.to_string(), after };
                    return Err(SendError { error, request: None, head });
                }
            }
        }
    }

    fn upstream_error(&self, error: h1::Error, nothing_sent: bool) -> ProxyError {
        ProxyError::Upstream { target: self.address.to_string(), source: Box::new(error), nothing_sent }
    }

    async fn send_h2(&self, mut req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let mut fresh_tried = false;
        loop {
            let (mut sender, reused) = match self.h2_sender().await {
                Ok(s) => s,
                Err(error) => return Err(SendError { error, request: Some(Outgoing::new(req)), head: None }),
            };
            match self.await_head(sender.try_send_request(req)).await {
                Ok(resp) => return Ok(resp),
                Err(e) if e.request.is_some() && (reused || !fresh_tried) && sender.is_closed() => {
                    fresh_tried |= !reused;
                    self.forget_h2();
                    req = e.request.expect("checked above").into_request();
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn await_head(
        &self,
        fut: impl Future<Output = Result<Response<Incoming>, TrySendError<Request<Body>>>>,
    ) -> Result<Response<Incoming>, SendError> {
        let after = self.settings.request_timeout;
        match timeout(after, fut).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(mut e)) => {
                let request = e.take_message().map(Outgoing::new);
                let nothing_sent = request.is_some();
                let error = e.into_error();
                let error = if error.is_user() && std::error::Error::source(&error).is_some() {
                    client_body_error(error.into())
                } else {
                    ProxyError::Upstream {
                        target: self.address.to_string(),
                        source: Box::new(error),
                        nothing_sent,
                    }
                };
                Err(SendError { error, request, head: None })
            }
            Err(_) => Err(SendError {
                error: ProxyError::UpstreamTimeout { target: self.address.to_string(), after },
                request: None,
                head: None,
            }),
        }
    }

    /// The newest pooled connection still open at `now`; expired and closed ones go.
    fn checkout_h1(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle_list().lock().unwrap();
        let oldest = now.checked_sub(self.settings.idle_timeout);
        while let Some(mut c) = idle.pop_back() {
            if oldest.is_none_or(|d| c.since > d) && c.conn.is_open() {
                return Some(c.conn);
            }
        }
        None
    }

    async fn h2_sender(&self) -> Result<(http2::SendRequest<Body>, bool), ProxyError> {
        if let Some(s) = self.live_h2() {
            return Ok((s, true));
        }
        let _connecting = self.h2_connect.lock().await;
        if let Some(s) = self.live_h2() {
            return Ok((s, true));
        }
        let s = Box::pin(self.connect_h2()).await?;
        *self.h2.lock().unwrap() = Some(s.clone());
        Ok((s, false))
    }

    pub(crate) fn live_h2(&self) -> Option<http2::SendRequest<Body>> {
        self.h2.lock().unwrap().as_ref().filter(|s| !s.is_closed()).cloned()
    }

    fn forget_h2(&self) {
        let mut slot = self.h2.lock().unwrap();
        if slot.as_ref().is_some_and(|s| s.is_closed()) {
            *slot = None;
        }
    }

    async fn connect_h1(&self) -> Result<Conn, ProxyError> {
        let after = self.settings.connect_timeout;
        let io = timeout(after, self.connect_io()).await.map_err(|_| self.connect_timeout())??;
        Ok(Conn::new(io))
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<Body>, ProxyError> {
        let after = self.settings.connect_timeout;
        let connect = async {
            let io = self.connect_io().await?;
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| self.connect_error(e))?;
            let address = Arc::clone(&self.address);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(target = %address, error = %e, "upstream h2 connection ended with an error");
                }
            });
            Ok(sender)
        };
        timeout(after, connect).await.map_err(|_| self.connect_timeout())?
    }

    /// TCP connect with `TCP_NODELAY`, then the TLS handshake when configured.
    async fn connect_io(&self) -> Result<Stream, ProxyError> {
        let tcp =
            TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| self.connect_error(e))?;
        tcp.set_nodelay(true).map_err(|e| self.connect_error(e))?;
        self.connects.fetch_add(1, Ordering::Relaxed);
        let Some(tls) = &self.settings.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = tls.server_name.clone().or_else(|| self.server_name.clone()).ok_or_else(|| {
            self.connect_error(io::Error::other("the target host is not a valid tls server name"))
        })?;
        let stream = tls.connector.connect(name, tcp).await.map_err(|e| self.connect_error(e))?;
        if self.settings.protocol == Protocol::Http2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(self.connect_error(io::Error::other("the target did not negotiate h2 via alpn")));
        }
        Ok(Stream::Tls(Box::new(stream)))
    }

    fn connect_error(&self, e: impl Into<crate::body::BoxError>) -> ProxyError {
        ProxyError::Connect { target: self.address.to_string(), source: e.into() }
    }

    fn connect_timeout(&self) -> ProxyError {
        ProxyError::ConnectTimeout { target: self.address.to_string(), after: self.settings.connect_timeout }
    }
}

/// A connection whose response has ended goes back on the idle list of the worker
/// that used it (and opened it: lists are per worker). No task waits for that, so a
/// request costs no spawn.
impl Home for Pool {
    fn take_back(self: Arc<Self>, conn: Conn) {
        if self.max_idle_per_list == 0 {
            return;
        }
        let now = Instant::now();
        {
            let mut idle = self.idle_list().lock().unwrap();
            sweep(&mut idle, now, self.settings.idle_timeout);
            if idle.len() >= self.max_idle_per_list {
                return;
            }
            idle.push_back(Idle { conn, since: now });
        }
        if !self.reaper_running.swap(true, Ordering::AcqRel) {
            tokio::spawn(reap(Arc::downgrade(&self), self.closed.subscribe()));
        }
    }
}

/// A response body from either client.
pub(crate) enum ResponseBody {
    H1(h1::ResponseBody),
    H2(Incoming),
}

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::H1(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::H1(b) => b.is_end_stream(),
            ResponseBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ResponseBody::H1(b) => b.size_hint(),
            ResponseBody::H2(b) => b.size_hint(),
        }
    }
}

/// A copy of a request's head, for resending it after hyper took the request.
fn copy_head(head: &Parts) -> Parts {
    let mut copy = Request::new(());
    *copy.method_mut() = head.method.clone();
    *copy.uri_mut() = head.uri.clone();
    *copy.version_mut() = head.version;
    *copy.headers_mut() = head.headers.clone();
    *copy.extensions_mut() = head.extensions.clone();
    copy.into_parts().0
}

/// The client's request body failed while it was being sent: the client's fault,
/// not the target's.
fn client_body_error(error: BoxError) -> ProxyError {
    // hyper wraps the body's error; the gateway's own client passes it as it is.
    let cause = match error.downcast_ref::<hyper::Error>() {
        Some(e) => std::error::Error::source(e),
        None => Some(&*error as &(dyn std::error::Error + 'static)),
    };
    match cause.and_then(|c| c.downcast_ref::<ProxyError>()) {
        Some(ProxyError::BodyTooLarge { limit }) => ProxyError::BodyTooLarge { limit: *limit },
        _ => ProxyError::ClientBody(error),
    }
}

/// Drops idle connections older than `max_age` (they sit oldest first).
fn sweep(idle: &mut VecDeque<Idle>, now: Instant, max_age: std::time::Duration) {
    while idle.front().is_some_and(|c| now.duration_since(c.since) >= max_age) {
        idle.pop_front();
    }
}

/// Closes idle connections past the idle timeout; runs while the pool has idle
/// connections and stops when the pool is dropped.
async fn reap(pool: Weak<Pool>, mut closed: tokio::sync::watch::Receiver<()>) {
    loop {
        let Some(period) =
            pool.upgrade().map(|p| (p.settings.idle_timeout / 2).max(std::time::Duration::from_millis(10)))
        else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = closed.changed() => return,
        }
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        let mut left = 0;
        for list in &pool.idle {
            let mut idle = list.lock().unwrap();
            sweep(&mut idle, now, pool.settings.idle_timeout);
            // Connections the target closed are let go now, not at the next checkout.
            idle.retain_mut(|c| c.conn.is_open());
            left += idle.len();
        }
        if left == 0 {
            pool.reaper_running.store(false, Ordering::Release);
            return;
        }
    }
}

/// A connection to a target: plain TCP or TLS over TCP.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
