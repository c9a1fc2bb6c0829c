//! Upstream pools: the last step of listener → router → chain → upstream.
//!
//! An [`Upstream`] is built once per snapshot from its config and shared by every
//! request of that generation. [`Upstream::forward`] does, per attempt:
//!
//! 1. pick a target ([`balance`]) among those not ejected ([`health`] passive), not
//!    marked down by probes ([`health`] active) and not behind an open circuit
//!    ([`breaker`]); a half-open circuit lets exactly one probe request through;
//! 2. prepare the request for that target and send it over a pooled connection
//!    ([`pool`], TLS by [`tls`]) within the connect and request timeouts;
//! 3. report the outcome (connect errors, timeouts, 5xx are failures) to the target's
//!    passive health and breaker;
//! 4. on failure, retry on another target when it is safe — nothing was sent, or the
//!    request is idempotent and body-less — and the [`budget`] allows it.
//!
//! The response comes back as soon as its head arrives; its body streams, carrying
//! the in-flight count of its target until it ends. The response's extensions hold
//! an [`UpstreamTarget`] naming the target, and for `101 Switching Protocols` the
//! switched connection, which [`UpstreamUpgrade::take`] hands over.
//!
//! The recipe for the gateway: `Upstream::build` → `Arc::new` →
//! [`Upstream::start_health_checks`]; dropping the last `Arc` stops its tasks.

mod balance;
mod breaker;
mod budget;
mod h1;
mod health;
mod pool;
mod settings;
mod tls;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Instant;
use tracing::{debug, warn};

pub use breaker::CircuitState;
pub(crate) use h1::UpstreamUpgrade;
pub(crate) use pool::{Outgoing, Stream};

use self::balance::Balancer;
use self::breaker::{Admission, Breaker};
use self::budget::RetryBudget;
use self::health::{Active, Passive};
use self::pool::{Pool, ResponseBody, SendError};
use self::settings::Settings;
use crate::body::{self, Body};
use crate::config::{DEFAULT_WEIGHT, Name, Problem, UpstreamConfig};
use crate::error::ProxyError;
use crate::observability::metrics::{Attempt, Registry, Retry, TargetMetrics, UpstreamMetrics};

/// The target that answered, inserted into every response's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget(pub Arc<str>);

/// One target's state, for the admin API and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    /// `host:port` of the target.
    pub address: Arc<str>,
    /// The active health checks' verdict (true when there are none).
    pub healthy: bool,
    /// Ejected by passive health right now.
    pub ejected: bool,
    /// The circuit breaker's state.
    pub circuit: CircuitState,
    /// Requests in flight (until their response body ends).
    pub in_flight: usize,
}

/// One upstream pool, built from its config.
#[derive(Debug)]
pub struct Upstream {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// The state shared by the upstream, its requests' bodies and its background tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    name: Name,
    targets: Box<[Target]>,
    weights: Box<[u32]>,
    balancer: Balancer,
    settings: Settings,
    budget: RetryBudget,
    epoch: Instant,
    metrics: Arc<UpstreamMetrics>,
}

/// One target of the pool with its connections and health.
#[derive(Debug)]
pub(crate) struct Target {
    address: Arc<str>,
    pool: Arc<Pool>,
    in_flight: Arc<AtomicUsize>,
    passive: Passive,
    active: Active,
    breaker: Breaker,
    metrics: Arc<TargetMetrics>,
}

