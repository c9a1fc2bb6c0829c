//! A route's response cache in front of its upstream: look the request up, answer a
//! fresh entry, serve a stale one while refreshing it in the background, revalidate
//! with a conditional request, and store what the upstream sends as its body streams
//! to the client. One request per key fetches at a time ([`Fills`]); the others wait
//! for it and read the store.
//!
//! ```text
//! request ─ cacheable? ─ no ─────────────────────────────────────── forward ─ BYPASS
//!             └ key ─ entry? ─ fresh ──────────────────────────────────────── HIT
//!                       │       stale, within stale-while-revalidate ─ STALE (+ refresh)
//!                       │       stale ─ conditional forward ─ 304 ─── REVALIDATED
//!                       │                                   ├ error ─ STALE (stale-if-error)
//!                       │                                   └ else ── MISS (stored)
//!                       └ none ─ fill in flight? ─ wait, look again
//!                                 └ forward ─ MISS (stored as the body streams)
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Frame;

use super::headers::request_host;
use crate::body::{self, Body, BoxError};
use crate::cache::policy::{self, Lifetime};
use crate::cache::store::{Variants, with_variant};
use crate::cache::{Entry, Fill, FillGuard, Fills, Outcome, RouteCache, STATUS_HEADER, Store};
use crate::error::ProxyError;
use crate::exchange::Exchange;
use crate::listener::ClientUpgrade;
use crate::upstream::Upstream;

/// Serves `req` through the route's cache, forwarding to `upstream` when it must.
pub async fn serve<B>(
    req: Request<B>,
    upstream: &Arc<Upstream>,
    cache: &Arc<RouteCache>,
    client_upgrade: Option<ClientUpgrade>,
    ex: &mut Exchange,
) -> Result<Response<Body>, ProxyError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let cacheable = client_upgrade.is_none()
        && policy::request_cacheable(req.method(), req.headers(), !req.body().is_end_stream());
    let key = cacheable
        .then(|| {
            let host = request_host(req.uri(), req.headers());
            let route = ex.route_name();
            cache.key(route, upstream.name().as_str(), host, req.uri(), req.headers(), ex.consumer_name())
        })
        .flatten();
    let Some(key) = key else {
        let resp = super::forward(req, upstream, client_upgrade, ex).await?;
        return Ok(mark(resp, cache, Outcome::Bypass, ex));
    };
    let (head, _) = req.into_parts();
    let fills = Fills::global();
    let mut waited = false;
    loop {
        let now = SystemTime::now();
        let variants = cache.store.get(&key).await;
        let entry =
            variants.as_ref().and_then(|vs| vs.iter().rev().find(|e| e.matches(&head.headers)).cloned());
        if let Some(entry) = &entry {
            let age = entry.age(now);
            let life = entry.lifetime;
            if age < life.fresh_for && !life.revalidate_always {
                return Ok(answer(&head, entry, age, cache, Outcome::Hit, ex));
            }
            let stale_by = age.saturating_sub(life.fresh_for);
            if stale_by < life.stale_while_revalidate && !life.revalidate_always {
                if let Fill::Leader(guard) = fills.join(&key) {
                    let refresh = Refresh { head: conditional(&head, Some(entry)), key, variants, guard };
                    tokio::spawn(refresh.run(Arc::clone(upstream), Arc::clone(cache), Arc::clone(entry)));
                }
                return Ok(answer(&head, entry, age, cache, Outcome::Stale, ex));
            }
        }
        let guard = match fills.join(&key) {
            Fill::Leader(guard) => Some(guard),
            Fill::Wait(rx) if !waited => {
                Fills::wait(rx, cache.lock_timeout).await;
                waited = true;
                continue;
            }
            // Waited once and still nothing usable: fetch without coalescing.
            Fill::Wait(_) => None,
        };
        return fetch(head, upstream, cache, Stored { key, variants, entry }, guard, ex).await;
    }
}

/// What the store held for the request's key.
struct Stored {
    key: String,
    variants: Option<Variants>,
    /// The variant matching the request, stale.
    entry: Option<Arc<Entry>>,
}

impl Stored {
    /// Stores `entry` among the key's variants (in place of the one it matches).
    async fn keep(self, cache: &RouteCache, entry: Arc<Entry>) {
        let keep = entry.keep_for();
        cache.store.put(self.key, with_variant(self.variants.as_ref(), entry), keep).await;
    }
}

