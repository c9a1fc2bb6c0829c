//! `Chain`: the plugins of one route (the global chain first), run in phases.
//!
//! Request phase first → last; response phase last → first (like middleware); a
//! `respond` decision short-circuits the rest of the phase (and, in the request
//! phase, the upstream). A fault follows the entry's `on_error` policy: fail closed
//! (the error goes back to the proxy, whose error answer then goes through the
//! response phase of the plugins before the failure, [`Chain::on_error_answer`]) or
//! fail open (the plugin is skipped; changes it made before failing are kept).
//! Bodies are buffered only when a plugin of the chain declared a body phase, and only
//! once the request phase reaches the first such plugin.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{Request, Response};
use http_body_util::BodyExt;
use tracing::Instrument;

use super::bindings::{Decision, Phases, ResponseSpec};
use super::error::{Phase, PluginError, PluginErrorKind};
use super::limits::HEADER_HEADROOM;
use super::output;
use super::pool::{CallPath, Instance, InstancePool};
use super::state::{Annotations, RequestSlot, ResponseSlot};
use crate::body::{self, Body};
use crate::config::OnErrorConfig;
use crate::exchange::Exchange;

/// An upstream chosen by a plugin with `set-upstream`, left in the request's
/// extensions for the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamOverride(pub String);

/// The request body after the request phase, for the proxy to forward: a [`Body`]
/// with a concrete error type (generic code over a boxed `dyn Error` error type trips
/// the compiler's higher-ranked `Send` inference in hyper's service).
pub struct PluginBody(pub Body);

/// An error of a [`PluginBody`].
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PluginBodyError(pub crate::body::BoxError);

impl http_body::Body for PluginBody {
    type Data = Bytes;
    type Error = PluginBodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, PluginBodyError>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx).map_err(PluginBodyError)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// One plugin of a chain.
#[derive(Debug)]
pub struct ChainEntry {
    /// Its warm instances (shared by every route when the entry is global).
    pub pool: Arc<InstancePool>,
    /// Its error policy.
    pub on_error: OnErrorConfig,
}

/// The plugin chain of one route.
#[derive(Debug, Default)]
pub struct Chain {
    route: Arc<str>,
    entries: Vec<Arc<ChainEntry>>,
    /// Indexes of the entries with a request phase, in order.
    request: Vec<usize>,
    /// True when an entry has a response phase.
    response: bool,
    /// Entries with a chunk phase, in reverse order.
    chunk: Arc<[Arc<ChainEntry>]>,
    /// Per entry, its position in `chunk` (if it has a chunk phase): the instance
    /// that runs its `on-response` then serves the chunks of that response.
    chunk_pos: Vec<Option<usize>>,
    request_body: Option<u64>,
    response_body: Option<u64>,
}

enum Step {
    Continue,
    Respond(Response<Body>),
}

/// Runs one plugin step (`$step`, a future) of `$entry` in `$span`. On the
/// synchronous path the step completes on its first poll, so it is polled once right
/// here, where it stays out of the phase future's state (a helper `async fn` would put
/// it back in, hence a macro); on the asynchronous path it is boxed and awaited.
macro_rules! run_step {
    ($chain:ident, $entry:expr, $phase:expr, $span:ident, |$inst:ident| $step:expr) => {
        match $chain.checkout($entry, $phase).await {
            Err(e) => Err(e),
            Ok($inst) => match $inst.path() {
                CallPath::Sync if $span.is_disabled() => now($step),
                CallPath::Sync => $span.in_scope(|| now($step)),
                CallPath::Async => Box::pin($step).instrument($span).await,
            },
        }
    };
}

