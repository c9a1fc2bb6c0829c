//! The HTTP/1.1 client of upstream connections, run in the request's own task.
//!
//! hyper's client drives each connection in a task of its own: a request crosses to
//! it through a channel, its response head comes back through another, and the body
//! through a third, waking one task or the other at each step. On the proxy path
//! that side was a quarter of the gateway's user-space CPU (BENCHMARKS.md, P1). Here
//! the request's task writes the request, reads the response head, and the response
//! body reads the socket when the client side asks for more. A connection whose
//! response ended cleanly goes back to its pool ([`Home`]); one dropped in the middle
//! of a response is closed.
//!
//! What it speaks (RFC 9112):
//! - requests framed by `content-length` when the body's size is known, else by
//!   `transfer-encoding: chunked`; a first piece of body already at hand leaves with
//!   the head, in one write;
//! - responses framed by method and status (HEAD, 1xx, 204, 304: no body), then a
//!   final `chunked` coding, then `content-length`, else the connection's end;
//! - interim responses (1xx) other than 101 are skipped; a 101 hands the connection,
//!   with whatever was read past its head, to the upgrade ([`UpstreamUpgrade`]);
//! - a response head is parsed by `httparse`: at most [`MAX_HEADERS`] headers and
//!   [`MAX_HEAD`] bytes. Chunked trailers become a trailers frame.
//!
//! Reading stops while the client side has not taken what was read: a body holds at
//! most [`MAX_READ`] bytes the client has not asked for.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::pool::{Outgoing, Stream};
use crate::body::{self, Body, BoxError};
use crate::listener::Rewind;

/// The largest response head (and block of chunked trailers) read.
pub(super) const MAX_HEAD: usize = 32 * 1024;
/// The most headers a response head may have.
pub(super) const MAX_HEADERS: usize = 100;
/// The room of a read: a response head's first, and a body's least.
const READ_SIZE: usize = 8 * 1024;
/// The most one read of a body asks for.
pub(super) const MAX_READ: usize = 32 * 1024;
/// The longest chunk-size line (with its extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Where a connection goes once its response has ended and it can carry another.
pub(super) trait Home: Send + Sync + 'static {
    fn take_back(self: Arc<Self>, conn: Conn);
}

/// One HTTP/1.1 connection to a target.
pub(crate) struct Conn {
    io: Stream,
    /// Read and not yet used.
    buf: BytesMut,
    /// The request head being written; kept for its capacity.
    out: Vec<u8>,
    /// The request timeout, kept from one request to the next: pushing a registered
    /// timer's deadline later is an atomic store, where a new timer goes into (and
    /// out of) the runtime's timer wheel under its lock at every request.
    timer: Option<Pin<Box<Sleep>>>,
}

/// What went wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("the connection closed before a response")]
    ClosedBeforeHead,
    #[error("the connection closed in the middle of the response body")]
    ClosedInBody,
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("the response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid content-length in the response")]
    BadLength,
    #[error("invalid chunked coding in the response body")]
    BadChunk,
    #[error("the request body's length differs from its content-length")]
    RequestLength,
}

/// A failed exchange, by how much of the request left. The head of a request that
/// was (or may have been) sent comes back when the caller asked to keep it, for a
/// retry.
pub(super) enum Failure {
    /// Nothing was written: the request comes back whole.
    NotSent { request: Outgoing, error: Error },
    /// Some or all of the request was written.
    Sent { error: Error, head: Option<Box<Parts>> },
    /// No response head within the request timeout.
    TimedOut { head: Option<Box<Parts>> },
    /// The request's own body failed while it was being sent.
    ClientBody(BoxError),
}

impl Conn {
    pub fn new(io: Stream) -> Conn {
        Conn { io, buf: BytesMut::new(), out: Vec::new(), timer: None }
    }

