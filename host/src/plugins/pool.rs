//! Warm instances: an [`InstancePool`] per plugin entry keeps instantiated and
//! configured instances and reuses them across requests (measured: ~1 µs per call on
//! a warm instance against ~25 µs to instantiate and configure a fresh one). An
//! instance that faulted is dropped, never returned.
//!
//! Recipe: [`InstancePool::new`] at snapshot build (instantiates and configures the
//! first instance and the `warm` ones, so a bad config fails the build) →
//! [`InstancePool::checkout_now`], else [`InstancePool::checkout`], per call →
//! [`InstancePool::checkin`] when the call succeeded → [`InstancePool::sweep`] now
//! and then, to give back what a burst left idle.
//!
//! An entry never has more than `limits.max_instances` instances, idle and in use:
//! a call that finds none free waits for one (within its deadline) rather than
//! instantiating without bound, and healthy instances stay warm after a burst (up
//! to `limits.max_idle`, until `limits.idle_timeout` shows they are not needed), so
//! a steady load never pays for `configure` on the request path.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt;
use tokio::sync::Notify;
use wasmtime::Store;
use wasmtime::component::Resource;

use super::bindings::sluice::plugin::types::{Decision, PluginInfo};
use super::bindings::{Phases, Plugin, PluginPre, sync};
use super::deadline::CallTiming;
use super::error::{Phase, PluginErrorKind};
use super::host_api::HostEnv;
use super::limits::Limits;
use super::state::PluginState;

/// How an entry's exports are called (see [`super::bindings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPath {
    /// A plain call on the caller's stack: nothing the plugin imports can wait.
    Sync,
    /// `call_async` on a fiber: the plugin may wait (granted `http`, Redis kv, a timer).
    Async,
}

/// The pre-instantiated component of an entry, for the paths it may take.
#[derive(Clone)]
pub struct Pre {
    /// Synchronous exports, when the entry may take that path (nothing it imports
    /// can wait).
    sync: Option<sync::PluginPre<PluginState>>,
    /// Asynchronous exports: every entry has them, for an entry on the synchronous
    /// path moves here when one of its calls runs long (see [`super::deadline`]).
    async_: PluginPre<PluginState>,
}

impl Pre {
    /// An entry's exports: `sync` when it may take the synchronous path.
    pub fn new(sync: Option<sync::PluginPre<PluginState>>, async_: PluginPre<PluginState>) -> Pre {
        Pre { sync, async_ }
    }

    async fn instantiate(&self, store: &mut Store<PluginState>, path: CallPath) -> wasmtime::Result<Exports> {
        Ok(match (&self.sync, path) {
            (Some(pre), CallPath::Sync) => Exports::Sync(pre.instantiate(store)?),
            _ => Exports::Async(self.async_.instantiate_async(store).await?),
        })
    }
}

enum Exports {
    Sync(sync::Plugin),
    Async(Plugin),
}

/// One instantiated, configured plugin instance and its store.
pub struct Instance {
    /// The store (request/response slots, limits, grants).
    pub store: Store<PluginState>,
    exports: Exports,
    /// Given back after the store is dropped (fields drop in order), so a waiter
    /// woken by it finds the engine's slot free too.
    _place: Place,
}

/// Calls an export on the instance's path: `$call` with a plain call, or awaited
/// on a fiber (counted, so a test can tell the paths apart).
macro_rules! call {
    ($inst:expr, $call:ident ( $($arg:expr),* )) => {
        match &$inst.exports {
            Exports::Sync(p) => p.$call(&mut $inst.store, $($arg),*),
            Exports::Async(p) => {
                $inst.store.data().env.stats.record_async_call();
                p.$call(&mut $inst.store, $($arg),*).await
            }
        }
    };
}

impl Instance {
    /// The path this instance is called on.
    pub fn path(&self) -> CallPath {
        match self.exports {
            Exports::Sync(_) => CallPath::Sync,
            Exports::Async(_) => CallPath::Async,
        }
    }

    /// `on-request` with the store's request slot.
    pub async fn on_request(&mut self) -> wasmtime::Result<Decision> {
        call!(self, call_on_request(Resource::new_borrow(super::state::REQUEST_REP)))
    }

    /// `on-response` with the store's response slot.
    pub async fn on_response(&mut self) -> wasmtime::Result<Decision> {
        call!(self, call_on_response(Resource::new_borrow(super::state::RESPONSE_REP)))
    }

    /// `on-response-chunk`.
    pub async fn on_response_chunk(&mut self, chunk: &[u8], last: bool) -> wasmtime::Result<Vec<u8>> {
        call!(self, call_on_response_chunk(chunk, last))
    }

