//! The access log: one event per request, emitted when the response body ends, so it
//! carries the real byte count and total duration.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};

/// What the access log line says about one request; filled in along the way.
#[derive(Debug)]
pub struct AccessRecord {
    /// When the request arrived.
    pub started: Instant,
    /// The listener the request came in on.
    pub listener: Arc<crate::listener::ListenerSpec>,
    /// The snapshot serving the request (names routes without copying them).
    pub snapshot: Arc<crate::snapshot::Snapshot>,
    /// Client address.
    pub peer: SocketAddr,
    /// Request method.
    pub method: Method,
    /// Request path (no query).
    pub path: String,
    /// HTTP version.
    pub version: http::Version,
    /// Request id.
    pub request_id: HeaderValue,
    /// Index of the matched route in `snapshot.routes`, if any.
    pub route: Option<usize>,
    /// Upstream target that answered, if any.
    pub upstream: Option<Arc<str>>,
    /// The consumer an authentication plugin identified, if any.
    pub consumer: Option<String>,
    /// Fields plugins attached (`log.annotate`); read when the line is written, so
    /// annotations made while the body streamed are included.
    pub annotations: Option<crate::plugins::Annotations>,
    /// Error code when the gateway answered with an error.
    pub error: Option<&'static str>,
    /// Response status.
    pub status: StatusCode,
    /// Time until the response head was ready.
    pub head_micros: u64,
}

impl AccessRecord {
    /// The matched route's name, or `-`.
    pub fn route_name(&self) -> &str {
        self.route.and_then(|i| self.snapshot.routes.get(i)).map_or("-", |r| r.name.as_str())
    }

    fn emit(&self, bytes_out: u64, completed: bool) {
        let duration_us = self.started.elapsed().as_micros() as u64;
        tracing::info!(
            target: "sluice::access",
            request_id = self.request_id.to_str().unwrap_or_default(),
            listener = self.listener.name.as_str(),
            client = %self.peer.ip(),
            method = self.method.as_str(),
            path = self.path.as_str(),
            version = ?self.version,
            route = self.route_name(),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            consumer = self.consumer.as_deref().unwrap_or("-"),
            annotations = %self.annotations.as_ref().map_or_else(String::new, ToString::to_string),
            status = self.status.as_u16(),
            error = self.error.unwrap_or("-"),
            bytes_out,
            head_us = self.head_micros,
            duration_us,
            completed,
        );
    }
}

pin_project_lite::pin_project! {
    /// A response body that writes the access log line when it ends or is dropped.
    pub struct Logged {
        #[pin]
        inner: Body,
        record: Option<Box<AccessRecord>>,
        bytes: u64,
    }

    impl PinnedDrop for Logged {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                let completed = this.inner.is_end_stream();
                record.emit(*this.bytes, completed);
            }
        }
    }
}

impl Logged {
    /// Wraps `inner`; the record is emitted once.
    pub fn new(inner: Body, record: AccessRecord) -> Self {
        Self { inner, record: Some(Box::new(record)), bytes: 0 }
    }
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    *this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(record) = this.record.take() {
                    record.emit(*this.bytes, true);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
