//! The phase driver: takes one request from a listener through routing, the route's
//! target and back, and is the only place where errors become responses.
//!
//! ```text
//! handle ─ request id ─ limits (414, 431, 413) ─ edge (authority, path, header
//!          names: 400) ─ client body (size and pace: 413, 408) ─ router ─ prepare
//!          (allowed upgrades only, strip hop-by-hop, forwarding headers, request id
//!          header) ─ [chain: request phase] ─┬─ static → response
//!                                            ├─ echo   → response
//!                                            ├─ aggregate → parallel Upstream::forward calls
//!                                            ├─ function → Function::serve (wasi:http)
//!                                            ├─ mcp    → tool calls re-enter `handle_own`
//!                                            ├─ split  → one pool ─┐
//!                                            └─ upstream ──────────┴→ [cache] → Upstream::forward
//!        ─ [chain: response phase] ─ response: strip hop-by-hop, request id
//!        ─ when the body ends: route metrics, access log, call log, trace span
//! ```
//!
//! Plugins see the request as the target will get it: the edge's work is done once,
//! before the chain.
//!
//! The functions that hand the request on by value, from the listener's `answer`
//! through `serve`, `dispatch` and `forward` to the upstream's `forward_to`, return an
//! `async move` block rather than being `async fn`s: an `async fn` moves each argument
//! into a local of its own when first polled, one more copy of the request (240–350
//! bytes) per layer, where a block uses what it captured in place (BENCHMARKS.md, P1,
//! 2026-12-04, night).

pub mod aggregate;
mod cache;
mod client_body;
mod echo;
pub mod edge;
pub mod headers;
pub mod mcp;
pub mod split;
mod upgrade;

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tracing::{Instrument, debug, debug_span, warn};

use crate::body::{self, Body, BodyProgress, ClientBodyState};
use crate::error::{ErrorSource, ProxyError, error_response};
use crate::exchange::Exchange;
use crate::listener::{ClientUpgrade, ConnInfo};
use crate::observability::access::Recorded;
use crate::observability::trace::{RequestTrace, TRACEPARENT};
use crate::plugins::{Annotations, PluginBody, UpstreamOverride};
use crate::snapshot::{Route, Snapshot, StaticResponse, Target};
use crate::upstream::{Outgoing, Upstream};

/// Handles one request end to end. Never fails: errors become JSON error responses.
/// Not an `async fn` itself: a wrapper's future would keep its own copy of the
/// request's room.
pub fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    snapshot: Arc<Snapshot>,
) -> impl Future<Output = Response<Body>> + Send + 'static {
    answer(req, conn, snapshot)
}

/// [`handle`] for a request the gateway makes to itself (an MCP tool call). Boxed:
/// the call is made from within the handling of another request.
pub fn handle_own(
    req: Request<OwnBody>,
    conn: Arc<ConnInfo>,
    snapshot: Arc<Snapshot>,
) -> futures_util::future::BoxFuture<'static, Response<Body>> {
    Box::pin(answer(req, conn, snapshot))
}

/// The body of a request the gateway makes to itself.
pub type OwnBody = http_body_util::Full<bytes::Bytes>;

#[allow(clippy::manual_async_fn, reason = "keeps the request in place: see the proxy module's docs")]
fn answer<B>(
    req: Request<B>,
    conn: Arc<ConnInfo>,
    snapshot: Arc<Snapshot>,
) -> impl Future<Output = Response<Body>>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<body::BoxError>,
{
    async move {
        let started = Instant::now();
        let id = headers::request_id(req.headers(), &conn.listener.request_id);
        conn.listener.metrics.request_started();
        // Boxed from the start: the response body's record keeps it, and moved there by
        // value its ~450 bytes were copied twice (BENCHMARKS.md, P1). Written into a box
        // made first: `Box::new` of the same value makes one more copy on the way in
        // (235 instructions per request more, counted 2026-12-05); one copy is left.
        let mut ex = Box::write(
            Box::new_uninit(),
            Exchange::begin(&req, started, &conn.listener, conn.peer, &snapshot, id),
        );
        // A debug span: at the default `info` level it is disabled and costs nothing
        // (an enabled span cost ~3.5 µs per request in the P1 profile).
        let span = debug_span!("request", id = ex.request_id.to_str().unwrap_or_default(), method = %req.method(), path = req.uri().path());
        let result = serve(req, &conn, &snapshot, &mut ex).instrument(span).await;
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => failed(e, &mut ex),
        };
        resp.headers_mut().insert(conn.listener.request_id.header.clone(), ex.request_id.clone());
        ex.status = resp.status();
        let head_at = ex.upstream_head_at.unwrap_or_else(Instant::now);
        ex.head_micros = head_at.saturating_duration_since(started).as_micros() as u64;
        resp.map(|b| body::boxed_direct(Recorded::new(b, ex)))
    }
}