    async fn configure(&mut self, config: &str) -> wasmtime::Result<Result<(), String>> {
        call!(self, call_configure(config))
    }

    async fn info(&mut self) -> wasmtime::Result<PluginInfo> {
        call!(self, call_info())
    }
}

/// The warm instances of one plugin entry (one plugin with one config), and the
/// bound on how many it may have at once.
pub struct InstancePool {
    pre: Pre,
    env: Arc<HostEnv>,
    config_json: String,
    /// The entry's limits.
    pub limits: Limits,
    /// The phases the plugin declared.
    pub phases: Phases,
    /// Where the entry is in the config (`routes[0].plugins[1]`), for metrics.
    pub at: Arc<str>,
    /// The route the entry was loaded for (`*` for a global entry).
    pub route: Arc<str>,
    idle: Mutex<Idle>,
    live: Arc<Live>,
    /// Set by a call that ran long on the synchronous path: the entry's instances
    /// are made for the asynchronous path from then on.
    long: Arc<AtomicBool>,
}

/// Idle instances, most recently returned last (checkout takes from the end, so
/// the same few instances stay hot and the ones at the front are the long unused).
struct Idle {
    stack: VecDeque<Instance>,
    /// The fewest instances idle since the last sweep: that many were not needed
    /// for a whole sweep interval.
    low: usize,
    last_sweep: Instant,
}

/// How many instances an entry has (idle and in use), shared with each of them:
/// an instance gives its place back when dropped, however its life ends (returned
/// past the idle cap, retired, faulted, dropped with an abandoned stream), and wakes
/// a caller waiting for one.
#[derive(Default)]
struct Live {
    count: AtomicUsize,
    freed: Notify,
    /// Callers waiting on `freed`: a check-in with nobody waiting skips the wake-up
    /// (an atomic read instead of a compare-and-swap on every call).
    waiting: AtomicUsize,
}

impl Live {
    /// Takes a place when fewer than `max` are taken.
    fn reserve(self: &Arc<Self>, max: usize) -> Option<Place> {
        self.count.fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Place(Arc::clone(self)))
    }

    /// Wakes one waiting caller, if any: an instance was returned or a place freed.
    fn wake(&self) {
        if self.waiting.load(SeqCst) > 0 {
            self.freed.notify_one();
        }
    }
}

/// A caller counted in [`Live::waiting`] for as long as it exists (however its
/// future ends: served, timed out or cancelled).
struct Waiting<'a>(&'a Live);

impl<'a> Waiting<'a> {
    fn new(live: &'a Live) -> Self {
        live.waiting.fetch_add(1, SeqCst);
        Waiting(live)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, SeqCst);
    }
}

/// One taken place of an entry's bound.
struct Place(Arc<Live>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, SeqCst);
        self.0.wake();
    }
}

impl std::fmt::Debug for InstancePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstancePool")
            .field("plugin", &self.env.plugin)
            .field("at", &self.at)
            .field("limits", &self.limits)
            .field("phases", &self.phases)
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

/// Runs a load-time future from synchronous code: at once when it does not wait (the
/// synchronous path, the in-process kv), else to completion on the current tokio
/// runtime from a thread of its own (so the caller may be anywhere, even inside an
/// async task), or on a runtime of its own when there is none (`sluice check`).
fn finish_load<F, T>(load: F) -> Result<T, (Phase, PluginErrorKind)>
where
    F: std::future::Future<Output = Result<T, (Phase, PluginErrorKind)>> + Send,
    T: Send,
{
    let mut load = std::pin::pin!(load);
    if let Some(done) = load.as_mut().now_or_never() {
        return done;
    }
    let unfinished = |e: &dyn std::fmt::Display| {
        (Phase::Load, PluginErrorKind::Load(format!("loading could not finish: {e}")))
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => std::thread::scope(|s| {
            s.spawn(|| handle.block_on(load))
                .join()
                .unwrap_or_else(|_| Err(unfinished(&"the loading thread panicked")))
        }),
        Err(_) => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(load),
            Err(e) => Err(unfinished(&e)),
        },
    }
}

/// Where an instance was made: counted, so an operator (and a test) can tell
/// warm-up from churn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// When the config was loaded (the first instance and the `warm` ones).
    Load = 0,
    /// On the request path: a call found no idle instance and the bound had room.
    Request = 1,
}