/// Forwards the request (conditional when a stale entry has validators) and answers
/// from the result: the entry again on `304`, the stale entry on failure within its
/// `stale-if-error`, else the upstream's response, stored as it streams when allowed.
async fn fetch(
    head: Parts,
    upstream: &Upstream,
    cache: &RouteCache,
    stored: Stored,
    guard: Option<FillGuard>,
    ex: &mut Exchange,
) -> Result<Response<Body>, ProxyError> {
    let stale = stored.entry.clone();
    let stale = stale.as_ref();
    let sent = conditional(&head, stale);
    let result = super::forward(Request::from_parts(sent, body::empty()), upstream, None, ex).await;
    let usable_on_error = |e: &Arc<Entry>| {
        let stale_by = e.age(SystemTime::now()).saturating_sub(e.lifetime.fresh_for);
        stale_by < e.lifetime.stale_if_error
    };
    let resp = match (result, stale) {
        (Err(_), Some(e)) if usable_on_error(e) => {
            return Ok(answer(&head, e, e.age(SystemTime::now()), cache, Outcome::Stale, ex));
        }
        (Err(err), _) => return Err(err),
        (Ok(resp), Some(e)) if resp.status().is_server_error() && usable_on_error(e) => {
            return Ok(answer(&head, e, e.age(SystemTime::now()), cache, Outcome::Stale, ex));
        }
        (Ok(resp), Some(e)) if resp.status() == StatusCode::NOT_MODIFIED => {
            let refreshed = refreshed(cache, e, resp.headers(), &head.headers);
            if let Some(r) = &refreshed {
                stored.keep(cache, Arc::clone(r)).await;
            }
            drop(guard);
            let entry = refreshed.as_ref().unwrap_or(e);
            return Ok(answer(&head, entry, entry.age(SystemTime::now()), cache, Outcome::Revalidated, ex));
        }
        (Ok(resp), _) => resp,
    };
    let fits = content_length(resp.headers()).is_none_or(|n| n <= cache.max_body as u64);
    // Dropping the guard when nothing is stored lets the waiters go to the upstream.
    let pending = (head.method == Method::GET && fits)
        .then(|| Pending::new(resp.status(), resp.headers(), &head.headers, cache, stored, guard))
        .flatten();
    let resp = match pending {
        Some(pending) => resp.map(|b| {
            let tee =
                Tee { inner: b, collected: BytesMut::new(), limit: cache.max_body, pending: Some(pending) };
            body::boxed(tee)
        }),
        None => resp,
    };
    Ok(mark(resp, cache, Outcome::Miss, ex))
}

/// The request head to send upstream: the client's own conditionals removed (the
/// cache wants a whole response to store) and the stale entry's validators added.
fn conditional(head: &Parts, stale: Option<&Arc<Entry>>) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    let mut headers = head.headers.clone();
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
    if let Some(e) = stale {
        if let Some(etag) = e.headers.get(header::ETAG) {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(lm) = e.headers.get(header::LAST_MODIFIED) {
            headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
        }
    }
    *req.headers_mut() = headers;
    req.into_parts().0
}

/// The stale entry `e` confirmed by a `304` with `headers`: its headers updated, aged
/// from now, its lifetime recomputed. `None` when the updated headers forbid storing.
fn refreshed(cache: &RouteCache, e: &Entry, headers: &HeaderMap, request: &HeaderMap) -> Option<Arc<Entry>> {
    let mut merged = e.headers.clone();
    for name in headers.keys() {
        if policy::keeps_stored(name) {
            continue;
        }
        merged.remove(name);
        for v in headers.get_all(name) {
            merged.append(name.clone(), v.clone());
        }
    }
    let lifetime = cache.rules.storable(RouteCache::authorized(request), e.status, &merged).ok()?;
    Some(Arc::new(Entry {
        status: e.status,
        body: e.body.clone(),
        received: SystemTime::now(),
        initial_age: initial_age(&merged),
        lifetime,
        vary: e.vary.clone(),
        headers: merged,
    }))
}

