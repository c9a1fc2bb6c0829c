//! HTTP/1.1 connections, with their buffers let go while they idle.
//!
//! hyper keeps a connection's read buffer (8 KiB and up) and write buffer for as long
//! as the connection lives, so an idle keep-alive connection cost ~26 KiB (BENCHMARKS.md,
//! P6). nginx frees a connection's buffers while it waits; this driver does the same.
//! Once a connection has been quiet for a tick (see `activity.rs`) it asks hyper to
//! close gracefully. Between requests that ends at once, without a byte written; the
//! driver takes the socket back with whatever hyper had read of a next request, drops
//! hyper's connection and its buffers, and waits for the socket to turn readable. Then
//! a fresh hyper connection carries on, the leftover bytes first. A plaintext socket
//! waits out of its task, in the listener's lot (`lot.rs`), and comes back in a new
//! task; a TLS one waits in its task. A busy connection
//! never parks: the hot path pays two relaxed flag writes per read and write.
//!
//! The driver also keeps the header-read timeout to its meaning: it runs from the
//! first byte of a head (from accept, for the first head), not through the wait
//! between requests, which the idle timeout governs. (hyper's own header timer runs
//! from the end of one response, so it closed idle keep-alive connections after
//! `header_read_timeout` instead of `idle_timeout`, and it cost a timer and an
//! allocation per request.)
//!
//! A protocol switch (`101`) is handed over the same way: the socket goes to the
//! request's [`super::upgrade::ClientUpgrade`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tracing::debug;

use super::ListenerSpec;
use super::activity::{Activity, Alarms, Clock, Verdict, Woke};
use super::canned::CannedErrors;
use super::serve::Handler;

/// A client connection that can wait for readability without reading.
pub(super) trait Park: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Ready once the socket has bytes (or an error, or the end) to read.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Where the connection waits once parked: a plain socket leaves its task for
    /// the listener's lot (`lot.rs`); others wait in their task.
    fn parking(self) -> Parking<Self>
    where
        Self: Sized;
}

/// Where a parked connection waits.
pub(super) enum Parking<T> {
    /// In its task.
    Here(T),
    /// In the listener's lot, as this socket, no longer registered with tokio.
    Lot(std::net::TcpStream),
    /// Nowhere: the socket could not be moved, and is closed.
    Gone,
}

impl Park for tokio::net::TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn parking(self) -> Parking<Self> {
        // `into_std` fails only if tokio cannot deregister the socket; it is closed.
        match self.into_std() {
            Ok(socket) => Parking::Lot(socket),
            Err(e) => {
                debug!(error = %e, "cannot take a parked socket from tokio");
                Parking::Gone
            }
        }
    }
}

/// TLS: hyper only waits when rustls has no plaintext left and the socket had
/// nothing, so waiting on the socket misses nothing.
impl Park for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }

    fn parking(self) -> Parking<Self> {
        Parking::Here(self)
    }
}

/// The connection as hyper sees it.
type Wrapped<T> = CannedErrors<TokioIo<Tracked<Rewind<T>>>>;

/// How a stretch of serving with hyper ended.
enum Ended {
    /// hyper is done and nothing more is to be done with the socket.
    Gone,
    /// hyper let go of the socket (`parked`: because it was idle and asked to).
    Released { parked: bool },
}

/// A connection that parked out of its task (see [`Parking::Lot`]).
pub(super) struct Left {
    pub socket: std::net::TcpStream,
    /// The time left until its idle timeout.
    pub idle_for: Duration,
}

/// Serves HTTP/1.1 on `io` (after `prefix`, bytes already read from it) until the
/// client leaves, the connection times out, switches protocols, or `shutdown` turns;
/// or until it parks out of its task, which returns its socket.
pub(super) async fn serve<T: Park>(
    mut io: T,
    mut prefix: Bytes,
    svc: Handler,
    activity: Arc<Activity>,
    spec: &ListenerSpec,
    peer: SocketAddr,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Left> {
    let mut clock = Clock::new(&spec.limits);
    let builder = builder(spec);
    loop {
        let tracked = Tracked { inner: Rewind { prefix, inner: io }, activity: Arc::clone(&activity) };
        let wrapped = super::serve::canned(TokioIo::new(tracked), spec);
        // Boxed: parked, the task keeps only a pointer's worth of room for it.
        let mut conn = Box::new(builder.serve_connection(wrapped, svc.clone()));
        let parked = match drive(&mut conn, &mut clock, &activity, peer, shutdown).await {
            Ended::Gone => return None,
            Ended::Released { parked } => parked,
        };
        let parts = conn.into_parts();
        let Rewind { prefix: rest, inner } = parts.io.into_inner().into_inner().inner;
        let leftover = join(parts.read_buf, rest);
        if let Some(tx) = activity.switched() {
            let _ = tx.send(Box::new(Rewind { prefix: leftover, inner }));
            return None;
        }
        io = inner;
        if !parked {
            Box::pin(close(io)).await;
            return None;
        }
        if !leftover.is_empty() {
            // hyper had read part of a next request: carry on with it at once.
            activity.head_started();
            prefix = leftover;
            continue;
        }
        // Even empty, it may hold on to hyper's whole read buffer.
        drop(leftover);
        crate::trim::released();
        io = match io.parking() {
            Parking::Here(io) => io,
            Parking::Lot(socket) => return Some(Left { socket, idle_for: clock.idle_left() }),
            Parking::Gone => return None,
        };
        // Parked in this task: only the socket and the task are left.
        let _parked = spec.metrics.parked();
        let idle = tokio::time::sleep(clock.idle_left());
        tokio::pin!(idle);
        let readable = tokio::select! {
            r = std::future::poll_fn(|cx| io.poll_readable(cx)) => r.is_ok(),
            _ = &mut idle => false,
            _ = shutdown.wait_for(|stop| *stop) => false,
        };
        if !readable {
            Box::pin(close(io)).await;
            return None;
        }
        activity.head_started();
        prefix = Bytes::new();
    }
}

/// hyper's settings for a listener's HTTP/1 connections. No header-read timer: the
/// driver keeps that time (see the module docs).
fn builder(spec: &ListenerSpec) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.header_read_timeout(None)
        .max_buf_size((spec.limits.max_header_bytes + 1024).max(8192))
        .keep_alive(true);
    b
}