impl InstancePool {
    /// Creates the pool and its first `max(1, limits.warm)` instances: each is
    /// instantiated, given `configure` with `config_json`, then asked for `info`.
    /// Runs synchronously (the snapshot is built on a blocking thread); a `configure`
    /// that waits (a Redis-backed kv call) is driven to completion on the gateway's
    /// runtime, within the configure deadline. `at` names the entry in the config.
    pub fn new(
        pre: Pre,
        env: Arc<HostEnv>,
        config_json: String,
        limits: Limits,
        route: Arc<str>,
        at: Arc<str>,
    ) -> Result<InstancePool, (Phase, PluginErrorKind)> {
        let idle = Idle { stack: VecDeque::new(), low: 0, last_sweep: Instant::now() };
        let mut pool = InstancePool {
            pre,
            env,
            config_json,
            limits,
            phases: Phases::empty(),
            at,
            route,
            idle: Mutex::new(idle),
            live: Arc::default(),
            long: Arc::default(),
        };
        for _ in 0..limits.warm.max(1) {
            let place = pool.live.reserve(limits.max_instances).ok_or_else(|| {
                (Phase::Load, PluginErrorKind::Load("limits.warm is larger than limits.max_instances".into()))
            })?;
            let (instance, phases) = finish_load(pool.instantiate(Arc::clone(&pool.route), place))?;
            pool.env.stats.record_made(Made::Load);
            pool.phases = phases;
            let idle = pool.idle.get_mut().unwrap_or_else(|p| p.into_inner());
            idle.stack.push_back(instance);
            idle.low = idle.stack.len();
        }
        Ok(pool)
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &Arc<str> {
        &self.env.plugin
    }

    /// The path its new instances are called on: the synchronous one when nothing
    /// the entry imports can wait and none of its calls ran long there.
    pub fn path(&self) -> CallPath {
        if self.pre.sync.is_some() && !self.long.load(Relaxed) { CallPath::Sync } else { CallPath::Async }
    }

    /// The entry's host environment.
    pub fn env(&self) -> &Arc<HostEnv> {
        &self.env
    }

    /// An instance without waiting: an idle one, or a new one when the bound has
    /// room and the entry is on the synchronous path (instantiating does not wait
    /// there). `None` when the caller must go through [`InstancePool::checkout`].
    pub fn checkout_now(&self, route: &Arc<str>) -> Option<Result<Instance, PluginErrorKind>> {
        if let Some(inst) = self.take_idle() {
            return Some(Ok(self.ready(inst, route)));
        }
        if self.path() == CallPath::Async {
            return None;
        }
        let place = self.live.reserve(self.limits.max_instances)?;
        let made = self.make(route, place).now_or_never()?;
        Some(made.map(|inst| self.ready(inst, route)))
    }

    /// A warm instance, else a new one while the entry has fewer than
    /// `limits.max_instances`, else the first one returned within the entry's call
    /// deadline; past it the call fails with [`PluginErrorKind::Busy`].
    pub async fn checkout(&self, route: &Arc<str>) -> Result<Instance, PluginErrorKind> {
        if let Some(inst) = self.take_idle() {
            return Ok(self.ready(inst, route));
        }
        let until = tokio::time::Instant::now() + self.limits.deadline;
        let mut waited = false;
        // Counted before looking, so a check-in (or a drop) that skips the wake-up
        // because nobody waited happened before this look, which then sees it.
        let _waiting = Waiting::new(&self.live);
        loop {
            // Registered before looking, so a return in between is not missed.
            let freed = self.live.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            if let Some(inst) = self.take_idle() {
                return Ok(self.ready(inst, route));
            }
            if let Some(place) = self.live.reserve(self.limits.max_instances) {
                return self.make(route, place).await.map(|inst| self.ready(inst, route));
            }
            if !waited {
                waited = true;
                self.env.stats.record_checkout_wait();
            }
            if tokio::time::timeout_at(until, freed).await.is_err() {
                return Err(PluginErrorKind::Busy(format!(
                    "all {} instances (limits.max_instances) stayed in use for {:?} (limits.deadline)",
                    self.limits.max_instances, self.limits.deadline
                )));
            }
        }
    }

    fn take_idle(&self) -> Option<Instance> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut inst = idle.stack.pop_back();
        while inst.as_ref().is_some_and(|i| self.moved(i)) {
            inst = idle.stack.pop_back();
        }
        idle.low = idle.low.min(idle.stack.len());
        inst
    }

    /// True when `inst` is on the synchronous path the entry has left.
    fn moved(&self, inst: &Instance) -> bool {
        inst.path() != self.path()
    }

