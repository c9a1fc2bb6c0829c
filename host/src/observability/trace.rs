//! Distributed tracing: the W3C trace context in and out, and spans exported over
//! OTLP/HTTP in batches, off the request path.
//!
//! With `server.tracing` set, every request gets a [`RequestTrace`]: the trace id of
//! the client's `traceparent` (or a new one), a new span id for the gateway's span,
//! and a sampling decision (the client's, or `sample_ratio` of new traces). The
//! upstream gets a `traceparent` naming the gateway's span as its parent, sampled or
//! not. A sampled request is exported as one server span and one child span per
//! plugin call of its request and response phases, with the route, consumer,
//! status and each plugin's decision.
//!
//! Spans go through the bounded queue of an [`otlp`] exporter that posts
//! `ExportTraceServiceRequest` protobufs to the collector. A full queue drops spans and
//! counts them; the request path never waits on the collector.
//!
//! Why not the OpenTelemetry SDK: its batch processor runs on a thread of its own
//! and wants a blocking HTTP client (or an experimental async-runtime feature), and
//! its live-span API would build a span object per request; here spans are built
//! once, after the fact, from timestamps the proxy already has.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use prost::Message as _;

use super::metrics::Deliveries;
use super::otlp::{self, Queue, int, kv};
use crate::config::TracingConfig;

/// The W3C trace context request header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A parsed `traceparent`: trace id, parent span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (not all zero).
    pub trace_id: [u8; 16],
    /// The caller's span id (not all zero).
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value (W3C Trace Context level 1): version `00` exactly,
    /// or a later version read as `00` with anything after the flags ignored. `None`
    /// for anything malformed, version `ff`, or all-zero ids: the trace restarts.
    pub fn parse(v: &[u8]) -> Option<TraceParent> {
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let version = hex::<1>(&v[0..2])?[0];
        if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        let trace_id = hex::<16>(&v[3..35])?;
        let parent_id = hex::<8>(&v[36..52])?;
        let flags = hex::<1>(&v[53..55])?[0];
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(TraceParent { trace_id, parent_id, flags })
    }
}

/// `N` bytes from `2N` lowercase hex digits (trace context ids, MCP session ids).
pub(crate) fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let mut out = [0; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    (s.len() == 2 * N).then_some(out)
}

fn to_hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// A trace or span id (or any bytes) as lowercase hex digits (the access log's
/// `trace_id`).
pub fn id_hex(id: &[u8]) -> String {
    let mut s = String::with_capacity(2 * id.len());
    to_hex(id, &mut s);
    s
}

/// The tracer of one `server.tracing` config: the sampling threshold and the queue
/// into its exporter task.
#[derive(Debug)]
pub struct Tracer {
    config: TracingConfig,
    /// A new trace is sampled when the top 63 bits of its id's last 8 bytes are
    /// below this (the ratio, as OpenTelemetry's `TraceIdRatioBased` does it).
    threshold: u64,
    queue: Queue<Span>,
}

impl Tracer {
    /// A tracer for `config`, with its exporter task spawned on the current runtime.
    /// The task ends (after sending what is queued) once the tracer and every
    /// request trace holding its queue are gone.
    pub fn start(config: &TracingConfig) -> Tracer {
        let ratio = config.sample_ratio.unwrap_or(1.0).clamp(0.0, 1.0);
        let threshold = if ratio >= 1.0 { u64::MAX } else { (ratio * (1u64 << 63) as f64) as u64 };
        let target = otlp::Target {
            endpoint: config.otlp_endpoint.clone(),
            headers: config.headers.clone(),
            service: config.service_name.clone().unwrap_or_else(|| "sluice".to_owned()),
        };
        let queue = otlp::start(&target, "spans", encode);
        Tracer { config: config.clone(), threshold, queue }
    }

    /// The exporter's counts.
    pub fn stats(&self) -> &Deliveries {
        &self.queue.stats
    }

    /// The config this tracer was started from (a reload keeps the tracer when its
    /// config did not change).
    pub fn config(&self) -> &TracingConfig {
        &self.config
    }