    /// Whether an idle connection is still open with nothing unread, checked without
    /// waiting: a target that closed it (or sent bytes nobody asked for) is found out
    /// before a request is written to it.
    pub fn is_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut probe = tokio::io::ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(&mut self.io).poll_read(&mut cx, &mut probe).is_pending()
    }

    /// Writes `req` and reads the response head, both by `deadline`. The body
    /// streams from the connection; `home` gets the connection back when the
    /// response has ended and the connection can carry another. With `keep_head`,
    /// the request's head comes back with the response or the failure: a retry
    /// needs it, and it was not consumed by being written.
    pub async fn send(
        mut self,
        req: Outgoing,
        home: Arc<dyn Home>,
        deadline: Instant,
        keep_head: bool,
    ) -> Result<(Response<ResponseBody>, Option<Box<Parts>>), Failure> {
        let Outgoing { head: mut parts, body } = req;
        let mut timer = match self.timer.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let exchanged = {
            let exchange = self.exchange(&mut parts, body);
            tokio::pin!(exchange);
            std::future::poll_fn(|cx| match exchange.as_mut().poll(cx) {
                Poll::Ready(done) => Poll::Ready(Some(done)),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
            })
            .await
        };
        self.timer = Some(timer);
        let kept = |parts: Box<Parts>| keep_head.then_some(parts);
        let (head, whole) = match exchanged {
            None => return Err(Failure::TimedOut { head: kept(parts) }),
            Some(Ok(answer)) => answer,
            Some(Err(Broke::Unsent(error, body))) => {
                return Err(Failure::NotSent { request: Outgoing { head: parts, body }, error });
            }
            Some(Err(Broke::Sent(error))) => return Err(Failure::Sent { error, head: kept(parts) }),
            Some(Err(Broke::ClientBody(error))) => return Err(Failure::ClientBody(error)),
        };
        match self.respond(&parts.method, head, whole, home) {
            Ok(resp) => Ok((resp, kept(parts))),
            Err(error) => Err(Failure::Sent { error, head: kept(parts) }),
        }
    }

    /// Writes the request and reads the final response head, and says whether the
    /// whole request went out (a target may refuse it before the body ends). `parts`
    /// (with the body's framing headers set) stay with the caller.
    async fn exchange(&mut self, parts: &mut Parts, mut body: Body) -> Result<(Head, bool), Broke> {
        let framing = request_framing(&parts.method, &mut parts.headers, &body);
        self.out.clear();
        encode_head(&mut self.out, parts);

        // A first piece of body already at hand leaves with the head.
        let mut first = None;
        let mut ended = framing == Framing::Empty;
        if !ended {
            match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => first = Some(data),
                    // Trailers at once: they go with the body's end, after the head.
                    Err(frame) => body = body::boxed(Prefixed { first: Some(frame), rest: body }),
                },
                Poll::Ready(Some(Err(e))) => return Err(Broke::ClientBody(e)),
                Poll::Ready(None) => ended = true,
                Poll::Pending => {}
            }
        }
        let sent = first.as_ref().map_or(0, |d: &Bytes| d.len() as u64);
        let mut tail = Tail::default();
        tail.frame_data(framing, sent as usize, &mut self.out);
        if ended {
            if matches!(framing, Framing::Length(n) if sent != n) {
                return Err(Broke::Sent(Error::RequestLength));
            }
            tail.end(framing, None);
        } else if matches!(framing, Framing::Length(n) if sent > n) {
            return Err(Broke::Sent(Error::RequestLength));
        }
        let mut head = self.out.as_slice().chain(first.clone().unwrap_or_default()).chain(tail.bytes());
        match write_buf(&mut self.io, &mut head).await {
            Ok(()) => {}
            Err((error, false)) => {
                let body = match first {
                    Some(data) => body::boxed(Prefixed { first: Some(Frame::data(data)), rest: body }),
                    None => body,
                };
                return Err(Broke::Unsent(error.into(), body));
            }
            Err((error, true)) => return Err(Broke::Sent(error.into())),
        }
        if !ended {
            match self.send_rest(framing, body, sent).await? {
                // Refused before the body was all sent (a 413): the rest is not sent.
                Sending::Refused(head) => return Ok((head, false)),
                Sending::Whole(Some(head)) => return Ok((head, true)),
                Sending::Whole(None) => {}
            }
        }
        Ok((self.receive().await.map_err(Broke::Sent)?, true))
    }

    /// Streams what is left of a request body after its first piece. While it waits
    /// on the body or the socket, it reads what the target sends: an error head
    /// (4xx, 5xx) that arrives first ends the sending and is returned. (A target that
    /// refuses a large upload may answer at once and stop reading; writing on would
    /// wait out the request timeout and lose its answer.) A success head is kept for
    /// after the body, which goes on: the target may answer as it reads.
    async fn send_rest(&mut self, framing: Framing, mut body: Body, mut sent: u64) -> Result<Sending, Broke> {
        let mut early = None;
        let mut trailers = None;
        loop {
            let frame = match self.watching(&mut early, |_, cx| Pin::new(&mut body).poll_frame(cx)).await? {
                Watched::Answered(head) => return Ok(Sending::Refused(head)),
                Watched::Done(None) => break,
                Watched::Done(Some(frame)) => frame.map_err(Broke::ClientBody)?,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    trailers = frame.into_trailers().ok().or(trailers);
                    continue;
                }
            };
            sent += data.len() as u64;
            if matches!(framing, Framing::Length(n) if sent > n) {
                return Err(Broke::Sent(Error::RequestLength));
            }
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            let mut tail = Tail::default();
            tail.frame_data(framing, data.len(), &mut out);
            let written =
                self.write_watching(&mut early, &mut out.as_slice().chain(data).chain(tail.bytes())).await;
            self.out = out;
            if let Some(head) = written? {
                return Ok(Sending::Refused(head));
            }
        }
        if matches!(framing, Framing::Length(n) if sent != n) {
            return Err(Broke::Sent(Error::RequestLength));
        }
        let mut tail = Tail::default();
        tail.end(framing, trailers.as_ref());
        Ok(match self.write_watching(&mut early, &mut tail.bytes()).await? {
            Some(head) => Sending::Refused(head),
            None => Sending::Whole(early),
        })
    }

    /// Writes all of `buf` and flushes it, reading what the target sends meanwhile;
    /// an error head that arrives first is returned.
    async fn write_watching(
        &mut self,
        early: &mut Option<Head>,
        buf: &mut impl Buf,
    ) -> Result<Option<Head>, Broke> {
        while buf.has_remaining() {
            match self.watching(early, |io, cx| poll_write_buf(io, cx, buf)).await? {
                Watched::Answered(head) => return Ok(Some(head)),
                Watched::Done(Ok(0)) => {
                    return Err(Broke::Sent(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                Watched::Done(Ok(n)) => buf.advance(n),
                Watched::Done(Err(e)) => return Err(Broke::Sent(e.into())),
            }
        }
        match self.watching(early, |io, cx| Pin::new(io).poll_flush(cx)).await? {
            Watched::Answered(head) => Ok(Some(head)),
            Watched::Done(done) => done.map(|()| None).map_err(|e| Broke::Sent(e.into())),
        }
    }

    /// Polls `op` and, while it waits, reads from the target: done, or answered by an
    /// error head first. Interim (1xx) heads are passed over; a success head is kept
    /// in `early` and reading stops; a target that closes is left for the op (a write
    /// then fails) or for [`Conn::receive`].
    async fn watching<T>(
        &mut self,
        early: &mut Option<Head>,
        mut op: impl FnMut(&mut Stream, &mut Context<'_>) -> Poll<T>,
    ) -> Result<Watched<T>, Broke> {
        let mut closed = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = op(&mut self.io, cx) {
                return Poll::Ready(Ok(Watched::Done(done)));
            }
            while !closed && early.is_none() && self.buf.len() < MAX_HEAD {
                match self.poll_fill(cx, READ_SIZE) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(0) | Err(_)) => closed = true,
                    Poll::Ready(Ok(_)) => loop {
                        match parse_head(&mut self.buf) {
                            Ok(Some(head)) if head.status.is_informational() => continue,
                            Ok(Some(head))
                                if head.status.is_client_error() || head.status.is_server_error() =>
                            {
                                return Poll::Ready(Ok(Watched::Answered(head)));
                            }
                            Ok(Some(head)) => {
                                *early = Some(head);
                                break;
                            }
                            Ok(None) => break,
                            Err(e) => return Poll::Ready(Err(Broke::Sent(e))),
                        }
                    },
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Reads the final response head, skipping interim ones.
    async fn receive(&mut self) -> Result<Head, Error> {
        loop {
            // Nothing to parse before the first read (the usual case: the request
            // just went out).
            if !self.buf.is_empty()
                && let Some(head) = parse_head(&mut self.buf)?
            {
                if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
                    continue;
                }
                return Ok(head);
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(Error::HeadTooLarge);
            }
            let room = READ_SIZE.min(MAX_HEAD - self.buf.len());
            if std::future::poll_fn(|cx| self.poll_fill(cx, room)).await? == 0 {
                return Err(Error::ClosedBeforeHead);
            }
        }
    }

    /// The response for `head`, with its body set up to read from this connection
    /// (which goes `home` after it, unless the request was not sent `whole`).
    fn respond(
        mut self,
        method: &Method,
        head: Head,
        whole: bool,
        home: Arc<dyn Home>,
    ) -> Result<Response<ResponseBody>, Error> {
        let Head { status, version, headers, named } = head;
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let io = Rewind::new(self.buf.split().freeze(), self.io);
            resp.extensions_mut().insert(UpstreamUpgrade(Arc::new(Mutex::new(Some(io)))));
            *resp.headers_mut() = headers;
            return Ok(resp);
        }
        let decode = response_framing(method, status, &headers, named)?;
        // Both framings at once: the length was a lie; do not trust what follows.
        let both = named.transfer_encoding && named.content_length;
        let reusable =
            whole && keeps_alive(version, &headers, named) && !matches!(decode, Decode::Close) && !both;
        *resp.headers_mut() = headers;
        let mut body = ResponseBody {
            conn: Some(self),
            decode,
            home: reusable.then_some(home),
            read_size: READ_SIZE,
            delivered: false,
            failed: None,
        };
        if body.decode.is_done() {
            body.finish();
        } else {
            *resp.body_mut() = body;
        }
        Ok(resp)
    }

    /// Reads more into the buffer, with at least about `room` bytes of space.
    fn poll_fill(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < room / 2 {
            self.buf.reserve(room);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// How an exchange broke, before [`Conn::send`] says it with the request's head.
enum Broke {
    /// Nothing was written: the body (whole again) comes back.
    Unsent(Error, Body),
    Sent(Error),
    ClientBody(BoxError),
}

/// How the rest of a request body went out ([`Conn::send_rest`]).
enum Sending {
    /// All of it; with the target's success head, when it came meanwhile.
    Whole(Option<Head>),
    /// The target answered with an error first, and the rest was not sent.
    Refused(Head),
}

/// What [`Conn::watching`] saw first.
enum Watched<T> {
    /// The operation finished.
    Done(T),
    /// The target's final response head arrived first.
    Answered(Head),
}

/// Writes all of `buf` and flushes it (TLS keeps records until then); on failure,
/// says whether any of it was written.
async fn write_buf(io: &mut Stream, buf: &mut impl Buf) -> Result<(), (io::Error, bool)> {
    let total = buf.remaining();
    while buf.has_remaining() {
        match std::future::poll_fn(|cx| poll_write_buf(io, cx, buf)).await {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), buf.remaining() < total)),
            Ok(n) => buf.advance(n),
            Err(e) => return Err((e, buf.remaining() < total)),
        }
    }
    io.flush().await.map_err(|e| (e, true))
}

/// One vectored write of what `buf` holds (up to four of its pieces).
fn poll_write_buf(io: &mut Stream, cx: &mut Context<'_>, buf: &impl Buf) -> Poll<io::Result<usize>> {
    let mut slices = [io::IoSlice::new(&[]); 4];
    let n = buf.chunks_vectored(&mut slices);
    Pin::new(io).poll_write_vectored(cx, &slices[..n])
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// Sets the request's framing headers from its body, as the body will be sent.
fn request_framing(method: &Method, headers: &mut HeaderMap, body: &Body) -> Framing {
    headers.remove(TRANSFER_ENCODING);
    if body.is_end_stream() {
        // A method whose request usually has a body says it has none.
        let expects_body = !matches!(
            *method,
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE | Method::CONNECT
        );
        if expects_body {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        } else {
            headers.remove(CONTENT_LENGTH);
        }
        return Framing::Empty;
    }
    match body.size_hint().exact() {
        Some(n) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
            Framing::Length(n)
        }
        None => {
            headers.remove(CONTENT_LENGTH);
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            Framing::Chunked
        }
    }
}

/// The request line and headers, in origin form (the pool prepared the URI).
fn encode_head(out: &mut Vec<u8>, parts: &Parts) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() { b"/" } else { target.as_bytes() });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(out, &parts.headers);
    out.extend_from_slice(b"\r\n");
}