impl Chain {
    /// A chain of `entries` (global entries first) for `route`.
    pub fn new(route: &str, entries: Vec<Arc<ChainEntry>>) -> Chain {
        let has = |e: &ChainEntry, p: Phases| e.pool.phases.contains(p);
        let request = (0..entries.len()).filter(|i| has(&entries[*i], Phases::REQUEST)).collect();
        let response = entries.iter().any(|e| has(e, Phases::RESPONSE));
        let chunk_idx: Vec<usize> =
            (0..entries.len()).rev().filter(|i| has(&entries[*i], Phases::RESPONSE_CHUNK)).collect();
        let mut chunk_pos = vec![None; entries.len()];
        for (pos, i) in chunk_idx.iter().enumerate() {
            chunk_pos[*i] = Some(pos);
        }
        let chunk = chunk_idx.iter().map(|i| Arc::clone(&entries[*i])).collect();
        let body_limit =
            |p: Phases| entries.iter().filter(|e| has(e, p)).map(|e| e.pool.limits.max_body).max();
        Chain {
            route: Arc::from(route),
            request_body: body_limit(Phases::REQUEST_BODY),
            response_body: body_limit(Phases::RESPONSE_BODY),
            entries,
            request,
            response,
            chunk,
            chunk_pos,
        }
    }

    /// True when some plugin of the chain transforms response chunks.
    pub fn streams_chunks(&self) -> bool {
        !self.chunk.is_empty()
    }

    /// True when the chain has no plugins at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The plugins, in request order.
    pub fn entries(&self) -> &[Arc<ChainEntry>] {
        &self.entries
    }