#[allow(clippy::manual_async_fn, reason = "keeps the request in place: see the proxy module's docs")]
fn serve<B>(
    mut req: Request<B>,
    conn: &Arc<ConnInfo>,
    snapshot: &Arc<Snapshot>,
    ex: &mut Exchange,
) -> impl Future<Output = Result<Response<Body>, ProxyError>>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<body::BoxError>,
{
    async move {
        let limits = &conn.listener.limits;
        let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if target_len > limits.max_uri_bytes {
            return Err(ProxyError::UriTooLong { limit: limits.max_uri_bytes as u64 });
        }
        let head_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        if head_bytes > limits.max_header_bytes {
            return Err(ProxyError::HeadersTooLarge { limit: limits.max_header_bytes as u64 });
        }
        if let Some(len) = content_length(req.headers())?
            && len > limits.max_body_bytes
        {
            return Err(ProxyError::BodyTooLarge { limit: limits.max_body_bytes });
        }
        edge::admit(&mut req, &conn.listener)?;
        // The body's size and pace are watched from here on, whoever reads it (a plugin
        // buffering it, the echo target, the upstream pool).
        let state = (!http_body::Body::is_end_stream(req.body())).then(|| {
            let state = Arc::new(ClientBodyState::default());
            req.extensions_mut().insert(Arc::clone(&state));
            state
        });
        ex.body.clone_from(&state);
        let mut req = req.map(|b| client_body::ClientBody::new(b, limits, state.clone()));
        let blame = |e: ProxyError| blame_body(e, state.as_deref(), limits);

        let served = ex.served.as_deref().ok_or(ProxyError::NoRoute)?;
        // Taken once (a clone shares its bytes): routing reads it, and so does `prepare`.
        let host_header = req.headers().get(header::HOST).cloned();
        let host = headers::host_of(req.uri(), host_header.as_ref());
        let found = served.router.find_with_query(
            host,
            req.method(),
            req.uri().path(),
            req.uri().query(),
            req.headers(),
        );
        let found = found.ok_or(ProxyError::NoRoute)?;
        let route = &snapshot.routes[found.route];
        ex.route = Some(found.route);
        ex.params = found.params;
        let client_upgrade =
            prepare(&mut req, host_header.as_ref(), conn, route, &ex.request_id, ex.trace.as_deref());

        if route.chain.is_empty() {
            return dispatch(req, conn, snapshot, route, client_upgrade, ex).await.map_err(blame);
        }
        // A streamed response's last chunk call may outlive the body the client read:
        // the record waits for it.
        ex.hold = route.chain.streams_chunks().then(Arc::default);
        ex.annotations = Some(Annotations::default());
        let mut req = req.map(body::boxed);
        match route.chain.on_request(&mut req, ex).await {
            Ok(Some(resp)) => return Ok(resp),
            Ok(None) => {}
            Err(e) => {
                // The gateway's answer to a failed request phase (a plugin fault, a body
                // too large or too slow to buffer) goes back through the response phase of
                // the plugins before the failure, like a plugin's own answer.
                let mut resp = failed(blame(ProxyError::Plugin(e)), ex);
                route.chain.on_error_answer(&mut resp, ex).await;
                return Ok(resp);
            }
        }
        let req = req.map(PluginBody);
        let mut resp = match dispatch(req, conn, snapshot, route, client_upgrade, ex).await.map_err(blame) {
            Ok(resp) => resp,
            // An upstream failure is an answer like any other for the response phase:
            // CORS and rate-limit headers go on the 502/504 too, and a plugin can replace
            // it (the ai plugin falls back to another provider).
            Err(e) if e.source_kind() == ErrorSource::Upstream => failed(e, ex),
            Err(e) => return Err(e),
        };
        // The head's time includes the response phase.
        ex.upstream_head_at = None;
        route.chain.on_response(&mut resp, ex).await.map_err(ProxyError::Plugin)?;
        Ok(resp)
    }
}