/// Header (or trailer) lines, each `name: value` and CRLF.
fn write_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Chunked framing around pieces of request body: a chunk's size line goes at the end
/// of the buffer written before the data (the head, or nothing), the rest after it.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn frame_data(&mut self, framing: Framing, len: usize, before: &mut Vec<u8>) {
        if framing == Framing::Chunked && len > 0 {
            let _ = write!(before, "{len:x}\r\n");
            self.bytes.extend_from_slice(b"\r\n");
        }
    }

    /// The end of the body: the last chunk and the trailers.
    fn end(&mut self, framing: Framing, trailers: Option<&HeaderMap>) {
        if framing == Framing::Chunked {
            self.bytes.extend_from_slice(b"0\r\n");
            if let Some(trailers) = trailers {
                write_fields(&mut self.bytes, trailers);
            }
            self.bytes.extend_from_slice(b"\r\n");
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A response head.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    named: Named,
}

/// Which of the fields that frame a response and decide the connection's reuse the
/// head has: noted while its fields are parsed, so that a response without them is
/// not searched for them (a lookup in the map is ~100 instructions).
#[derive(Debug, Default, Clone, Copy)]
struct Named {
    transfer_encoding: bool,
    content_length: bool,
    connection: bool,
}

impl Named {
    fn note(&mut self, name: &HeaderName) {
        self.transfer_encoding |= name == TRANSFER_ENCODING;
        self.content_length |= name == CONTENT_LENGTH;
        self.connection |= name == CONNECTION;
    }

    #[cfg(test)]
    fn scan(headers: &HeaderMap) -> Named {
        let mut named = Named::default();
        headers.keys().for_each(|name| named.note(name));
        named
    }
}

/// Parses a complete head off the front of `buf`; `None` while it is incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Error> {
    // Where each name and value lie in the head (which fits in `u16` offsets: it is at
    // most `MAX_HEAD` long, plus one read), to slice them once it is split off.
    const _: () = assert!(MAX_HEAD + READ_SIZE <= u16::MAX as usize);
    let mut spans = [[0u16; 4]; MAX_HEADERS];
    let (len, code, minor, count) = {
        // Uninitialised: filling 100 slots for every response costs more than parsing.
        let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(Error::Parse(e)),
        };
        let start = buf.as_ptr() as usize;
        let offset = |p: *const u8| u16::try_from(p as usize - start).unwrap_or(u16::MAX);
        for (span, h) in spans.iter_mut().zip(parsed.headers.iter()) {
            let (name, value) = (offset(h.name.as_ptr()), offset(h.value.as_ptr()));
            *span = [name, name + h.name.len() as u16, value, value + h.value.len() as u16];
        }
        (len, parsed.code.unwrap_or(0), parsed.version.unwrap_or(1), parsed.headers.len())
    };
    let status = StatusCode::from_u16(code).map_err(|_| Error::Parse(httparse::Error::Status))?;
    let version = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let head = buf.split_to(len).freeze();
    // Room for what the gateway adds to a response (its request id, a cache status, a
    // plugin's headers) without growing the map.
    let mut headers = HeaderMap::with_capacity(count + 4);
    let mut named = Named::default();
    for &[ns, ne, vs, ve] in &spans[..count] {
        let (ns, ne, vs, ve) = (usize::from(ns), usize::from(ne), usize::from(vs), usize::from(ve));
        let name =
            HeaderName::from_bytes(&head[ns..ne]).map_err(|_| Error::Parse(httparse::Error::HeaderName))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| Error::Parse(httparse::Error::HeaderValue))?;
        named.note(&name);
        headers.append(name, value);
    }
    Ok(Some(Head { status, version, headers, named }))
}