/// Runs hyper until it is done or lets go of the socket: asked to by a shutdown, the
/// idle timeout, or a quiet tick (to park).
async fn drive<T: Park>(
    conn: &mut http1::Connection<Wrapped<T>, Handler>,
    clock: &mut Clock,
    activity: &Activity,
    peer: SocketAddr,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let mut closing = *shutdown.borrow();
    if closing {
        Pin::new(&mut *conn).graceful_shutdown();
    }
    let mut alarms = Alarms::new(clock, shutdown);
    loop {
        let woke =
            std::future::poll_fn(|cx| alarms.poll(cx, closing, |cx| conn.poll_without_shutdown(cx))).await;
        match woke {
            Woke::Done(res) => {
                return match res {
                    Ok(()) => Ended::Released { parked: false },
                    Err(e) => {
                        debug!(%peer, error = %e, "connection ended with an error");
                        Ended::Gone
                    }
                };
            }
            Woke::Shutdown => {
                closing = true;
                Pin::new(&mut *conn).graceful_shutdown();
            }
            Woke::Tick => match clock.tick(activity) {
                Verdict::Active => {}
                Verdict::HeadTimeout => {
                    debug!(%peer, "request head not received in time; closing");
                    return Ended::Gone;
                }
                Verdict::IdleTimeout => {
                    closing = true;
                    Pin::new(&mut *conn).graceful_shutdown();
                }
                Verdict::Quiet if activity.reading_head() => {}
                Verdict::Quiet => {
                    // Between requests hyper closes at once, touching no IO. If it
                    // does not, it was busy after all: keep-alive is now off, so let
                    // that exchange finish and close.
                    Pin::new(&mut *conn).graceful_shutdown();
                    match std::future::poll_fn(|cx| Poll::Ready(conn.poll_without_shutdown(cx))).await {
                        Poll::Ready(Ok(())) => return Ended::Released { parked: true },
                        Poll::Ready(Err(e)) => {
                            debug!(%peer, error = %e, "connection ended with an error");
                            return Ended::Gone;
                        }
                        Poll::Pending => closing = true,
                    }
                }
            },
        }
    }
}

/// Closes a connection hyper let go of (TLS: with its close notification), giving a
/// client that reads nothing a second at most.
async fn close<T: Park>(mut io: T) {
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

/// What hyper had read but not used, then what it had not read yet of the earlier
/// leftover.
fn join(read: Bytes, rest: Bytes) -> Bytes {
    match (read.is_empty(), rest.is_empty()) {
        (_, true) => read,
        (true, false) => rest,
        (false, false) => {
            let mut b = BytesMut::with_capacity(read.len() + rest.len());
            b.extend_from_slice(&read);
            b.extend_from_slice(&rest);
            b.freeze()
        }
    }
}

/// A socket with bytes already read from it in front.
pub(crate) struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Bytes, inner: T) -> Rewind<T> {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The socket under hyper, telling the connection's [`Activity`] about reads and
/// writes that could not complete.
pub(super) struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> Tracked<T> {
    fn note<R>(&self, polled: Poll<R>) -> Poll<R> {
        self.activity.write_blocked(polled.is_pending());
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_rewound_socket_reads_its_prefix_then_the_socket() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut r = Rewind::new(Bytes::from_static(b"hello"), b);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn leftovers_join_in_order() {
        assert_eq!(join(Bytes::from_static(b"GET /a"), Bytes::from_static(b" HTTP")), "GET /a HTTP");
        assert_eq!(join(Bytes::new(), Bytes::from_static(b"x")), "x");
        assert_eq!(join(Bytes::from_static(b"y"), Bytes::new()), "y");
    }
}
