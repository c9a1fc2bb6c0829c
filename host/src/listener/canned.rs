//! The HTTP/1 parser's own error responses, given the gateway's JSON body.
//!
//! When hyper cannot parse a request head (a bad method, target or header, a head
//! too large) it answers by itself, before any request reaches the proxy, with an
//! empty `400`/`414`/`431` and closes the connection. [`CannedErrors`] wraps the
//! connection's socket and swaps that one write for the gateway's documented error:
//! the same status, `{"error": {…}}` with a fresh request id, `connection: close`.
//!
//! It recognises the parser's answer by what no other response has: an error status,
//! an empty body, and no request id header (every response that went through the
//! proxy carries one). Everything else passes through untouched, without copying.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderName;
use hyper::rt::{Read, ReadBufCursor, Write};

use crate::error::{ProxyError, error_json};

/// A connection whose parser error answers get a JSON body.
pub struct CannedErrors<I> {
    inner: I,
    id_header: HeaderName,
    limits: (u64, u64),
    /// The replacement still to be written, and how much of it is.
    pending: Option<(Vec<u8>, usize)>,
}

impl<I> CannedErrors<I> {
    /// Wraps `inner`; responses are told apart by `id_header` (the listener's request
    /// id header), and the limits (`max_uri_bytes`, `max_header_bytes`) go in the
    /// error messages.
    pub fn new(inner: I, id_header: HeaderName, max_uri_bytes: u64, max_header_bytes: u64) -> Self {
        Self { inner, id_header, limits: (max_uri_bytes, max_header_bytes), pending: None }
    }

    /// The connection underneath (a replacement not yet written is dropped: the
    /// parser closes the connection after its error answer anyway).
    pub fn into_inner(self) -> I {
        self.inner
    }

    /// The JSON response to write instead of `buf`, if `buf` is a parser error answer.
    fn replacement(&self, buf: &[u8]) -> Option<Vec<u8>> {
        let head = buf.strip_prefix(b"HTTP/1.1 ").or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
        let code = match head.get(..4)? {
            b"400 " => 400,
            b"414 " => 414,
            b"431 " => 431,
            _ => return None,
        };
        // The whole head and nothing after it, an empty body, no request id.
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        if end != buf.len() {
            return None;
        }
        let text = std::str::from_utf8(&buf[..end]).ok()?.to_ascii_lowercase();
        let id_line = format!("\r\n{}:", self.id_header.as_str());
        if text.contains(&id_line) || !text.contains("\r\ncontent-length: 0\r\n") {
            return None;
        }
        let err = match code {
            400 => ProxyError::BadRequest("the request could not be parsed"),
            414 => ProxyError::UriTooLong { limit: self.limits.0 },
            431 => ProxyError::HeadersTooLarge { limit: self.limits.1 },
            _ => return None,
        };
        let id = crate::proxy::headers::new_request_id();
        let body = error_json(&err, &id);
        let reason = err.status().canonical_reason().unwrap_or("");
        let mut out = format!(
            "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{}: {}\r\n\r\n",
            body.len(),
            self.id_header.as_str(),
            id.to_str().unwrap_or_default(),
        )
        .into_bytes();
        out.extend_from_slice(&body);
        Some(out)
    }
}

impl<I: Write + Unpin> CannedErrors<I> {
    /// Writes what is left of a replacement; ready once it is all out.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: Read + Unpin> Read for CannedErrors<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: Write + Unpin> Write for CannedErrors<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        // Error answers are short; only those are looked at.
        if buf.len() < 512
            && let Some(replacement) = this.replacement(buf)
        {
            this.pending = Some((replacement, 0));
            let _ = this.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        // A parser error answer is one non-empty slice (looked at without allocating:
        // this runs on every vectored write of the connection).
        let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (non_empty.next(), non_empty.next())
            && only.len() < 512
            && let Some(replacement) = this.replacement(only)
        {
            this.pending = Some((replacement, 0));
            let _ = this.drain(cx)?;
            return Poll::Ready(Ok(only.len()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap() -> CannedErrors<()> {
        CannedErrors::new((), HeaderName::from_static("x-request-id"), 8192, 16384)
    }

    #[test]
    fn the_parsers_empty_errors_are_replaced() {
        let w = wrap();
        let out = w.replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"), "{text}");
        assert!(text.contains("\"code\":\"bad_request\""), "{text}");
        let out = w.replacement(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n");
        assert!(String::from_utf8(out.unwrap()).unwrap().contains("headers_too_large"));
    }

    #[test]
    fn responses_that_went_through_the_proxy_are_left_alone() {
        let w = wrap();
        // An upstream's empty 400 carries the request id.
        assert!(
            w.replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: a\r\n\r\n")
                .is_none()
        );
        // A body, a success, a head without its end.
        assert!(w.replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}").is_none());
        assert!(w.replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(w.replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n").is_none());
    }
}
