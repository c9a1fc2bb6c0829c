//! Functions as route targets: a WebAssembly component implementing the standard
//! `wasi:http/incoming-handler` (the `wasi:http/proxy` world that `wasmtime serve`
//! and Spin run) answers a route's requests from inside the gateway, in place of an
//! upstream: listener → router → chain (request) → **function** → chain (response).
//!
//! The lifecycle, in types:
//!
//! 1. once per process: the [`linker`] (WASI p2 with no authority, `wasi:http` with
//!    [`state`]'s policy: outgoing requests refused but to the upstream pools the
//!    config lists, see [`outgoing`]) on the plugins' [`engine`];
//! 2. once per config generation ([`Function::load`], called by `Snapshot::build`):
//!    find the component in the plugins folder, compile it (the plugins' cache: memory
//!    and disk, by content hash), check that it exports `wasi:http/incoming-handler`
//!    and link it into a `ProxyPre` — any problem names the route's
//!    `target.function.component`, and the serving config stays;
//! 3. per request ([`Function::serve`], in [`run`]): a fresh `Store` and instance (the
//!    `wasi:http` model: no state leaks from one request to the next; with the
//!    pooling allocator and copy-on-write images this is cheap), run in a task of its
//!    own under the CPU deadline (epochs), the memory cap and the overall timeout; the
//!    response head comes back as soon as the function sets it and its body streams
//!    while the function still runs.
//!
//! [`engine`]: crate::plugins::engine

pub mod error;
pub mod outgoing;
mod run;
pub mod state;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use error::{FunctionError, FunctionErrorKind};
use state::FunctionState;

use crate::config::{
    DEFAULT_FUNCTION_DEADLINE, DEFAULT_FUNCTION_MAX_CONCURRENT, DEFAULT_FUNCTION_MEMORY,
    DEFAULT_FUNCTION_TIMEOUT, FunctionConfig, LoadedConfig, Name, Problem,
};
use crate::plugins::engine::engine;
use crate::plugins::registry::{PluginSource, plugins_dir};
use crate::upstream::Upstream;
use outgoing::Outgoing;

/// The interface a function must export (any `0.2.x` release).
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

/// The resolved limits of one function target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionLimits {
    /// Run time per request.
    pub deadline: Duration,
    /// Whole time per request, waiting included.
    pub timeout: Duration,
    /// Linear memory cap per instance, in bytes.
    pub memory: usize,
    /// Requests running at once.
    pub max_concurrent: usize,
}

impl FunctionLimits {
    /// Resolves `cfg`'s limits, applying defaults.
    pub fn from_config(cfg: &FunctionConfig) -> Self {
        let l = &cfg.limits;
        Self {
            deadline: l.deadline.unwrap_or(DEFAULT_FUNCTION_DEADLINE).get(),
            timeout: l.timeout.unwrap_or(DEFAULT_FUNCTION_TIMEOUT).get(),
            memory: l.memory.unwrap_or(DEFAULT_FUNCTION_MEMORY).bytes() as usize,
            max_concurrent: l.max_concurrent.unwrap_or(DEFAULT_FUNCTION_MAX_CONCURRENT),
        }
    }
}

/// A function target, ready to serve.
pub struct Function {
    /// The component's file name.
    component: Arc<str>,
    /// The route's name.
    route: Arc<str>,
    pre: ProxyPre<FunctionState>,
    limits: FunctionLimits,
    /// One permit per request running.
    places: Arc<Semaphore>,
    /// The pools it may call.
    outgoing: Arc<Outgoing>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("component", &self.component)
            .field("route", &self.route)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The linker of every function: WASI p2 without authority (no preopens, sockets,
/// environment) and `wasi:http`, asynchronous.
pub fn linker() -> &'static Linker<FunctionState> {
    static LINKER: OnceLock<Linker<FunctionState>> = OnceLock::new();
    LINKER.get_or_init(|| {
        let mut linker = Linker::new(engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("linking WASI p2");
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).expect("linking wasi:http");
        linker
    })
}

impl Function {
    /// Loads the function target of route `route` configured at `at`
    /// (`routes[i].target.function`), with the config's `upstreams` for its
    /// `outgoing` list, or every problem found.
    pub fn load(
        cfg: &FunctionConfig,
        route: &str,
        at: &str,
        loaded: &LoadedConfig,
        upstreams: &HashMap<Name, Arc<Upstream>>,
    ) -> Result<Function, Vec<Problem>> {
        let mut problems = crate::config::validate_function(cfg, at);
        let mut pools = Vec::with_capacity(cfg.outgoing.len());
        for (j, name) in cfg.outgoing.iter().enumerate() {
            match upstreams.get(name) {
                Some(pool) => pools.push((name.to_string(), Arc::clone(pool))),
                None => problems
                    .push(Problem::new(format!("{at}.outgoing[{j}]"), format!("unknown upstream `{name}`"))),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let file = cfg.file_name();
        let at_component = format!("{at}.component");
        let problem = |msg: String| vec![Problem::new(at_component.clone(), msg)];
        let dir = plugins_dir(loaded);
        let path = dir.join(&file);
        if !path.is_file() {
            return Err(problem(format!("no component {file} in the plugins folder {}", dir.display())));
        }
        let cache_dir = crate::plugins::load::compiled_cache_dir(loaded);
        let component =
            crate::plugins::cache::load_component(PluginSource::File(&path), cache_dir.as_deref())
                .map_err(|m| problem(format!("function {file} on route {route}: {m}")))?;
        let pre =
            link(&component, &path).map_err(|m| problem(format!("function {file} on route {route} {m}")))?;
        let limits = FunctionLimits::from_config(cfg);
        Ok(Function {
            component: Arc::from(file),
            route: Arc::from(route),
            pre,
            limits,
            places: Arc::new(Semaphore::new(limits.max_concurrent)),
            outgoing: Arc::new(Outgoing::new(pools)),
        })
    }

    /// The component's file name.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Its resolved limits.
    pub fn limits(&self) -> FunctionLimits {
        self.limits
    }

    fn error(&self, kind: FunctionErrorKind) -> FunctionError {
        FunctionError { route: self.route.to_string(), component: self.component.to_string(), kind }
    }
}

/// Checks that `component` is a `wasi:http/proxy` component and links it. The error
/// completes "function F on route R …".
fn link(component: &Component, path: &Path) -> Result<ProxyPre<FunctionState>, String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine())
        .filter(|(_, item)| {
            matches!(item.ty, ComponentItem::ComponentInstance(_) | ComponentItem::ComponentFunc(_))
        })
        .map(|(name, _)| name.to_owned())
        .collect();
    let handler = exports
        .iter()
        .any(|name| name.strip_prefix(INCOMING_HANDLER).and_then(|v| v.strip_prefix("@0.2.")).is_some());
    if !handler {
        let found = if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") };
        return Err(format!(
            "does not export `{INCOMING_HANDLER}@0.2` (it exports {found}): a function target must be a \
             wasi:http/proxy component, like those `wasmtime serve` runs ({})",
            path.display()
        ));
    }
    let instance_pre = linker().instantiate_pre(component).map_err(|e| format!("cannot be linked: {e:#}"))?;
    ProxyPre::new(instance_pre).map_err(|e| format!("cannot be linked: {e:#}"))
}