/// How a response body is delimited (RFC 9112 §6.3), and how much of it is left.
#[derive(Debug)]
enum Decode {
    Length(u64),
    Chunked(Chunk),
    /// Until the connection's end.
    Close,
    Done,
}

impl Decode {
    fn is_done(&self) -> bool {
        matches!(self, Decode::Done | Decode::Length(0))
    }
}

fn response_framing(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    named: Named,
) -> Result<Decode, Error> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Decode::Done);
    }
    if named.transfer_encoding
        && let Some(te) = headers.get_all(TRANSFER_ENCODING).iter().next_back()
    {
        let last = te.as_bytes().rsplit(|&b| b == b',').next().unwrap_or_default();
        return Ok(if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Decode::Chunked(Chunk::Size)
        } else {
            Decode::Close
        });
    }
    let mut length = None;
    if !named.content_length {
        return Ok(Decode::Close);
    }
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(Error::BadLength);
            }
            let n: u64 =
                std::str::from_utf8(item).ok().and_then(|s| s.parse().ok()).ok_or(Error::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::BadLength);
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Decode::Close, Decode::Length))
}

/// Whether the connection stays open after this response.
fn keeps_alive(version: Version, headers: &HeaderMap, named: Named) -> bool {
    if !named.connection {
        return version != Version::HTTP_10;
    }
    let has = |token: &[u8]| {
        headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token)))
    };
    if version == Version::HTTP_10 { has(b"keep-alive") } else { !has(b"close") }
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, with this much left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailers, then an empty line.
    Trailers,
    /// After the trailers and the empty line.
    Over,
}