    /// The trace context of a request with `headers`.
    pub fn begin(&self, headers: &HeaderMap) -> RequestTrace {
        let parent = headers.get(&TRACEPARENT).and_then(|v| TraceParent::parse(v.as_bytes()));
        let (trace_id, parent_id, sampled) = match parent {
            Some(p) => (p.trace_id, Some(p.parent_id), p.flags & 1 == 1),
            None => {
                let id = fastrand::u128(1..).to_be_bytes();
                let low = u64::from_be_bytes(id[8..].try_into().unwrap_or_default()) >> 1;
                (id, None, self.threshold == u64::MAX || low < self.threshold)
            }
        };
        let span_id = fastrand::u64(1..).to_be_bytes();
        let trace_state = headers.get("tracestate").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut traceparent = String::with_capacity(55);
        traceparent.push_str("00-");
        to_hex(&trace_id, &mut traceparent);
        traceparent.push('-');
        to_hex(&span_id, &mut traceparent);
        traceparent.push_str(if sampled { "-01" } else { "-00" });
        RequestTrace {
            trace_id,
            span_id,
            parent_id,
            sampled,
            traceparent: HeaderValue::from_str(&traceparent).unwrap_or_else(|_| HeaderValue::from_static("")),
            trace_state,
            start_unix_ns: unix_ns(SystemTime::now()),
            started: Instant::now(),
            plugins: Mutex::new(Vec::new()),
            queue: sampled.then(|| self.queue.clone()),
        }
    }
}

/// The gateway's tracer across reloads: a reload whose `server.tracing` did not
/// change keeps the running tracer (and its exporter); a changed one starts anew.
#[derive(Debug, Default)]
pub struct TracerSlot(Mutex<Option<Arc<Tracer>>>);

impl TracerSlot {
    /// The tracer for `config`: the running one when its config is the same. `None`
    /// without a config. Must be called inside a tokio runtime (the exporter is a task).
    pub fn for_config(&self, config: Option<&TracingConfig>) -> Option<Arc<Tracer>> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(config) = config else {
            *slot = None;
            return None;
        };
        if let Some(t) = slot.as_ref().filter(|t| t.config() == config) {
            return Some(Arc::clone(t));
        }
        let t = Arc::new(Tracer::start(config));
        *slot = Some(Arc::clone(&t));
        Some(t)
    }
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a plugin call decided, for its span.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    /// Passed the request or response on.
    Continue,
    /// Answered itself with this status.
    Respond(u16),
    /// Failed (its policy then applied) with this error code.
    Failed(&'a str),
}

/// The trace context of one request, and its plugin-call spans so far.
#[derive(Debug)]
pub struct RequestTrace {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The gateway's span id for this request.
    pub span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    /// Whether the request is exported.
    pub sampled: bool,
    traceparent: HeaderValue,
    trace_state: Option<String>,
    start_unix_ns: u64,
    started: Instant,
    plugins: Mutex<Vec<Span>>,
    queue: Option<Queue<Span>>,
}

/// What the request span says when the request ends.
#[derive(Debug)]
pub struct Ended<'a> {
    /// Method.
    pub method: &'a str,
    /// Path (no query).
    pub path: &'a str,
    /// Listener name.
    pub listener: &'a str,
    /// Route name, if one matched.
    pub route: Option<&'a str>,
    /// Response status.
    pub status: u16,
    /// The consumer an authentication plugin set.
    pub consumer: Option<&'a str>,
    /// The upstream target that answered.
    pub upstream: Option<&'a str>,
    /// The gateway's error code, when it answered with an error.
    pub error: Option<&'a str>,
    /// The request id.
    pub request_id: &'a str,
    /// The client's address.
    pub client: std::net::IpAddr,
}

impl RequestTrace {
    /// The `traceparent` for the upstream and plugins' outbound calls: this trace,
    /// the gateway's span as parent (made once, at [`Tracer::begin`]).
    pub fn traceparent(&self) -> &HeaderValue {
        &self.traceparent
    }