fn initial_age(headers: &HeaderMap) -> Duration {
    let secs = headers.get(header::AGE).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    Duration::from_secs(secs.unwrap_or(0))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The response from entry `e` for the request `head`: `304` when the client's own
/// conditionals match it, else the stored response with its `Age`.
fn answer(
    head: &Parts,
    e: &Entry,
    age: Duration,
    cache: &RouteCache,
    outcome: Outcome,
    ex: &mut Exchange,
) -> Response<Body> {
    let mut resp = if policy::client_not_modified(&head.headers, &e.headers) {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        for name in &policy::NOT_MODIFIED_HEADERS {
            for v in e.headers.get_all(name) {
                resp.headers_mut().append(name.clone(), v.clone());
            }
        }
        resp
    } else {
        let body = if head.method == Method::HEAD { body::empty() } else { body::full(e.body.clone()) };
        let mut resp = Response::new(body);
        *resp.status_mut() = e.status;
        *resp.headers_mut() = e.headers.clone();
        resp
    };
    resp.headers_mut().insert(header::AGE, HeaderValue::from(age.as_secs()));
    mark(resp, cache, outcome, ex)
}

fn mark(mut resp: Response<Body>, cache: &RouteCache, outcome: Outcome, ex: &mut Exchange) -> Response<Body> {
    if cache.status_header {
        resp.headers_mut().insert(STATUS_HEADER.clone(), HeaderValue::from_static(outcome.as_str()));
    }
    ex.cache = Some(outcome.as_str());
    cache.counters.count(outcome);
    resp
}

/// A response being stored: everything but the body, which the [`Tee`] collects.
struct Pending {
    store: Store,
    stored: Stored,
    status: StatusCode,
    headers: HeaderMap,
    vary: Vec<(http::HeaderName, Option<String>)>,
    received: SystemTime,
    lifetime: Lifetime,
    /// Released when the entry is stored or given up: the waiters then look.
    _guard: Option<FillGuard>,
}

impl Pending {
    fn new(
        status: StatusCode,
        headers: &HeaderMap,
        request: &HeaderMap,
        cache: &RouteCache,
        stored: Stored,
        guard: Option<FillGuard>,
    ) -> Option<Pending> {
        let lifetime = cache.rules.storable(RouteCache::authorized(request), status, headers).ok()?;
        let vary = policy::vary_of(headers, request)?;
        Some(Pending {
            store: cache.store.clone(),
            stored,
            status,
            headers: headers.clone(),
            vary,
            received: SystemTime::now(),
            lifetime,
            _guard: guard,
        })
    }

    fn finish(self, body: Bytes) {
        let entry = Arc::new(Entry {
            status: self.status,
            initial_age: initial_age(&self.headers),
            headers: self.headers,
            body,
            received: self.received,
            lifetime: self.lifetime,
            vary: self.vary,
        });
        let keep = entry.keep_for();
        let variants = with_variant(self.stored.variants.as_ref(), entry);
        let key = self.stored.key;
        let guard = self._guard;
        match self.store {
            Store::Memory(m) => m.put(key, variants, keep),
            store @ Store::Kv(_) => {
                tokio::spawn(async move {
                    store.put(key, variants, keep).await;
                    drop(guard);
                });
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body on its way to the client, copied aside up to the route's
    /// `max_body` and stored when it ends whole.
    struct Tee {
        #[pin]
        inner: Body,
        collected: BytesMut,
        limit: usize,
        pending: Option<Pending>,
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && this.pending.is_some()
                {
                    if this.collected.len() + data.len() > *this.limit {
                        // Too long to store: pass it through, let the waiters go.
                        *this.pending = None;
                        *this.collected = BytesMut::new();
                    } else {
                        this.collected.extend_from_slice(data);
                        // A body of known length ends with its last byte: the server
                        // may never poll for the end.
                        if this.inner.is_end_stream()
                            && let Some(p) = this.pending.take()
                        {
                            p.finish(std::mem::take(this.collected).freeze());
                        }
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(p) = this.pending.take() {
                    p.finish(std::mem::take(this.collected).freeze());
                }
            }
            // A broken body is not stored.
            Poll::Ready(Some(Err(_))) => *this.pending = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A background refresh of a stale entry served under `stale-while-revalidate`: the
/// same conditional fetch and storing as a request's, with no client to answer.
struct Refresh {
    head: Parts,
    key: String,
    variants: Option<Variants>,
    guard: FillGuard,
}

impl Refresh {
    async fn run(self, upstream: Arc<Upstream>, cache: Arc<RouteCache>, stale: Arc<Entry>) {
        let request = self.head.headers.clone();
        let Ok(mut resp) = upstream.forward(Request::from_parts(self.head, body::empty())).await else {
            return;
        };
        super::headers::strip_hop_by_hop(resp.headers_mut(), false);
        let stored = Stored { key: self.key, variants: self.variants, entry: None };
        if resp.status() == StatusCode::NOT_MODIFIED {
            if let Some(r) = refreshed(&cache, &stale, resp.headers(), &request) {
                stored.keep(&cache, r).await;
            }
            return;
        }
        let (status, headers) = (resp.status(), resp.headers());
        let Some(pending) = Pending::new(status, headers, &request, &cache, stored, Some(self.guard)) else {
            return;
        };
        if let Ok(body) = body::read_limited(resp.into_body(), cache.max_body).await {
            pending.finish(body);
        }
    }
}