impl Upstream {
    /// Builds the pool. Problems are reported at `upstreams.<name>…`; relative file
    /// paths (CA bundles) are resolved against `base_dir`.
    /// Counters come from `metrics`, by name.
    pub fn build(
        name: &Name,
        config: &UpstreamConfig,
        base_dir: &Path,
        metrics: &Registry,
    ) -> Result<Upstream, Vec<Problem>> {
        let settings = Settings::resolve(name, config, base_dir)?;
        let mut problems = Vec::new();
        let mut targets = Vec::with_capacity(config.targets.len());
        for (i, t) in config.targets.iter().enumerate() {
            let address: Arc<str> = t.address.to_string().into();
            let server_name = match &settings.pool.tls {
                Some(tls) if tls.server_name.is_none() => match tls::target_server_name(&t.address.host) {
                    Ok(n) => Some(n),
                    Err(message) => {
                        problems
                            .push(Problem::new(format!("upstreams.{name}.targets[{i}].address"), message));
                        None
                    }
                },
                _ => None,
            };
            let pool = Pool::new(
                Arc::clone(&address),
                t.address.host.clone(),
                t.address.port,
                server_name,
                Arc::clone(&settings.pool),
            );
            targets.push(Target {
                address: Arc::clone(&address),
                pool: Arc::new(pool),
                in_flight: Arc::new(AtomicUsize::new(0)),
                passive: Passive::new(settings.passive),
                active: Active::new(),
                breaker: Breaker::new(settings.breaker),
                metrics: metrics.target(name.as_str(), &address),
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let weights: Box<[u32]> = config.targets.iter().map(|t| t.weight.unwrap_or(DEFAULT_WEIGHT)).collect();
        let shared = Shared {
            name: name.clone(),
            balancer: Balancer::new(settings.balance, &weights),
            weights,
            targets: targets.into(),
            budget: RetryBudget::new(settings.retry.budget_percent, settings.retry.min_per_second),
            settings,
            epoch: Instant::now(),
            metrics: metrics.upstream(name.as_str()),
        };
        Ok(Upstream { shared: Arc::new(shared), tasks: Mutex::new(Vec::new()) })
    }

    /// The pool's name.
    pub fn name(&self) -> &Name {
        &self.shared.name
    }

    /// Starts the active health checks, one probe task per target (a no-op without
    /// `health.active`, or when already started). The tasks stop when the upstream is
    /// dropped. Must be called inside a tokio runtime.
    pub fn start_health_checks(self: &Arc<Self>) {
        let Some(active) = &self.shared.settings.active else { return };
        let mut tasks = self.tasks.lock().unwrap();
        if tasks.is_empty() {
            tasks.extend(health::spawn_probes(&self.shared, active));
        }
    }

    /// The pool's retry counters.
    pub fn metrics(&self) -> &UpstreamMetrics {
        &self.shared.metrics
    }

    /// Each target's address and attempt and circuit counters.
    pub fn target_metrics(&self) -> impl Iterator<Item = (&str, &TargetMetrics)> {
        self.shared.targets.iter().map(|t| (&*t.address, &*t.metrics))
    }

    /// Every target's current state.
    pub fn targets_status(&self) -> Vec<TargetStatus> {
        let now = self.shared.now_ms();
        self.shared
            .targets
            .iter()
            .map(|t| TargetStatus {
                address: Arc::clone(&t.address),
                healthy: t.active.is_healthy(),
                ejected: t.passive.is_ejected(now),
                circuit: t.breaker.state(),
                in_flight: t.in_flight.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Sends `req` to a target of this pool, retrying where safe, and returns the
    /// target's response head with its body still streaming, with an
    /// [`UpstreamTarget`] naming the target in its extensions.
    pub async fn forward(&self, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let (mut resp, target) = self.forward_to(Outgoing::new(req), Instant::now()).await?;
        resp.extensions_mut().insert(UpstreamTarget(target));
        Ok(resp)
    }

    /// [`Upstream::forward`], with the target's address returned beside the response
    /// rather than in its extensions (a first extension costs the response a map).
    ///
    /// `now` is the time the request is sent at, read by the caller: the first
    /// attempt's target choice, pooled connection and timeout deadline all use it
    /// rather than a clock read each (~25 ns apiece; BENCHMARKS.md, P1). A retry
    /// reads the clock afresh.
    #[allow(clippy::manual_async_fn, reason = "keeps the request in place: see the proxy module's docs")]
    pub(crate) fn forward_to(
        &self,
        req: Outgoing,
        now: Instant,
    ) -> impl Future<Output = Result<Answered, ProxyError>> {
        async move {
            let s = &*self.shared;
            s.budget.record_request_at(now);
            // Set by the proxy when the request has a body: a failure while the gateway
            // waits on the client's body is not the target's fault.
            let body_state = req.head.extensions.get::<Arc<crate::body::ClientBodyState>>().cloned();
            // Scoped so that what is moved on (the parts, each attempt's request) stops
            // taking room in this future across the sends: every request's future is as
            // large as what it keeps across its longest wait.
            let (mut req, replay) = {
                let Outgoing { head, body } = req;
                let (body, replay) = replayable(&s.settings.retry, &head, body).await?;
                (Some(Outgoing { head, body }), replay)
            };
            // The head of the last attempt's request, when it may be resent: the pool
            // hands it back (`keep_head`) rather than this copying it up front.
            let mut head: Option<Box<Parts>> = None;
            let attempts = s.settings.retry.attempts.saturating_add(1);
            let mut tried: u128 = 0;
            let mut last: Option<Result<Answered, ProxyError>> = None;

            for attempt in 1..=attempts {
                let now = if attempt == 1 { now } else { Instant::now() };
                let Some((index, admission)) = s.select(tried, s.ms_at(now)) else { break };
                tried |= bit(index);
                let target = &s.targets[index];
                let resend = || Some(Outgoing { head: head.take()?, body: replay.as_ref()?.body() });
                let Some(mut request) = req.take().or_else(resend) else {
                    break;
                };
                target.pool.prepare(&mut request.head);
                let in_flight = InFlight::enter(&target.in_flight);
                let mut outcome = Outcome { shared: s, index, admission, reported: false };
                let may_retry = attempt < attempts;

                // Awaited where made: made first, the pool's ~2 KB future was copied into
                // this one.
                match target.pool.send(request, replay.is_some(), now).await {
                    Ok((resp, kept)) => {
                        head = kept;
                        target.metrics.attempt(Attempt::Response);
                        let status = resp.status();
                        outcome.report(!status.is_server_error());
                        let read_timeout = s.settings.pool.read_timeout;
                        let resp = resp
                            .map(|inner| body::boxed_direct(Tracked::new(inner, in_flight, read_timeout)));
                        if may_retry && head.is_some() && s.settings.retry.on_status.contains(&status) {
                            // Honour the target's Retry-After, up to the configured wait; a
                            // longer one goes to the client as it is.
                            let wait = retry_after(resp.headers());
                            if wait.is_none_or(|w| w <= s.settings.retry.max_retry_after)
                                && s.budget.try_withdraw()
                            {
                                debug!(upstream = %s.name, target = %target.address, status = status.as_u16(), ?wait, "retrying on status");
                                s.metrics.retry(Retry::Status);
                                last = Some(Ok((resp, Arc::clone(&target.address))));
                                if let Some(wait) = wait.filter(|w| !w.is_zero()) {
                                    Box::pin(tokio::time::sleep(wait)).await;
                                }
                                continue;
                            }
                        }
                        return Ok((resp, Arc::clone(&target.address)));
                    }
                    Err(SendError { error, request, head: kept }) => {
                        head = kept;
                        let client_fault =
                            matches!(error, ProxyError::ClientBody(_) | ProxyError::BodyTooLarge { .. })
                                || body_state.as_ref().is_some_and(|b| b.client_at_fault());
                        if client_fault {
                            outcome.abandon();
                            return Err(error);
                        }
                        target.metrics.attempt(Attempt::of(&error));
                        outcome.report(false);
                        debug!(upstream = %s.name, target = %target.address, %error, attempt, "upstream attempt failed");
                        let safe = request.is_some() || head.is_some();
                        if may_retry && safe && s.budget.try_withdraw() {
                            s.metrics.retry(Retry::Error);
                            req = request;
                            last = Some(Err(error));
                            continue;
                        }
                        return Err(error);
                    }
                }
            }
            last.unwrap_or_else(|| Err(ProxyError::NoAvailableTarget { upstream: s.name.to_string() }))
        }
    }
}

/// A target's response and the target's address ([`Upstream::forward_to`]).
pub type Answered = (Response<Body>, Arc<str>);

impl Drop for Upstream {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().map(std::mem::take).unwrap_or_default() {
            task.abort();
        }
    }
}

impl Shared {
    /// Milliseconds since the upstream was built, plus one (so 0 can mean "never").
    fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// [`Shared::now_ms`] at `now`.
    fn ms_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Picks an available target, preferring ones not in `tried`, and admits the
    /// request through its breaker, at `now` ([`Shared::ms_at`]).
    fn select(&self, tried: u128, now: u64) -> Option<(usize, Admission)> {
        let mut denied: u128 = 0;
        for _ in 0..=self.targets.len() {
            let usable = |i: usize, skip: u128| skip & bit(i) == 0 && self.targets[i].is_available(now);
            let load = |i: usize| self.targets[i].in_flight.load(Ordering::Relaxed);
            let index =
                self.balancer.pick(&self.weights, |i| usable(i, tried | denied), load).or_else(|| {
                    (tried != 0).then(|| self.balancer.pick(&self.weights, |i| usable(i, denied), load))?
                })?;
            match self.targets[index].breaker.try_acquire(now) {
                Some(admission) => return Some((index, admission)),
                None => denied |= bit(index),
            }
        }
        None
    }
}

impl Target {
    fn is_available(&self, now_ms: u64) -> bool {
        self.active.is_healthy() && !self.passive.is_ejected(now_ms) && self.breaker.may_admit(now_ms)
    }
}

/// Bit `i` of a target set; targets past 128 are never excluded.
fn bit(i: usize) -> u128 {
    if i < 128 { 1 << i } else { 0 }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Decides whether the request can be resent after it was written, and keeps the
/// body a resend needs when `non_idempotent` allows replaying one of known length
/// up to `max_replay_body` (read now, so it can be sent again). The head comes back
/// from each attempt ([`Pool::send`]'s `keep_head`). `None` when it cannot be resent.
async fn replayable(
    retry: &settings::RetrySettings,
    parts: &Parts,
    body: Body,
) -> Result<(Body, Option<Replay>), ProxyError> {
    if retry.attempts == 0 || !(retry.non_idempotent || is_idempotent(&parts.method)) {
        return Ok((body, None));
    }
    if body.is_end_stream() {
        return Ok((body, Some(Replay(Bytes::new()))));
    }
    let small = body.size_hint().exact().is_some_and(|n| n <= retry.max_replay_body);
    if !(retry.non_idempotent && small) {
        return Ok((body, None));
    }
    // Boxed: rare, and the collect future would otherwise add to every request's.
    let bytes =
        Box::pin(http_body_util::BodyExt::collect(body)).await.map_err(ProxyError::ClientBody)?.to_bytes();
    Ok((body::full(bytes.clone()), Some(Replay(bytes))))
}

/// A `Retry-After` header as a wait: delay-seconds, or an HTTP date (0 if past).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

/// A request that may be resent, with its body (empty for none).
struct Replay(Bytes);

impl Replay {
    fn body(&self) -> Body {
        if self.0.is_empty() { body::empty() } else { body::full(self.0.clone()) }
    }
}

/// Reports one attempt's outcome to its target's passive health and breaker; an
/// attempt dropped without an outcome (the client went away) gives back a half-open
/// probe slot instead of wedging the circuit.
struct Outcome<'a> {
    shared: &'a Shared,
    index: usize,
    admission: Admission,
    reported: bool,
}

impl Outcome<'_> {
    fn report(&mut self, success: bool) {
        self.reported = true;
        let target = &self.shared.targets[self.index];
        if success {
            target.passive.on_success();
            target.breaker.on_success(self.admission);
        } else {
            let now = self.shared.now_ms();
            if target.passive.on_failure(now) {
                debug!(upstream = %self.shared.name, target = %target.address, "target ejected");
            }
            if target.breaker.on_failure(self.admission, now) {
                target.metrics.circuit_opened();
            }
        }
    }

    fn abandon(&mut self) {
        self.reported = true;
        if self.admission == Admission::Probe {
            self.shared.targets[self.index].breaker.abandon_probe();
        }
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.abandon();
        }
    }
}

/// Counts a request in flight on its target until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The upstream's response body, leaving the in-flight count when it ends, and cut
/// with [`ReadTimeout`] when the target sends nothing for `timeouts.read`.
struct Tracked {
    inner: ResponseBody,
    in_flight: Option<InFlight>,
    read_timeout: Duration,
    /// Made the first time a poll finds nothing to read (a body that arrives with its
    /// head, as most do, never makes one), and pushed back after each frame.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame arrived since `stall` was last set.
    progressed: bool,
}

impl Tracked {
    fn new(inner: ResponseBody, in_flight: InFlight, read_timeout: Duration) -> Tracked {
        Tracked { inner, in_flight: Some(in_flight), read_timeout, stall: None, progressed: false }
    }
}

/// The target sent no piece of a response body for `timeouts.read`.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} in the middle of the response body (timeouts.read)")]
pub struct ReadTimeout(Duration);

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || this.inner.is_end_stream() {
            this.in_flight = None;
        }
        match polled {
            Poll::Ready(frame) => {
                this.progressed = true;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.read_timeout;
                let stall = match &mut this.stall {
                    Some(stall) if this.progressed => {
                        stall.as_mut().reset(deadline);
                        stall
                    }
                    Some(stall) => stall,
                    None => this.stall.insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.progressed = false;
                if stall.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.in_flight = None;
                warn!(timeout = ?this.read_timeout, "upstream stalled mid-body: response cut");
                Poll::Ready(Some(Err(ReadTimeout(this.read_timeout).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