/// The client's own error when its body failed or was being waited for (too large,
/// too slow, broken), whatever error that surfaced as further along; else `e`.
fn blame_body(
    e: ProxyError,
    state: Option<&ClientBodyState>,
    limits: &crate::listener::Limits,
) -> ProxyError {
    let Some(state) = state else { return e };
    match (state.get(), &e) {
        (BodyProgress::TooLarge, _) => ProxyError::BodyTooLarge { limit: limits.max_body_bytes },
        (BodyProgress::TooSlow, _) => ProxyError::BodyTimeout("slower than the listener's body limits allow"),
        (BodyProgress::WaitingOnClient, ProxyError::UpstreamTimeout { .. }) => {
            ProxyError::BodyTimeout("the upstream's timeout passed while waiting for the body")
        }
        _ => e,
    }
}

/// The gateway's error response for `e`, logged and noted in the exchange.
fn failed(e: ProxyError, ex: &mut Exchange) -> Response<Body> {
    let id = &ex.request_id;
    match (e.source_kind(), &e) {
        (ErrorSource::Client, _) => debug!(request_id = ?id, error = %e, "rejected request"),
        // The chain logged the plugin's fault where it happened, with its details.
        (_, ProxyError::Plugin(_)) => debug!(request_id = ?id, error = %e, "request failed in a plugin"),
        _ => warn!(request_id = ?id, route = ex.route_name(), error = %e, "request failed"),
    }
    ex.error = Some(e.code());
    error_response(&e, id)
}

/// The edge's work on a routed request, done once before the chain so plugins see the
/// request the target will get: only an upgrade the route allows goes on (its
/// [`ClientUpgrade`] is returned; any other loses `Upgrade`, RFC 9110 §7.8), hop-by-hop
/// headers go, `Expect` goes (hyper answered any `100-continue` towards the client when
/// the body was first read; the upstream must not wait for one), and the forwarding
/// headers, the request id header and (with tracing on) `traceparent` are set. `host`
/// is the request's `Host` (the edge left one validated authority there), looked up
/// once by the caller; the forwarding headers name it, port included.
fn prepare<B>(
    req: &mut Request<B>,
    host: Option<&HeaderValue>,
    conn: &ConnInfo,
    route: &Route,
    id: &HeaderValue,
    trace: Option<&RequestTrace>,
) -> Option<ClientUpgrade> {
    let found = headers::Found::scan(req.headers());
    let upgrade = found.upgrade
        && req.version() == http::Version::HTTP_11
        && headers::wants_upgrade(req.headers())
        && headers::upgrade_allowed(req.headers(), &route.upgrades);
    let client_upgrade = upgrade.then(|| ClientUpgrade::of(&mut *req));
    let h = req.headers_mut();
    headers::strip_found(h, upgrade, found.hop_by_hop);
    if found.expect {
        h.remove(header::EXPECT);
    }
    headers::add_forwarded(h, conn, host, found.forwarding);
    h.insert(conn.listener.request_id.header.clone(), id.clone());
    if let Some(t) = trace {
        h.insert(TRACEPARENT.clone(), t.traceparent().clone());
    }
    client_upgrade
}