    /// Nanoseconds since the epoch of a moment of this request.
    fn at(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.started);
        self.start_unix_ns.saturating_add(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Records a plugin call that began at `began` and just ended (sampled only).
    pub fn plugin_call(
        &self,
        plugin: &str,
        route: &str,
        phase: &str,
        began: Instant,
        decision: Decision<'_>,
    ) {
        if !self.sampled {
            return;
        }
        let mut attributes =
            vec![kv("sluice.plugin", plugin), kv("sluice.route", route), kv("sluice.plugin.phase", phase)];
        let (label, status) = match decision {
            Decision::Continue => ("continue", None),
            Decision::Respond(code) => {
                attributes.push(int("http.response.status_code", i64::from(code)));
                ("respond", None)
            }
            Decision::Failed(code) => {
                attributes.push(kv("error.type", code));
                ("failed", Some(error_status(code)))
            }
        };
        attributes.push(kv("sluice.plugin.decision", label));
        let span = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: fastrand::u64(1..).to_be_bytes().to_vec(),
            parent_span_id: self.span_id.to_vec(),
            name: format!("plugin {plugin} {phase}"),
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: self.at(began),
            end_time_unix_nano: self.at(Instant::now()),
            attributes,
            status,
            flags: 0x100 | 1,
            ..Span::default()
        };
        self.plugins.lock().unwrap_or_else(|p| p.into_inner()).push(span);
    }

    /// Ends the request's span and queues it with its plugin spans (sampled only).
    pub fn end(&self, e: &Ended<'_>) {
        let Some(queue) = &self.queue else { return };
        let mut attributes = vec![
            kv("http.request.method", e.method),
            kv("url.path", e.path),
            int("http.response.status_code", i64::from(e.status)),
            kv("sluice.listener", e.listener),
            kv("sluice.request_id", e.request_id),
            kv("client.address", &e.client.to_string()),
        ];
        if let Some(route) = e.route {
            attributes.push(kv("sluice.route", route));
        }
        if let Some(c) = e.consumer {
            attributes.push(kv("sluice.consumer", c));
        }
        if let Some(u) = e.upstream {
            attributes.push(kv("sluice.upstream.target", u));
        }
        if let Some(code) = e.error {
            attributes.push(kv("error.type", code));
        }
        let status = (e.status >= 500).then(|| error_status(e.error.unwrap_or("server_error")));
        let span = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
            trace_state: self.trace_state.clone().unwrap_or_default(),
            name: format!("{} {}", e.method, e.route.unwrap_or("-")),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: self.start_unix_ns,
            end_time_unix_nano: self.at(Instant::now()),
            attributes,
            status,
            // Sampled; bit 9 says whether the parent was remote (bit 8: that is known).
            flags: 0x100 | if self.parent_id.is_some() { 0x200 } else { 0 } | 1,
            ..Span::default()
        };
        let plugins = std::mem::take(&mut *self.plugins.lock().unwrap_or_else(|p| p.into_inner()));
        for s in std::iter::once(span).chain(plugins) {
            queue.push(s);
        }
    }
}

/// Spans as an `ExportTraceServiceRequest`.
fn encode(resource: Resource, scope: InstrumentationScope, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans { scope: Some(scope), spans, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn error_status(message: &str) -> Status {
    Status { code: status::StatusCode::Error as i32, message: message.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_parsing_follows_the_w3c_rules() {
        let p = TraceParent::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(id_hex(&p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.parent_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(p.flags, 1);
        // A later version is read as 00, with what follows the flags ignored.
        assert!(TraceParent::parse(format!("cc{}-extra", &GOOD[2..]).as_bytes()).is_some());
        for bad in [
            &GOOD[..54],
            &format!("{GOOD}-x"),
            &GOOD.to_uppercase(),
            &format!("ff{}", &GOOD[2..]),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_request_keeps_the_callers_trace_and_names_its_own_span_as_the_upstreams_parent() {
        let config = TracingConfig {
            otlp_endpoint: "http://127.0.0.1:9/v1/traces".into(),
            sample_ratio: Some(0.0),
            service_name: None,
            headers: Default::default(),
        };
        let tracer = Tracer::start(&config);
        let mut headers = HeaderMap::new();
        headers.insert(&TRACEPARENT, HeaderValue::from_static(GOOD));
        let t = tracer.begin(&headers);
        assert!(t.sampled, "the caller's sampled flag wins over the ratio");
        let out = TraceParent::parse(t.traceparent().as_bytes()).unwrap();
        assert_eq!(out.trace_id, TraceParent::parse(GOOD.as_bytes()).unwrap().trace_id);
        assert_eq!(out.parent_id, t.span_id);
        assert_ne!(out.parent_id[..], GOOD.as_bytes()[36..52]);
        assert_eq!(out.flags, 1);
        // No caller, ratio 0: a new trace, not sampled, still propagated.
        let fresh = tracer.begin(&HeaderMap::new());
        assert!(!fresh.sampled);
        assert!(fresh.traceparent().to_str().unwrap().ends_with("-00"));
    }
}
