//! `Exchange`: the one state of one request, from the listener to the end of its
//! response body. Every phase takes it: the proxy fills in what it learns (the route,
//! the upstream, the status), the plugin chain reads the request's facts (id, client,
//! trace) and keeps what plugins establish (path parameters, consumer, context,
//! annotations, queued response edits), and when the body ends the access log,
//! metrics, call log and trace span read it as it is then. Nothing is copied from
//! one holder to another on the way.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, StatusCode};

use crate::body::ClientBodyState;
use crate::listener::ListenerSpec;
use crate::observability::access::{Hold, records_path};
use crate::observability::trace::RequestTrace;
use crate::plugins::state::ResponseEdits;
use crate::plugins::{Annotations, Consumer, RequestContext};
use crate::router::PathParams;
use crate::snapshot::{ListenerRoutes, Snapshot};

/// One request's state (see the module docs).
#[derive(Debug)]
pub struct Exchange {
    /// When the request arrived.
    pub started: Instant,
    /// The listener the request came in on.
    pub listener: Arc<ListenerSpec>,
    /// The snapshot serving the request (names routes without copying them).
    pub snapshot: Arc<Snapshot>,
    /// What the listener serves in this snapshot (holds the route metrics); `None`
    /// when the listener left the config while the connection stayed.
    pub served: Option<Arc<ListenerRoutes>>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Request method.
    pub method: Method,
    /// Request path (no query), as it arrived. Empty unless something records it
    /// ([`records_path`]): a copy per request costs an allocation.
    pub path: String,
    /// HTTP version.
    pub version: http::Version,
    /// The request id (the client's, when the listener trusts it, or a new one).
    pub request_id: HeaderValue,
    /// The request's trace context, when tracing is on: outbound `http` calls of
    /// plugins carry its `traceparent`, and sampled plugin calls become spans.
    pub trace: Option<Arc<RequestTrace>>,
    /// The request headers the call log records (JSON, redacted), when it is on.
    pub call_headers: Option<String>,
    /// The request body's progress and byte count, when it has a body.
    pub body: Option<Arc<ClientBodyState>>,

    /// Index of the matched route in `snapshot.routes`, if any.
    pub route: Option<usize>,
    /// The path parameters the route captured.
    pub params: PathParams,
    /// The consumer an authentication plugin established, if any.
    pub consumer: Option<Consumer>,
    /// Values plugins keep for the rest of the request (`set-context`).
    pub context: RequestContext,
    /// Fields plugins attach to the access-log line (`log.annotate`), shared with a
    /// streamed response's chunk calls; made when the route has plugins.
    pub annotations: Option<Annotations>,
    /// Response-header changes plugins made in the request phase, for the response
    /// phase to apply.
    pub response_edits: ResponseEdits,
    /// Where the request phase failed (the chain position of the plugin, or of the
    /// first body plugin when buffering failed): the plugins before it still run their
    /// response phase on the error answer.
    pub failed_at: Option<usize>,
    /// Set when the route streams through chunk plugins: the record waits for their
    /// last call, which may run after the client left (see [`Hold`]).
    pub hold: Option<Arc<Hold>>,

    /// Upstream target that answered, if any.
    pub upstream: Option<Arc<str>>,
    /// How long the upstream took to answer with a response head.
    pub upstream_took: Option<Duration>,
    /// When the upstream's response head came, while nothing has run since that the
    /// head's time should include (a response phase clears it): the answer's head
    /// time is then this, not a clock read of its own (~30 ns; BENCHMARKS.md, P1).
    pub upstream_head_at: Option<Instant>,
    /// What the route's response cache did (`HIT`, `MISS`, …), when it has one.
    pub cache: Option<&'static str>,
    /// Error code when the gateway answered with an error.
    pub error: Option<&'static str>,
    /// Response status.
    pub status: StatusCode,
    /// Time until the response head was ready.
    pub head_micros: u64,
}

impl Exchange {
    /// The state of a request that arrived at `started` from `peer` on `listener`,
    /// served by `snapshot`.
    pub fn begin<B>(
        req: &http::Request<B>,
        started: Instant,
        listener: &Arc<ListenerSpec>,
        peer: SocketAddr,
        snapshot: &Arc<Snapshot>,
        request_id: HeaderValue,
    ) -> Exchange {
        Exchange {
            started,
            listener: Arc::clone(listener),
            served: snapshot.routers.get(&listener.name).cloned(),
            snapshot: Arc::clone(snapshot),
            peer,
            method: req.method().clone(),
            path: if records_path(snapshot) { req.uri().path().to_owned() } else { String::new() },
            version: req.version(),
            request_id,
            trace: snapshot.tracer.as_ref().map(|t| Arc::new(t.begin(req.headers()))),
            call_headers: snapshot.call_log.as_ref().and_then(|l| l.capture(req.headers())),
            body: None,
            route: None,
            params: PathParams::default(),
            consumer: None,
            context: RequestContext::default(),
            annotations: None,
            response_edits: ResponseEdits::default(),
            failed_at: None,
            hold: None,
            upstream: None,
            upstream_took: None,
            upstream_head_at: None,
            cache: None,
            error: None,
            status: StatusCode::OK,
            head_micros: 0,
        }
    }

    /// An exchange outside a gateway, for driving a plugin chain directly (benches,
    /// tests): a request from `peer` on a listener of an empty snapshot. Nothing
    /// records it.
    pub fn detached(peer: SocketAddr) -> Exchange {
        static EMPTY: OnceLock<Arc<Snapshot>> = OnceLock::new();
        let snapshot = EMPTY.get_or_init(|| {
            let yaml = "version: 1\nlisteners:\n  - name: detached\n    address: 127.0.0.1:0\nroutes:\n  - name: detached\n    match: { path_prefix: / }\n    target: { echo: {} }\n";
            let loaded = crate::config::parse_str("detached", yaml, ".".into()).expect("a minimal config");
            Arc::new(Snapshot::build(loaded, 0).expect("a minimal snapshot"))
        });
        let req = http::Request::new(());
        let id = HeaderValue::from_static("detached");
        let mut ex = Exchange::begin(&req, Instant::now(), &snapshot.listeners[0], peer, snapshot, id);
        ex.annotations = Some(Annotations::default());
        ex
    }

    /// The matched route's name, if a route matched.
    pub fn matched_route(&self) -> Option<&str> {
        self.route.and_then(|i| self.snapshot.routes.get(i)).map(|r| r.name.as_str())
    }

    /// The matched route's name, or `-`.
    pub fn route_name(&self) -> &str {
        self.matched_route().unwrap_or("-")
    }

    /// The consumer's name, if one was established.
    pub fn consumer_name(&self) -> Option<&str> {
        self.consumer.as_ref().map(|c| c.name.as_str())
    }
}