/// Sends the request to the route's target (or to the upstream a plugin chose).
#[allow(clippy::manual_async_fn, reason = "keeps the request in place: see the proxy module's docs")]
fn dispatch<B>(
    req: Request<B>,
    conn: &Arc<ConnInfo>,
    snapshot: &Arc<Snapshot>,
    route: &Route,
    client_upgrade: Option<ClientUpgrade>,
    ex: &mut Exchange,
) -> impl Future<Output = Result<Response<Body>, ProxyError>>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
{
    async move {
        if let Some(chosen) = req.extensions().get::<UpstreamOverride>()
            && let Some(upstream) = snapshot.upstreams.get(chosen.0.as_str())
        {
            let upstream = Arc::clone(upstream);
            return send(req, &upstream, route, client_upgrade, ex).await;
        }
        match &route.target {
            Target::Static(s) => Ok(static_response(s)),
            Target::Echo { status } => {
                let limit = conn.listener.limits.max_body_bytes;
                echo::respond(req, *status, route.name.as_str(), &ex.params, limit).await
            }
            Target::Upstream(upstream) => send(req, upstream, route, client_upgrade, ex).await,
            Target::Split(split) => {
                let choice = split.choose(req.headers(), ex.consumer_name());
                let cookie = choice.cookie;
                let mut resp = send(req, choice.upstream, route, client_upgrade, ex).await?;
                if let Some(c) = cookie {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
                Ok(resp)
            }
            // Boxed, like the cache's and the MCP endpoint's: their futures are larger than a
            // plain forward's, and every request's future is as large as the largest.
            Target::Aggregate(agg) => Box::pin(aggregate::respond(req, agg, ex)).await,
            Target::Function(function) => {
                // wasi:http gives the function the request's authority: an HTTP/1.0
                // request without `Host` has none to give.
                if req.uri().authority().is_none() && !req.headers().contains_key(header::HOST) {
                    return Err(ProxyError::BadRequest("a request to a function needs a Host header"));
                }
                let https = conn.listener.tls.is_some();
                Box::pin(function.serve(req, https)).await.map_err(ProxyError::Function)
            }
            Target::Mcp(endpoint) => {
                let limit = conn.listener.limits.max_body_bytes;
                Box::pin(mcp::respond(req, conn, snapshot, endpoint, limit, ex)).await
            }
        }
    }
}

/// Sends the request to `upstream`, through the route's cache when it has one.
async fn send<B>(
    req: Request<B>,
    upstream: &Arc<Upstream>,
    route: &Route,
    client_upgrade: Option<ClientUpgrade>,
    ex: &mut Exchange,
) -> Result<Response<Body>, ProxyError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
{
    match &route.cache {
        Some(cache) => Box::pin(cache::serve(req, upstream, cache, client_upgrade, ex)).await,
        None => forward(req, upstream, client_upgrade, ex).await,
    }
}

/// `req` for the upstream: its head boxed, its body boxed (none when the client sent
/// none).
fn outgoing<B>(req: Request<B>) -> Outgoing
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
{
    let (head, incoming) = req.into_parts();
    let body = if incoming.is_end_stream() { body::empty() } else { body::boxed(incoming) };
    Outgoing { head: Box::new(head), body }
}

fn content_length(headers: &http::HeaderMap) -> Result<Option<u64>, ProxyError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or(ProxyError::BadRequest("invalid content-length")),
    }
}

fn static_response(s: &StaticResponse) -> Response<Body> {
    let mut resp = Response::new(body::full(s.body.clone()));
    *resp.status_mut() = s.status;
    *resp.headers_mut() = s.headers.clone();
    resp
}

#[allow(clippy::manual_async_fn, reason = "keeps the request in place: see the proxy module's docs")]
fn forward<B>(
    req: Request<B>,
    upstream: &Upstream,
    client_upgrade: Option<ClientUpgrade>,
    ex: &mut Exchange,
) -> impl Future<Output = Result<Response<Body>, ProxyError>>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
{
    async move {
        // The request's headers were prepared before the chain ([`prepare`]). Awaited
        // where made, as the pool's send is in `forward_to`: a future made first and
        // awaited later can be copied whole into this one (BENCHMARKS.md, P1, 2026-12-04,
        // evening).
        let sent = Instant::now();
        let (mut resp, target) = upstream.forward_to(outgoing(req), sent.into()).await?;
        let head_at = Instant::now();
        ex.upstream_took = Some(head_at - sent);
        ex.upstream_head_at = Some(head_at);
        ex.upstream = Some(target);
        // The client gets an HTTP/1.1 (or HTTP/2) response whatever the upstream spoke.
        if resp.version() == http::Version::HTTP_10 {
            *resp.version_mut() = http::Version::HTTP_11;
        }

        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            headers::strip_hop_by_hop(resp.headers_mut(), false);
            return Ok(resp);
        }
        // A switch nobody asked for (or the route does not allow), or without the
        // target's connection to join, opens no tunnel.
        let (Some(client), Some(upstream_side)) =
            (client_upgrade, crate::upstream::UpstreamUpgrade::take(&mut resp))
        else {
            let target = ex.upstream.as_deref().map_or_else(String::new, str::to_owned);
            return Err(ProxyError::UnexpectedUpgrade { target });
        };
        tokio::spawn(upgrade::tunnel(client, upstream_side));
        headers::strip_hop_by_hop(resp.headers_mut(), true);
        Ok(resp)
    }
}