/// One step of decoding what is buffered.
#[derive(Debug)]
enum Step {
    Frame(Frame<Bytes>),
    NeedMore,
    End,
}

impl Decode {
    /// Decodes the next frame out of `buf`.
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        match self {
            Decode::Done | Decode::Length(0) => {
                *self = Decode::Done;
                Ok(Step::End)
            }
            Decode::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                Ok(Step::Frame(Frame::data(buf.split_to(n).freeze())))
            }
            Decode::Close if buf.is_empty() => Ok(Step::NeedMore),
            Decode::Close => Ok(Step::Frame(Frame::data(buf.split().freeze()))),
            Decode::Chunked(at) => {
                let step = chunk_step(at, buf)?;
                if matches!(step, Step::End) {
                    *self = Decode::Done;
                }
                Ok(step)
            }
        }
    }
}

fn chunk_step(at: &mut Chunk, buf: &mut BytesMut) -> Result<Step, Error> {
    loop {
        match *at {
            Chunk::Size => {
                let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                    return if buf.len() > MAX_CHUNK_LINE {
                        Err(Error::BadChunk)
                    } else {
                        Ok(Step::NeedMore)
                    };
                };
                let size = chunk_size(&buf[..=end])?;
                buf.advance(end + 1);
                *at = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let rest = left - n as u64;
                *at = if rest == 0 { Chunk::DataEnd } else { Chunk::Data(rest) };
                return Ok(Step::Frame(Frame::data(buf.split_to(n).freeze())));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Error::BadChunk);
                }
                buf.advance(2);
                *at = Chunk::Size;
            }
            Chunk::Trailers => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    return Ok(Step::End);
                }
                // The block of trailers ends with the body's final empty line.
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return if buf.len() > MAX_HEAD { Err(Error::BadChunk) } else { Ok(Step::NeedMore) };
                };
                let block = buf.split_to(end + 4);
                *at = Chunk::Over;
                return Ok(Step::Frame(Frame::trailers(parse_trailers(&block)?)));
            }
            Chunk::Over => return Ok(Step::End),
        }
    }
}

