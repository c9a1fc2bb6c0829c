//! The end of a request: when its response body ends (or is dropped), its route's
//! metrics are counted and, when enabled, one access-log event is emitted, so both
//! carry the real byte count and total duration.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::exchange::Exchange;
use crate::observability::call_log::Call;
use crate::observability::metrics::Finished;
use crate::observability::trace::{Ended, id_hex};
use crate::snapshot::Snapshot;

/// A request's record waiting for work of the request that outlives its response
/// body: a streamed response's last chunk call, run after the client left. The record
/// is finished when the last holder lets go.
#[derive(Debug, Default)]
pub struct Hold(std::sync::Mutex<Option<(Box<Exchange>, u64, bool)>>);

impl Drop for Hold {
    fn drop(&mut self) {
        let held = self.0.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some((record, bytes, completed)) = held {
            record.finish(bytes, completed);
        }
    }
}

/// What a request's end measured: how long it took and what its bodies carried.
struct Totals {
    duration: std::time::Duration,
    bytes_in: u64,
    bytes_out: u64,
}

/// Whether [`Exchange::finish`] writes anything that names the request's path: its
/// trace span, its call-log record, its access-log line. The exchange keeps a copy of
/// the path only then.
pub(crate) fn records_path(snapshot: &Snapshot) -> bool {
    snapshot.tracer.is_some()
        || snapshot.call_log.is_some()
        || snapshot.config.config.server.access_log.enabled
}

/// The end of an exchange.
impl Exchange {
    /// Finishes the request: counts it in its route's metrics, ends its span, queues
    /// it for the call log and writes its access-log line (each when on).
    fn finish(&self, bytes_out: u64, completed: bool) {
        let totals = Totals {
            duration: self.started.elapsed(),
            bytes_in: self.body.as_ref().map_or(0, |b| b.received()),
            bytes_out,
        };
        self.listener.metrics.request_ended();
        self.count(&totals);
        if let Some(t) = &self.trace {
            t.end(&Ended {
                method: self.method.as_str(),
                path: &self.path,
                listener: self.listener.name.as_str(),
                route: self.matched_route(),
                status: self.status.as_u16(),
                consumer: self.consumer_name(),
                upstream: self.upstream.as_deref(),
                error: self.error,
                request_id: self.request_id.to_str().unwrap_or_default(),
                client: self.peer.ip(),
            });
        }
        if let Some(log) = &self.snapshot.call_log {
            log.record(self.call(&totals));
        }
        if self.snapshot.config.config.server.access_log.enabled {
            self.log(&totals, completed);
        }
    }

    fn count(&self, totals: &Totals) {
        let Some(served) = &self.served else { return };
        let m = served.metrics(self.route);
        m.finish(Finished {
            method: &self.method,
            status: self.status.as_u16(),
            duration: totals.duration,
            request_bytes: totals.bytes_in,
            response_bytes: totals.bytes_out,
        });
        if let Some(took) = self.upstream_took {
            m.upstream_answered(took);
        }
    }

    fn log(&self, totals: &Totals, completed: bool) {
        let trace_id = self.trace.as_ref().map(|t| id_hex(&t.trace_id));
        tracing::info!(
            target: "sluice::access",
            request_id = self.request_id.to_str().unwrap_or_default(),
            trace_id = trace_id.as_deref().unwrap_or("-"),
            listener = self.listener.name.as_str(),
            client = %self.peer.ip(),
            method = self.method.as_str(),
            path = self.path.as_str(),
            version = ?self.version,
            route = self.route_name(),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            consumer = self.consumer_name().unwrap_or("-"),
            cache = self.cache.unwrap_or("-"),
            annotations = %self.annotations.as_ref().map_or_else(String::new, ToString::to_string),
            status = self.status.as_u16(),
            error = self.error.unwrap_or("-"),
            bytes_out = totals.bytes_out,
            head_us = self.head_micros,
            duration_us = totals.duration.as_micros() as u64,
            completed,
        );
    }

    /// The call log's record of this request.
    fn call(&self, totals: &Totals) -> Call {
        let note = |key: &str| self.annotations.as_ref().and_then(|a| a.find(key));
        let arrived = std::time::SystemTime::now() - totals.duration;
        Call {
            time_ms: arrived
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            request_id: self.request_id.to_str().unwrap_or_default().to_owned(),
            trace: self.trace.as_ref().map(|t| (t.trace_id, t.span_id)),
            listener: self.listener.name.as_str().to_owned(),
            route: self.matched_route().map(str::to_owned),
            consumer: self.consumer_name().map(str::to_owned),
            method: self.method.as_str().to_owned(),
            path: self.path.clone(),
            status: self.status.as_u16(),
            error: self.error.map(str::to_owned),
            duration_us: totals.duration.as_micros() as u64,
            upstream: self.upstream.as_deref().map(str::to_owned),
            client: self.peer.ip().to_string(),
            bytes_in: totals.bytes_in,
            bytes_out: totals.bytes_out,
            model: note("model"),
            tokens_in: note("tokens_in").and_then(|v| v.parse().ok()),
            tokens_out: note("tokens_out").and_then(|v| v.parse().ok()),
            cost: note("cost").and_then(|v| v.parse().ok()),
            annotations: self.annotations.as_ref().map(ToString::to_string).filter(|s| !s.is_empty()),
            headers: self.call_headers.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that finishes its request's record (metrics, access log, call
    /// log, trace) when it ends or is dropped.
    pub struct Recorded {
        #[pin]
        inner: Body,
        record: Option<Box<Exchange>>,
        hold: Option<Arc<Hold>>,
        bytes: u64,
        // Whether the last data frame sent ended a server-sent-event stream with
        // `data: [DONE]`: such a stream is complete even if the client leaves before
        // the body's end is read (the OpenAI SDKs close right after `[DONE]`).
        done_marker: bool,
    }

    impl PinnedDrop for Recorded {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                let completed = this.inner.is_end_stream() || *this.done_marker;
                match this.hold.take() {
                    // Finished when the stream's last chunk call lets go of the hold.
                    Some(hold) => {
                        *hold.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some((record, *this.bytes, completed));
                    }
                    None => record.finish(*this.bytes, completed),
                }
            }
        }
    }
}

/// The end of an OpenAI-style event stream.
const DONE: &[u8] = b"data: [DONE]\n\n";

impl Recorded {
    /// Wraps `inner`; the record is finished once.
    pub fn new(inner: Body, mut record: Box<Exchange>) -> Self {
        let hold = record.hold.take();
        Self { inner, record: Some(record), hold, bytes: 0, done_marker: false }
    }
}

impl HttpBody for Recorded {
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
                    if !d.is_empty() {
                        *this.done_marker = d.ends_with(DONE);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(record) = this.record.take() {
                    record.finish(*this.bytes, true);
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