    /// Runs the request phase. `Some(response)`: a plugin answered (and the plugins
    /// before it ran their response phase on the answer); skip the upstream. The
    /// consumer and context the plugins set are left in `ex` for the response phase
    /// and the access log.
    ///
    /// (A boxed future rather than an `async fn`: the concrete future type trips the
    /// compiler's higher-ranked `Send` inference inside hyper's service.)
    pub fn on_request<'a>(
        &'a self,
        req: &'a mut Request<Body>,
        ex: &'a mut Exchange,
    ) -> BoxFuture<'a, Result<Option<Response<Body>>, PluginError>> {
        Box::pin(self.request_phase(req, ex))
    }

    async fn request_phase(
        &self,
        req: &mut Request<Body>,
        ex: &mut Exchange,
    ) -> Result<Option<Response<Body>>, PluginError> {
        if self.request.is_empty() {
            return Ok(None);
        }
        let mut slot = RequestSlot {
            method: std::mem::take(req.method_mut()),
            uri: std::mem::take(req.uri_mut()),
            headers: std::mem::take(req.headers_mut()),
            client_ip: Some(ex.peer.ip()),
            request_id: Some(ex.request_id.clone()),
            params: std::mem::take(&mut ex.params),
            consumer: ex.consumer.take(),
            context: std::mem::take(&mut ex.context),
            response_edits: std::mem::take(&mut ex.response_edits),
            ..RequestSlot::default()
        };
        slot.headers.reserve(HEADER_HEADROOM);
        // Buffered when the first plugin that reads it is reached: the plugins before
        // it (authentication, say) can refuse the request before its body is read.
        let mut unread =
            self.request_body.map(|limit| (std::mem::replace(req.body_mut(), body::empty()), limit));
        let result = self.run_request(&mut slot, ex, &mut unread).await;
        restore_request(req, slot, ex);
        if let Some((b, _)) = unread {
            *req.body_mut() = b;
        }
        let result = result.map_err(|(e, at)| {
            ex.failed_at = Some(at);
            e
        });
        match result? {
            None => Ok(None),
            Some((mut resp, answered_by)) => {
                // Unwind like middleware: the plugins that ran before the one that
                // answered see its response (a CORS plugin adds its headers to an
                // auth plugin's 401).
                self.run_response_phase(&mut resp, ex, Some(answered_by), &mut []).await?;
                Ok(Some(resp))
            }
        }
    }

    /// The request phase; `Some((response, i))` when entry `i` answered, `Err((e, i))`
    /// when entry `i` failed closed.
    async fn run_request(
        &self,
        slot: &mut RequestSlot,
        ex: &Exchange,
        unread: &mut Option<(Body, u64)>,
    ) -> Result<Option<(Response<Body>, usize)>, (PluginError, usize)> {
        for &i in &self.request {
            let entry = &self.entries[i];
            if entry.pool.phases.contains(Phases::REQUEST_BODY)
                && let Some((b, limit)) = unread.take()
            {
                match buffer(b, limit).await {
                    Ok(b) => slot.body = Some(b),
                    Err(kind) => return Err((self.error(entry, Phase::Request, kind), i)),
                }
            }
            slot.entry = i;
            let span = tracing::debug_span!("plugin", plugin = %entry.pool.plugin(), route = %self.route, phase = "on-request", request_id = ex.request_id.to_str().ok());
            let began = ex.trace.as_ref().filter(|t| t.sampled).map(|_| Instant::now());
            let step =
                run_step!(self, entry, Phase::Request, span, |inst| self.request_step(entry, inst, slot, ex));
            self.traced(ex, entry, "on-request", began, step.as_ref());
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Respond(resp)) => {
                    entry.pool.env().stats.record_answer(resp.status());
                    return Ok(Some((resp, i)));
                }
                Err(e) if entry.on_error == OnErrorConfig::FailOpen && e.kind.is_fault() => {}
                Err(e) => return Err((e, i)),
            }
        }
        Ok(None)
    }

    /// Runs the response phase of the plugins before the one whose request phase
    /// failed (see [`Exchange::failed_at`]) on the gateway's error answer, as for a
    /// plugin's own answer: a CORS plugin's headers reach the browser on a 500 too. A
    /// fault in this unwinding keeps the error answer as it is.
    pub fn on_error_answer<'a>(
        &'a self,
        resp: &'a mut Response<Body>,
        ex: &'a mut Exchange,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(at) = ex.failed_at.take() {
                // A fault here was logged where it happened; the first error stands.
                let _logged = self.run_response_phase(resp, ex, Some(at), &mut []).await;
            }
        })
    }

    /// Runs the response phase (last plugin first).
    /// The request's consumer and context are lent to the response phase and given
    /// back to `ex` afterwards (the access log reads the consumer).
    pub fn on_response<'a>(
        &'a self,
        resp: &'a mut Response<Body>,
        ex: &'a mut Exchange,
    ) -> BoxFuture<'a, Result<(), PluginError>> {
        Box::pin(self.response_phase(resp, ex))
    }

    async fn response_phase(&self, resp: &mut Response<Body>, ex: &mut Exchange) -> Result<(), PluginError> {
        let mut held = Vec::new();
        held.resize_with(self.chunk.len(), || Held::Nothing);
        if self.response || !ex.response_edits.is_empty() {
            self.run_response_phase(resp, ex, None, &mut held).await?;
        }
        if !self.chunk.is_empty() {
            let b = std::mem::replace(resp.body_mut(), body::empty());
            let stream = ChunkStream {
                entries: Arc::clone(&self.chunk),
                held,
                route: Arc::clone(&self.route),
                annotations: ex.annotations.clone(),
                finished: false,
                hold: ex.hold.clone(),
            };
            *resp.body_mut() = chunked(b, stream);
            resp.headers_mut().remove(CONTENT_LENGTH);
        }
        Ok(())
    }

    /// Runs the response phase last plugin first — with `before`, only for the
    /// entries before that one: each plugin's response edits from the request phase,
    /// then its `on-response` if it has one. Instances of entries that also have a
    /// chunk phase are kept in `held` (when it is not empty) for the chunks of this
    /// response.
    async fn run_response_phase(
        &self,
        resp: &mut Response<Body>,
        ex: &mut Exchange,
        before: Option<usize>,
        held: &mut [Held],
    ) -> Result<(), PluginError> {
        let mut edits = std::mem::take(&mut ex.response_edits);
        let calls = |i: usize| self.entries[i].pool.phases.contains(Phases::RESPONSE);
        // The last entry (before `before`) that has something to do starts the phase.
        let end = before.unwrap_or(self.entries.len());
        let Some(first) = (0..end).rev().find(|&i| calls(i) || edits.has(i)) else { return Ok(()) };
        let mut slot = ResponseSlot {
            status: resp.status(),
            headers: std::mem::take(resp.headers_mut()),
            consumer: ex.consumer.take(),
            context: std::mem::take(&mut ex.context),
            ..ResponseSlot::default()
        };
        slot.headers.reserve(HEADER_HEADROOM);
        if let Some(limit) = self.response_body {
            match buffer(std::mem::replace(resp.body_mut(), body::empty()), limit).await {
                Ok(b) => slot.body = Some(b),
                Err(kind) => {
                    restore_response(resp, slot, ex);
                    return Err(self.error(&self.entries[first], Phase::Response, kind));
                }
            }
        }
        for i in (0..=first).rev() {
            edits.apply(i, &mut slot.headers);
            if !calls(i) {
                continue;
            }
            let entry = &self.entries[i];
            let span = tracing::debug_span!("plugin", plugin = %entry.pool.plugin(), route = %self.route, phase = "on-response", request_id = ex.request_id.to_str().ok());
            let pos = self.chunk_pos[i].filter(|_| !held.is_empty());
            let began = ex.trace.as_ref().filter(|t| t.sampled).map(|_| Instant::now());
            let step = run_step!(self, entry, Phase::Response, span, |inst| self.response_step(
                entry,
                inst,
                &mut slot,
                ex,
                pos.is_some()
            ));
            self.traced(ex, entry, "on-response", began, step.as_ref().map(|(s, _)| s));
            let step = step.map(|(step, kept)| {
                if let (Some(pos), Some(inst)) = (pos, kept) {
                    held[pos] = Held::Instance(inst);
                }
                step
            });
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Respond(r)) => {
                    give_back(ex, &mut slot);
                    *resp = r;
                    return Ok(());
                }
                Err(e) if entry.on_error == OnErrorConfig::FailOpen && e.kind.is_fault() => {
                    // Skipped for this response: its chunks are not its to see.
                    if let Some(pos) = pos {
                        held[pos] = Held::Skipped;
                    }
                }
                Err(e) => {
                    restore_response(resp, slot, ex);
                    return Err(e);
                }
            }
        }
        restore_response(resp, slot, ex);
        Ok(())
    }

    /// Records a plugin call's span when the request is traced.
    fn traced(
        &self,
        ex: &Exchange,
        entry: &ChainEntry,
        phase: &str,
        began: Option<Instant>,
        step: Result<&Step, &PluginError>,
    ) {
        use crate::observability::trace::Decision;
        let (Some(trace), Some(began)) = (&ex.trace, began) else { return };
        let decision = match step {
            Ok(Step::Continue) => Decision::Continue,
            Ok(Step::Respond(r)) => Decision::Respond(r.status().as_u16()),
            Err(e) => Decision::Failed(e.code()),
        };
        trace.plugin_call(entry.pool.plugin(), &self.route, phase, began, decision);
    }

    /// An instance of `entry`: at once when one is idle (or can be made without
    /// waiting), else after waiting in a boxed future, so the phase's own future
    /// stays small.
    async fn checkout(&self, entry: &ChainEntry, phase: Phase) -> Result<Instance, PluginError> {
        let got = match entry.pool.checkout_now(&self.route) {
            Some(got) => got,
            None => Box::pin(entry.pool.checkout(&self.route)).await,
        };
        got.map_err(|k| self.error(entry, phase, k))
    }

    async fn request_step(
        &self,
        entry: &ChainEntry,
        mut inst: Instance,
        slot: &mut RequestSlot,
        ex: &Exchange,
    ) -> Result<Step, PluginError> {
        lend(&mut inst, ex);
        let started = Instant::now();
        entry.pool.arm(&mut inst, started);
        let (inst, result) = request_call(inst, slot, entry).await;
        self.finish(entry, Phase::Request, started, inst, result, false).map(|(step, _)| step)
    }

    /// With `keep`, a healthy instance is handed back instead of returned to the pool.
    async fn response_step(
        &self,
        entry: &ChainEntry,
        mut inst: Instance,
        slot: &mut ResponseSlot,
        ex: &Exchange,
        keep: bool,
    ) -> Result<(Step, Option<Instance>), PluginError> {
        lend(&mut inst, ex);
        let started = Instant::now();
        entry.pool.arm(&mut inst, started);
        let (inst, result) = response_call(inst, slot, entry).await;
        self.finish(entry, Phase::Response, started, inst, result, keep)
    }

    /// Records the call, and returns the instance to the pool (or, with `keep`, to
    /// the caller) unless it faulted.
    fn finish(
        &self,
        entry: &ChainEntry,
        phase: Phase,
        started: Instant,
        mut inst: Instance,
        result: Result<Step, CallFault>,
        keep: bool,
    ) -> Result<(Step, Option<Instance>), PluginError> {
        let pool = &entry.pool;
        pool.env().stats.record_call(phase, started.elapsed());
        let state = inst.store.data_mut();
        state.annotations = None;
        state.traceparent = None;
        match result {
            Ok(step) if keep => Ok((step, Some(inst))),
            Ok(step) => {
                pool.checkin(inst);
                Ok((step, None))
            }
            Err(CallFault::Wasm(e)) => {
                let kind =
                    PluginErrorKind::from_call(e, inst.store.data(), pool.limits.deadline, "limits.deadline");
                Err(self.error(entry, phase, kind))
            }
            Err(CallFault::BadReturn(kind)) => {
                // The instance is healthy; only its answer was wrong.
                pool.checkin(inst);
                Err(self.error(entry, phase, kind))
            }
        }
    }

    fn error(&self, entry: &ChainEntry, phase: Phase, kind: PluginErrorKind) -> PluginError {
        let plugin = entry.pool.plugin();
        entry.pool.env().stats.record_error(&kind);
        let err = PluginError { route: self.route.to_string(), plugin: plugin.to_string(), phase, kind };
        tracing::warn!(plugin = %plugin, route = %self.route, phase = %phase, kind = err.kind.label(), fail_open = entry.on_error == OnErrorConfig::FailOpen, error = %err, "plugin failed");
        err
    }
}