fn parse_trailers(block: &[u8]) -> Result<HeaderMap, Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(block, &mut slots) else {
        return Err(Error::BadChunk);
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Error::BadChunk)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| Error::BadChunk)?;
        map.append(name, value);
    }
    Ok(map)
}

/// A chunk-size line's size: hex digits, optional extensions (ignored), CRLF.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let line = line.strip_suffix(b"\r\n").ok_or(Error::BadChunk)?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(Error::BadChunk);
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";")) || rest.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(Error::BadChunk);
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| Error::BadChunk)?;
    u64::from_str_radix(hex, 16).map_err(|_| Error::BadChunk)
}

/// A response body read from its connection as it is polled.
pub(crate) struct ResponseBody {
    /// The connection, until the body ends.
    conn: Option<Conn>,
    decode: Decode,
    /// Where the connection goes once this body has ended; none when it cannot carry
    /// another request.
    home: Option<Arc<dyn Home>>,
    /// The next read's room: doubled up to [`MAX_READ`] while reads fill it.
    read_size: usize,
    /// The last poll gave a frame (and nothing was waited for since).
    delivered: bool,
    /// A failure held back for one poll, so that what came before it is sent on first.
    failed: Option<Error>,
}

impl ResponseBody {
    fn empty() -> ResponseBody {
        ResponseBody {
            conn: None,
            decode: Decode::Done,
            home: None,
            read_size: 0,
            delivered: false,
            failed: None,
        }
    }

    /// The body has ended: the connection goes home, if it can carry another request.
    fn finish(&mut self) {
        self.decode = Decode::Done;
        let conn = self.conn.take();
        if let (Some(conn), Some(home)) = (conn, self.home.take())
            && conn.buf.is_empty()
        {
            home.take_back(conn);
        }
    }