    async fn make(&self, route: &Arc<str>, place: Place) -> Result<Instance, PluginErrorKind> {
        let made = self.instantiate(Arc::clone(route), place).await.map(|(inst, _)| inst).map_err(|(_, k)| k);
        if made.is_ok() {
            self.env.stats.record_made(Made::Request);
        }
        made
    }

    fn ready(&self, mut inst: Instance, route: &Arc<str>) -> Instance {
        if !Arc::ptr_eq(&inst.store.data().route, route) {
            inst.store.data_mut().route = Arc::clone(route);
        }
        inst
    }

    /// Starts a call of `inst` at `started` (the caller's clock reading): its
    /// deadline, `limits.deadline`, counts from there. Every call is armed first.
    pub fn arm(&self, inst: &mut Instance, started: Instant) {
        inst.store.data_mut().timing.arm(started, self.limits.deadline);
        inst.store.set_epoch_deadline(1);
    }

    /// Returns a healthy instance for reuse. It is dropped instead when its memory
    /// is nearly full (the next checkout makes a fresh one) or `limits.max_idle` are
    /// idle already; either way its place goes to a waiting caller.
    pub fn checkin(&self, inst: Instance) {
        if inst.store.data().limiter.nearly_full() || self.moved(&inst) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.stack.len() >= self.limits.max_idle {
            drop(idle);
            return;
        }
        idle.stack.push_back(inst);
        drop(idle);
        self.live.wake();
    }

    /// Drops the idle instances, beyond `limits.warm`, that no call needed since
    /// the last sweep, once `limits.idle_timeout` has passed since then. Called
    /// every second or so by the gateway; cheap when there is nothing to do.
    pub fn sweep(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(idle.last_sweep) < self.limits.idle_timeout {
            return;
        }
        let unused = idle.low.min(idle.stack.len()).saturating_sub(self.limits.warm);
        let dropped: Vec<Instance> = idle.stack.drain(..unused).collect();
        idle.low = idle.stack.len();
        idle.last_sweep = now;
        drop(idle);
        drop(dropped);
    }

    /// Idle instances right now.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).stack.len()
    }

    /// Instances right now, idle and in use.
    pub fn live(&self) -> usize {
        self.live.count.load(SeqCst)
    }

    async fn instantiate(
        &self,
        route: Arc<str>,
        place: Place,
    ) -> Result<(Instance, Phases), (Phase, PluginErrorKind)> {
        let path = self.path();
        let timing = CallTiming::loading(
            Arc::clone(&self.long),
            path == CallPath::Async,
            self.limits.configure_deadline,
        );
        let state = PluginState::new(Arc::clone(&self.env), route, self.limits.memory, timing);
        let mut store = Store::new(super::engine::engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(super::deadline::on_tick);
        // Before instantiating: a deadline of 0 would trap at once.
        store.set_epoch_deadline(1);
        // Instantiating runs the component's start code (a language runtime's
        // initialisation); `configure` and `info` run the plugin's own. A fault in
        // either is reported as what it is (a trap with its stderr, the deadline, the
        // memory cap) and where it happened.
        let fault = |phase: Phase, e: wasmtime::Error, s: &Store<PluginState>| {
            if let Some(full) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
                let msg = format!("the process's plugin instance slots are all in use ({full})");
                return (phase, PluginErrorKind::Busy(msg));
            }
            let deadline = self.limits.configure_deadline;
            (phase, PluginErrorKind::from_call(e, s.data(), deadline, "limits.configure_deadline"))
        };
        let exports = match self.pre.instantiate(&mut store, path).await {
            Ok(p) => p,
            Err(e) => return Err(fault(Phase::Load, e, &store)),
        };
        let mut inst = Instance { store, exports, _place: place };
        inst.store.data_mut().configuring = true;
        let started = std::time::Instant::now();
        let configured = inst.configure(&self.config_json).await;
        self.env.stats.record_call(Phase::Configure, started.elapsed());
        inst.store.data_mut().configuring = false;
        match configured {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err((Phase::Configure, PluginErrorKind::Config(msg))),
            Err(e) => return Err(fault(Phase::Configure, e, &inst.store)),
        }
        // After `configure`, so the phases can depend on the config (a transform with
        // no body rules does not make the gateway buffer bodies).
        let info = match inst.info().await {
            Ok(i) => i,
            Err(e) => return Err(fault(Phase::Configure, e, &inst.store)),
        };
        let limiter = &mut inst.store.data_mut().limiter;
        limiter.baseline = limiter.size;
        Ok((inst, info.phases))
    }
}