/// The result of a step on the synchronous path, which never waits (its instance
/// is instantiated synchronously too), so its future completes on the first poll.
fn now<T>(step: impl std::future::Future<Output = T>) -> T {
    step.now_or_never().expect("a plugin on the synchronous call path never waits")
}

enum CallFault {
    Wasm(wasmtime::Error),
    /// A returned answer the gateway cannot send (`BadReturn`, or `Output` past the
    /// output bounds).
    BadReturn(PluginErrorKind),
}

async fn request_call(
    mut inst: Instance,
    slot: &mut RequestSlot,
    entry: &ChainEntry,
) -> (Instance, Result<Step, CallFault>) {
    let state = inst.store.data_mut();
    std::mem::swap(&mut state.req, slot);
    state.req.body_allowed = entry.pool.phases.contains(Phases::REQUEST_BODY);
    let r = inst.on_request().await;
    std::mem::swap(&mut inst.store.data_mut().req, slot);
    let r = match r {
        Ok(d) => decide(d),
        Err(e) => Err(CallFault::Wasm(e)),
    };
    (inst, r)
}

async fn response_call(
    mut inst: Instance,
    slot: &mut ResponseSlot,
    entry: &ChainEntry,
) -> (Instance, Result<Step, CallFault>) {
    let state = inst.store.data_mut();
    std::mem::swap(&mut state.resp, slot);
    state.resp.body_allowed = entry.pool.phases.contains(Phases::RESPONSE_BODY);
    let r = inst.on_response().await;
    std::mem::swap(&mut inst.store.data_mut().resp, slot);
    let r = match r {
        Ok(d) => decide(d),
        Err(e) => Err(CallFault::Wasm(e)),
    };
    (inst, r)
}