    /// The body failed: the connection is closed. Right after a frame, the failure
    /// waits one poll (the task is woken at once), so the client side sends on what
    /// it has before the error cuts its connection: a client keeps every byte the
    /// target sent.
    fn fail(&mut self, error: Error, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.decode = Decode::Done;
        if std::mem::take(&mut self.delivered) {
            self.failed = Some(error);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(error.into())))
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(error) = this.failed.take() {
            return Poll::Ready(Some(Err(error.into())));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match this.decode.step(&mut conn.buf) {
                Ok(Step::Frame(frame)) => {
                    if this.decode.is_done() {
                        this.finish();
                    }
                    this.delivered = true;
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => return this.fail(e, cx),
            }
            let room = this.read_size;
            let filled = conn.poll_fill(cx, room);
            if filled.is_pending() {
                this.delivered = false;
            }
            match ready!(filled) {
                Ok(0) if matches!(this.decode, Decode::Close) => {
                    this.conn = None;
                    this.decode = Decode::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::ClosedInBody, cx),
                Ok(n) => {
                    if n >= room {
                        this.read_size = (room * 2).min(MAX_READ);
                    }
                }
                Err(e) => return this.fail(Error::Io(e), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && (self.conn.is_none() || self.decode.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The upstream side of a `101 Switching Protocols`, in the response's extensions:
/// the connection, with what was read past the head in front.
#[derive(Clone)]
pub(crate) struct UpstreamUpgrade(Arc<Mutex<Option<Rewind<Stream>>>>);

impl UpstreamUpgrade {
    /// The switched connection of `resp`, once.
    pub(crate) fn take<B>(resp: &mut Response<B>) -> Option<Rewind<Stream>> {
        resp.extensions_mut().remove::<UpstreamUpgrade>()?.0.lock().ok()?.take()
    }
}

/// A request body whose first frame was taken, whole again.
struct Prefixed {
    first: Option<Frame<Bytes>>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this.first.take() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut this.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self.first.as_ref().and_then(Frame::data_ref).map_or(0, |d| d.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + first);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes: the data, the trailers, and
    /// whether the body ended.
    fn decode_in_pieces(
        mut decode: Decode,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool), Error> {
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        let mut pieces = wire.chunks(step);
        loop {
            match decode.step(&mut buf)? {
                Step::Frame(f) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Step::End => return Ok((data, trailers, true)),
                Step::NeedMore => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => return Ok((data, trailers, false)),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_reads_cut() {
        let wire = b"5;ext=1\r\nhello\r\n7 ; a=\"b\"\r\n, world\r\n0\r\nx-sum: 12\r\nx-more: yes\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, trailers, ended) = decode_in_pieces(Decode::Chunked(Chunk::Size), wire, step).unwrap();
            assert_eq!(data, b"hello, world", "step {step}");
            assert!(ended, "step {step}");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-sum"], "12");
            assert_eq!(trailers["x-more"], "yes");
        }
        let (data, trailers, ended) =
            decode_in_pieces(Decode::Chunked(Chunk::Size), b"3\r\nabc\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!((data.as_slice(), trailers.is_none(), ended), (&b"abc"[..], true, true));
        // Cut short: not ended, and what came so far is handed on.
        let (data, _, ended) = decode_in_pieces(Decode::Chunked(Chunk::Size), b"a\r\n01234", 2).unwrap();
        assert_eq!((data.as_slice(), ended), (&b"01234"[..], false));
    }

    #[test]
    fn bad_chunked_coding_is_an_error() {
        for wire in [
            &b"\r\n"[..],
            b"zz\r\n",
            b"12345678901234567\r\n",
            b"5\n",
            b"5 x\r\n",
            b"3\r\nabcXY",
            b"0\r\nnot a header\r\n\r\n",
        ] {
            let got = decode_in_pieces(Decode::Chunked(Chunk::Size), wire, 1);
            assert!(matches!(got, Err(Error::BadChunk)), "{:?}: {got:?}", String::from_utf8_lossy(wire));
        }
        let long = [b'1'; MAX_CHUNK_LINE + 2];
        assert!(matches!(decode_in_pieces(Decode::Chunked(Chunk::Size), &long, 64), Err(Error::BadChunk)));
    }

    #[test]
    fn length_and_close_delimited_bodies() {
        let (data, _, ended) = decode_in_pieces(Decode::Length(5), b"hello", 2).unwrap();
        assert_eq!((data.as_slice(), ended), (&b"hello"[..], true));
        let (data, _, ended) = decode_in_pieces(Decode::Close, b"until the end", 4).unwrap();
        assert_eq!((data.as_slice(), ended), (&b"until the end"[..], false));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let ok = StatusCode::OK;
        let framing = |m: Method, s: StatusCode, h: &[(&str, &str)]| {
            let h = headers(h);
            response_framing(&m, s, &h, Named::scan(&h))
        };
        assert!(matches!(framing(Method::HEAD, ok, &[("content-length", "9")]), Ok(Decode::Done)));
        assert!(matches!(framing(Method::GET, StatusCode::NO_CONTENT, &[]), Ok(Decode::Done)));
        assert!(matches!(
            framing(Method::GET, StatusCode::NOT_MODIFIED, &[("content-length", "9")]),
            Ok(Decode::Done)
        ));
        let chunked =
            framing(Method::GET, ok, &[("transfer-encoding", "gzip, chunked"), ("content-length", "3")]);
        assert!(matches!(chunked, Ok(Decode::Chunked(Chunk::Size))));
        assert!(matches!(
            framing(Method::GET, ok, &[("transfer-encoding", "chunked, gzip")]),
            Ok(Decode::Close)
        ));
        assert!(matches!(framing(Method::GET, ok, &[("content-length", "42")]), Ok(Decode::Length(42))));
        assert!(matches!(framing(Method::GET, ok, &[("content-length", "7, 7")]), Ok(Decode::Length(7))));
        for bad in ["7, 8", "+7", "-1", "", "0x10", "99999999999999999999"] {
            assert!(
                matches!(framing(Method::GET, ok, &[("content-length", bad)]), Err(Error::BadLength)),
                "{bad}"
            );
        }
        let twice = framing(Method::GET, ok, &[("content-length", "7"), ("content-length", "8")]);
        assert!(matches!(twice, Err(Error::BadLength)));
        assert!(matches!(framing(Method::GET, ok, &[]), Ok(Decode::Close)));
    }

    #[test]
    fn keep_alive_by_version_and_connection_tokens() {
        let alive = |v: Version, h: &[(&str, &str)]| {
            let h = headers(h);
            keeps_alive(v, &h, Named::scan(&h))
        };
        assert!(alive(Version::HTTP_11, &[]));
        assert!(!alive(Version::HTTP_11, &[("connection", "foo, Close")]));
        assert!(!alive(Version::HTTP_10, &[]));
        assert!(alive(Version::HTTP_10, &[("connection", "keep-alive")]));
    }

    /// The head notes the framing and connection fields it has, whatever their case,
    /// and only those.
    #[test]
    fn a_parsed_head_notes_its_framing_fields() {
        let named = |text: &str| {
            let mut buf = BytesMut::from(text);
            parse_head(&mut buf).expect("a valid head").expect("a whole head").named
        };
        let n = named("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCONNECTION: close\r\n\r\n");
        assert!(n.transfer_encoding && n.connection && !n.content_length, "{n:?}");
        let n = named("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-connection: close\r\n\r\nabc");
        assert!(!n.transfer_encoding && !n.connection && n.content_length, "{n:?}");
    }

    #[test]
    fn request_framing_from_the_body() {
        let mut h = headers(&[("content-length", "3"), ("transfer-encoding", "chunked")]);
        assert_eq!(request_framing(&Method::GET, &mut h, &body::empty()), Framing::Empty);
        assert!(h.is_empty());
        let mut h = HeaderMap::new();
        assert_eq!(request_framing(&Method::POST, &mut h, &body::empty()), Framing::Empty);
        assert_eq!(h["content-length"], "0");
        let mut h = HeaderMap::new();
        assert_eq!(request_framing(&Method::PUT, &mut h, &body::full("abc")), Framing::Length(3));
        assert_eq!(h["content-length"], "3");
        let stream = body::boxed(http_body_util::StreamBody::new(unknown_length()));
        let mut h = headers(&[("content-length", "3")]);
        assert_eq!(request_framing(&Method::POST, &mut h, &stream), Framing::Chunked);
        assert_eq!(h["transfer-encoding"], "chunked");
        assert!(!h.contains_key("content-length"));
    }

    /// A body of unknown length.
    fn unknown_length() -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static {
        futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"abc")))])
    }

    #[test]
    fn heads_parse_once_complete_and_leave_the_rest() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n"[..]);
        assert!(parse_head(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"x-a: 2\r\n\r\nhi");
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!((head.status, head.version), (StatusCode::OK, Version::HTTP_11));
        assert_eq!(head.headers["content-length"], "2");
        assert_eq!(head.headers.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(&buf[..], b"hi");
        let mut bad = BytesMut::from(&b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n"[..]);
        assert!(matches!(parse_head(&mut bad), Err(Error::Parse(_))));
        let mut many = BytesMut::from(&b"HTTP/1.0 200 OK\r\n"[..]);
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse_head(&mut many), Err(Error::Parse(httparse::Error::TooManyHeaders))));
    }

    #[test]
    fn request_heads_are_written_in_origin_form() {
        let req = http::Request::builder()
            .method(Method::PATCH)
            .uri("/a/b?c=d")
            .header("host", "up.example")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        encode_head(&mut out, &parts);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PATCH /a/b?c=d HTTP/1.1\r\nhost: up.example\r\nx-two: 1\r\nx-two: 2\r\n\r\n"
        );
    }
}
