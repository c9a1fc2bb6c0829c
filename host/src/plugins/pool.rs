//! Warm instances: an [`InstancePool`] per plugin entry keeps instantiated and
//! configured instances and reuses them across requests (measured: ~1 µs per call on
//! a warm instance against ~25 µs to instantiate and configure a fresh one). An
//! instance that faulted is dropped, never returned.
//!
//! Recipe: [`InstancePool::new`] at snapshot build (instantiates and configures the
//! first instance, so a bad config fails the build) → [`InstancePool::checkout`] per
//! call → [`InstancePool::checkin`] when the call succeeded.

use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use wasmtime::Store;
use wasmtime::component::Resource;

use super::bindings::sluice::plugin::types::{Decision, PluginInfo};
use super::bindings::{Phases, Plugin, PluginPre, sync};
use super::engine::ticks_for;
use super::error::PluginErrorKind;
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

/// The pre-instantiated component of an entry, for the path it takes.
#[derive(Clone)]
pub enum Pre {
    /// Synchronous exports.
    Sync(sync::PluginPre<PluginState>),
    /// Asynchronous exports.
    Async(PluginPre<PluginState>),
}

impl Pre {
    /// The path its instances are called on.
    pub fn path(&self) -> CallPath {
        match self {
            Pre::Sync(_) => CallPath::Sync,
            Pre::Async(_) => CallPath::Async,
        }
    }

    async fn instantiate(&self, store: &mut Store<PluginState>) -> wasmtime::Result<Exports> {
        Ok(match self {
            Pre::Sync(pre) => Exports::Sync(pre.instantiate(store)?),
            Pre::Async(pre) => Exports::Async(pre.instantiate_async(store).await?),
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

/// The warm instances of one plugin entry (one plugin with one config).
pub struct InstancePool {
    pre: Pre,
    env: Arc<HostEnv>,
    config_json: String,
    /// The entry's limits.
    pub limits: Limits,
    /// The phases the plugin declared.
    pub phases: Phases,
    idle: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for InstancePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstancePool")
            .field("plugin", &self.env.plugin)
            .field("limits", &self.limits)
            .field("phases", &self.phases)
            .field("path", &self.pre.path())
            .finish_non_exhaustive()
    }
}

/// Runs a load-time future from synchronous code: at once when it does not wait (the
/// synchronous path, the in-process kv), else to completion on the current tokio
/// runtime from a thread of its own (so the caller may be anywhere, even inside an
/// async task), or on a runtime of its own when there is none (`sluice check`).
fn finish_load<F>(load: F) -> Result<(Instance, Phases), PluginErrorKind>
where
    F: std::future::Future<Output = Result<(Instance, Phases), PluginErrorKind>> + Send,
{
    let mut load = std::pin::pin!(load);
    if let Some(done) = load.as_mut().now_or_never() {
        return done;
    }
    let unfinished =
        |e: &dyn std::fmt::Display| PluginErrorKind::Load(format!("loading could not finish: {e}"));
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

impl InstancePool {
    /// Creates the pool and its first instance: `configure` with `config_json`, then
    /// `info`. Runs synchronously (the snapshot is built on a blocking thread); a
    /// `configure` that waits (a Redis-backed kv call) is driven to completion on the
    /// gateway's runtime, within the configure deadline.
    pub fn new(
        pre: Pre,
        env: Arc<HostEnv>,
        config_json: String,
        limits: Limits,
        route: Arc<str>,
    ) -> Result<InstancePool, PluginErrorKind> {
        let mut pool =
            InstancePool { pre, env, config_json, limits, phases: Phases::empty(), idle: Mutex::default() };
        let (instance, phases) = finish_load(pool.instantiate(route))?;
        pool.phases = phases;
        pool.idle.get_mut().unwrap_or_else(|p| p.into_inner()).push(instance);
        Ok(pool)
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &Arc<str> {
        &self.env.plugin
    }

    /// The path its instances are called on.
    pub fn path(&self) -> CallPath {
        self.pre.path()
    }

    /// The entry's host environment.
    pub fn env(&self) -> &Arc<HostEnv> {
        &self.env
    }

    /// A warm instance, or a new one.
    pub async fn checkout(&self, route: &Arc<str>) -> Result<Instance, PluginErrorKind> {
        let warm = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut inst = match warm {
            Some(i) => i,
            None => self.instantiate(Arc::clone(route)).await?.0,
        };
        if !Arc::ptr_eq(&inst.store.data().route, route) {
            inst.store.data_mut().route = Arc::clone(route);
        }
        self.rearm(&mut inst);
        Ok(inst)
    }

    /// Gives a held instance a fresh per-call deadline (the chunk phase keeps one
    /// instance for a whole response).
    pub fn rearm(&self, inst: &mut Instance) {
        inst.store.data_mut().host_wait = std::time::Duration::ZERO;
        inst.store.set_epoch_deadline(ticks_for(self.limits.deadline));
    }

    /// Returns a healthy instance for reuse (dropped if enough are idle).
    pub fn checkin(&self, inst: Instance) {
        if inst.store.data().limiter.nearly_full() {
            // Retired: the next checkout instantiates a fresh one.
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.limits.max_idle {
            idle.push(inst);
        }
    }

    /// Warm instances right now.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn instantiate(&self, route: Arc<str>) -> Result<(Instance, Phases), PluginErrorKind> {
        let state = PluginState::new(Arc::clone(&self.env), route, self.limits.memory);
        let mut store = Store::new(super::engine::engine(), state);
        store.limiter(|s| &mut s.limiter);
        // When a call reaches its deadline, the time it spent waiting on the host
        // (outbound HTTP, Redis) since the last check is given back once; a call that
        // only ran is stopped. So a JWKS fetch within its own timeout does not kill
        // the plugin that asked for it, and a busy loop still dies on time.
        store.epoch_deadline_callback(|mut ctx| {
            let waited = std::mem::take(&mut ctx.data_mut().host_wait);
            if waited.is_zero() {
                Err(wasmtime::Trap::Interrupt.into())
            } else {
                Ok(wasmtime::UpdateDeadline::Continue(ticks_for(waited)))
            }
        });
        // The deadline must be set before instantiating: a deadline of 0 traps at once.
        store.set_epoch_deadline(ticks_for(self.limits.configure_deadline));
        let load = |e: wasmtime::Error, s: &Store<PluginState>| match PluginErrorKind::from_call(
            e,
            s.data(),
            self.limits.configure_deadline,
        ) {
            PluginErrorKind::Trap(m) => PluginErrorKind::Load(m),
            other => other,
        };
        let exports = match self.pre.instantiate(&mut store).await {
            Ok(p) => p,
            Err(e) => return Err(load(e, &store)),
        };
        let mut inst = Instance { store, exports };
        inst.store.data_mut().configuring = true;
        let started = std::time::Instant::now();
        let configured = inst.configure(&self.config_json).await;
        self.env.stats.record_call(super::error::Phase::Configure, started.elapsed());
        inst.store.data_mut().configuring = false;
        match configured {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(PluginErrorKind::Config(msg)),
            Err(e) => return Err(load(e, &inst.store)),
        }
        // After `configure`, so the phases can depend on the config (a transform with
        // no body rules does not make the gateway buffer bodies).
        let info = match inst.info().await {
            Ok(i) => i,
            Err(e) => return Err(load(e, &inst.store)),
        };
        let limiter = &mut inst.store.data_mut().limiter;
        limiter.baseline = limiter.size;
        Ok((inst, info.phases))
    }
}