fn decide(d: Decision) -> Result<Step, CallFault> {
    match d {
        Decision::Continue => Ok(Step::Continue),
        Decision::Respond(spec) => build_response(spec).map(Step::Respond).map_err(CallFault::BadReturn),
    }
}

/// Builds the response a plugin asked for, checking what it sent.
fn build_response(spec: ResponseSpec) -> Result<Response<Body>, PluginErrorKind> {
    let bad = PluginErrorKind::BadReturn;
    if spec.headers.len() > output::MAX_HEADERS {
        return Err(PluginErrorKind::Output(output::too_many(spec.headers.len()).to_string()));
    }
    let status = crate::error::final_status(spec.status)
        .ok_or_else(|| bad(format!("invalid status {} (an answer's status is 200 to 999)", spec.status)))?;
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    for (k, v) in spec.headers {
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad(format!("invalid header name `{k}`")))?;
        let value = HeaderValue::from_str(&v).map_err(|_| bad(format!("invalid value for header `{k}`")))?;
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        resp.headers_mut().append(name, value);
    }
    *resp.body_mut() = body::full(spec.body);
    Ok(resp)
}

async fn buffer(mut b: Body, limit: u64) -> Result<Bytes, PluginErrorKind> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = b.frame().await {
        let frame = frame.map_err(|e| PluginErrorKind::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(PluginErrorKind::BodyTooLarge(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn restore_request(req: &mut Request<Body>, slot: RequestSlot, ex: &mut Exchange) {
    ex.params = slot.params;
    ex.response_edits = slot.response_edits;
    ex.consumer = slot.consumer;
    ex.context = slot.context;
    *req.method_mut() = slot.method;
    *req.uri_mut() = slot.uri;
    *req.headers_mut() = slot.headers;
    if let Some(b) = slot.body {
        if slot.body_changed {
            req.headers_mut().remove(TRANSFER_ENCODING);
            req.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
        }
        *req.body_mut() = body::full(b);
    }
    if let Some(up) = slot.upstream {
        req.extensions_mut().insert(UpstreamOverride(up));
    }
}

/// Gives the consumer and context back to `ex` after a response phase: the access
/// log (and, for an answer made in the request phase, the proxy) still reads them.
fn give_back(ex: &mut Exchange, slot: &mut ResponseSlot) {
    ex.consumer = slot.consumer.take();
    ex.context = std::mem::take(&mut slot.context);
}

fn restore_response(resp: &mut Response<Body>, mut slot: ResponseSlot, ex: &mut Exchange) {
    give_back(ex, &mut slot);
    *resp.status_mut() = slot.status;
    *resp.headers_mut() = slot.headers;
    if let Some(b) = slot.body {
        if slot.body_changed {
            resp.headers_mut().remove(TRANSFER_ENCODING);
            resp.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
        }
        *resp.body_mut() = body::full(b);
    }
}

/// What a chunk entry has for the response being streamed.
enum Held {
    /// No instance yet: the first chunk checks one out.
    Nothing,
    /// The instance that ran its `on-response` (or an earlier chunk).
    Instance(Instance),
    /// It failed open in this response (or found no instance): the rest of the
    /// stream passes it by, as a fresh instance would not have the stream's state.
    Skipped,
}

/// The chunk phase of one response: per chunk entry (reverse chain order), the
/// instance serving every chunk of this response — the one that ran its
/// `on-response`, when it has that phase — so a plugin can keep per-stream state
/// (an SSE line buffer, a translation in progress) between calls. After the last
/// chunk the instances go back to their pools. A stream dropped early (the client
/// went away) still gets its `last` call, in a task of its own, so a plugin can
/// account for what was sent; its output goes nowhere.
/// Lends the request's facts a host call may need (its annotations, its
/// `traceparent`) to `inst` for one phase call; [`Chain::finish`] takes them back.
fn lend(inst: &mut Instance, ex: &Exchange) {
    let state = inst.store.data_mut();
    state.annotations.clone_from(&ex.annotations);
    state.traceparent = ex.trace.as_ref().map(|t| t.traceparent().clone());
}

struct ChunkStream {
    entries: Arc<[Arc<ChainEntry>]>,
    held: Vec<Held>,
    route: Arc<str>,
    annotations: Option<Annotations>,
    finished: bool,
    /// The request's record waits for this stream's last call (see [`Exchange::hold`]).
    hold: Option<Arc<crate::observability::access::Hold>>,
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut rest = ChunkStream {
            entries: Arc::clone(&self.entries),
            held: std::mem::take(&mut self.held),
            route: Arc::clone(&self.route),
            annotations: self.annotations.clone(),
            // Already on its last call: if the runtime is shutting down, the task is
            // dropped unrun, and must not spawn itself again (that recursed until the
            // stack overflowed).
            finished: true,
            hold: self.hold.take(),
        };
        runtime.spawn(async move {
            let _ = rest.transform(Bytes::new(), true).await;
        });
    }
}

impl ChunkStream {
    async fn transform(&mut self, mut data: Bytes, last: bool) -> Result<Bytes, PluginError> {
        // Whatever happens now, this is the last call the stream makes.
        self.finished |= last;
        for (k, entry) in self.entries.iter().enumerate() {
            let pool = &entry.pool;
            let err = |kind: PluginErrorKind| {
                pool.env().stats.record_error(&kind);
                PluginError {
                    route: self.route.to_string(),
                    plugin: pool.plugin().to_string(),
                    phase: Phase::ResponseChunk,
                    kind,
                }
            };
            let mut inst = match std::mem::replace(&mut self.held[k], Held::Nothing) {
                Held::Instance(inst) => inst,
                Held::Skipped => {
                    self.held[k] = Held::Skipped;
                    continue;
                }
                Held::Nothing => match pool.checkout(&self.route).await {
                    Ok(i) => i,
                    Err(kind) if entry.on_error == OnErrorConfig::FailOpen => {
                        err(kind);
                        self.held[k] = Held::Skipped;
                        continue;
                    }
                    Err(kind) => return Err(err(kind)),
                },
            };
            inst.store.data_mut().annotations.clone_from(&self.annotations);
            let started = Instant::now();
            pool.arm(&mut inst, started);
            let r = inst.on_response_chunk(&data, last).await;
            pool.env().stats.record_call(Phase::ResponseChunk, started.elapsed());
            inst.store.data_mut().annotations = None;
            match r {
                Ok(out) => {
                    if last {
                        pool.checkin(inst);
                    } else {
                        self.held[k] = Held::Instance(inst);
                    }
                    data = Bytes::from(out);
                }
                Err(e) => {
                    let e = err(PluginErrorKind::from_call(
                        e,
                        inst.store.data(),
                        pool.limits.deadline,
                        "limits.deadline",
                    ));
                    tracing::warn!(plugin = %pool.plugin(), route = %self.route, error = %e, "plugin failed");
                    if entry.on_error != OnErrorConfig::FailOpen {
                        return Err(e);
                    }
                    // Its state for this stream died with the instance.
                    self.held[k] = Held::Skipped;
                }
            }
        }
        Ok(data)
    }
}

/// Wraps a response body so each chunk passes through the chunk plugins.
fn chunked(b: Body, stream: ChunkStream) -> Body {
    use futures_util::StreamExt;
    use http_body::Frame;

    let frames = http_body_util::BodyStream::new(b);
    let chunks = futures_util::stream::unfold(Some((frames, stream)), |state| async move {
        let (mut frames, mut stream) = state?;
        let (data, last) = match frames.next().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => (data, false),
                Err(trailers) => return Some((Ok(trailers), Some((frames, stream)))),
            },
            Some(Err(e)) => return Some((Err(e), None)),
            None => (Bytes::new(), true),
        };
        match stream.transform(data, last).await {
            Ok(out) => Some((Ok(Frame::data(out)), (!last).then_some((frames, stream)))),
            Err(e) => Some((Err(Box::new(e) as crate::body::BoxError), None)),
        }
    });
    body::boxed(http_body_util::StreamBody::new(chunks))
}

#[allow(dead_code)]
fn _assert_send(c: &Chain, r: &mut Request<Body>, resp: &mut Response<Body>, ex: &mut Exchange) {
    fn is_send<T: Send>(_: T) {}
    is_send(c.on_request(r, ex));
    is_send(c.on_response(resp, ex));
}
