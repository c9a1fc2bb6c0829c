//! The host API: what plugins import. One file per interface; this module owns the
//! per-plugin [`HostEnv`] (identity + granted capabilities), the process-wide
//! [`linker`], and the load-time check that a component imports only what its
//! config grants.
//!
//! Recipe: build a [`HostEnv`] per plugin entry → [`check_imports`] against the
//! component → instantiate through [`linker`] with a
//! [`PluginState`](super::state::PluginState) holding the env.

pub mod clock;
pub mod crypto;
pub mod http;
pub mod kv;
pub mod kv_redis;
pub mod log;
pub mod metrics;
pub mod secrets;
pub mod tokens;
pub mod types;
pub mod wasi;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::{Plugin, sync};
use super::engine::engine;
use super::state::PluginState;
use super::stats::PluginStats;
pub use clock::PluginClock;
pub use http::HttpGrant;
pub use kv::{InProcessKv, KvStore};
pub use kv_redis::{RedisKv, RedisSettings};

/// Capabilities granted to one plugin entry.
#[derive(Clone)]
pub struct Grants {
    /// `log` is granted.
    pub log: bool,
    /// `clock` is granted.
    pub clock: bool,
    /// `metrics` is granted.
    pub metrics: bool,
    /// The kv backend, when `kv` is granted.
    pub kv: Option<Arc<dyn KvStore>>,
    /// Outbound HTTP, when granted.
    pub http: Option<HttpGrant>,
    /// Granted secrets by name, already read.
    pub secrets: HashMap<String, String>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("log", &self.log)
            .field("clock", &self.clock)
            .field("metrics", &self.metrics)
            .field("kv", &self.kv.is_some())
            .field("http", &self.http)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Grants {
    fn default() -> Self {
        Self { log: true, clock: true, metrics: true, kv: None, http: None, secrets: HashMap::new() }
    }
}

/// Identity and capabilities shared by every instance of one plugin entry.
#[derive(Debug)]
pub struct HostEnv {
    /// The plugin's name.
    pub plugin: Arc<str>,
    /// What it may use.
    pub grants: Grants,
    /// Upstream names `set-upstream` accepts.
    pub upstreams: Arc<HashSet<String>>,
    /// Its metrics.
    pub stats: Arc<PluginStats>,
    /// What its `clock` import reads.
    pub clock: PluginClock,
}

/// The asynchronous path's linker: WASI p2 (no authority) and every `sluice:plugin`
/// interface, `http.send` and `kv` as async host functions.
pub fn linker() -> &'static Linker<PluginState> {
    static LINKER: OnceLock<Linker<PluginState>> = OnceLock::new();
    LINKER.get_or_init(|| {
        let mut linker = Linker::new(engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("linking WASI p2");
        Plugin::add_to_linker::<_, HasSelf<PluginState>>(&mut linker, |s| s)
            .expect("linking the plugin world");
        linker
    })
}

/// The synchronous path's linker: the same WASI p2 sandbox with `wasi:io` that never
/// waits ([`wasi`]), and every `sluice:plugin` interface as a synchronous host
/// function. A component instantiated through it has no async import, so its
/// exports are called without a fiber.
pub fn sync_linker() -> &'static Linker<PluginState> {
    static LINKER: OnceLock<Linker<PluginState>> = OnceLock::new();
    LINKER.get_or_init(|| {
        use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
        let mut linker = Linker::new(engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("linking WASI p2");
        // wasmtime-wasi's synchronous streams and pollables block on the tokio
        // runtime; these never wait.
        linker.allow_shadowing(true);
        fn io(s: &mut PluginState) -> wasi::NonBlockingIo<'_> {
            wasi::NonBlockingIo(s.table())
        }
        poll::add_to_linker::<_, wasi::NonBlocking>(&mut linker, io).expect("linking wasi:io/poll");
        streams::add_to_linker::<_, wasi::NonBlocking>(&mut linker, io).expect("linking wasi:io/streams");
        linker.allow_shadowing(false);
        sync::Plugin::add_to_linker::<_, HasSelf<PluginState>>(&mut linker, |s| s)
            .expect("linking the plugin world");
        linker
    })
}

/// Why an entry of `component` with `grants` cannot take the synchronous call path
/// although the component itself could ([`super::compat::Linked::sync_pre`]): it is
/// granted `http`, or its kv store is Redis. `None`: nothing it may call waits.
pub fn sync_blocker(component: &Component, grants: &Grants) -> Option<String> {
    let (caps, _) = imported_capabilities(component);
    if caps.contains(&"http") && grants.http.is_some() {
        return Some("it is granted `http` (outbound calls wait on the network)".into());
    }
    if caps.contains(&"kv") && grants.kv.as_deref().is_some_and(|kv| kv.in_process().is_none()) {
        return Some("its kv store is Redis (each operation waits on the network)".into());
    }
    None
}

/// WASI interfaces a plugin may import: with nothing preopened and no network they
/// carry no authority (Rust std, Python and JS runtimes import them). Sockets are
/// linked but every TCP, UDP and name-lookup call is refused (`PluginState::new`):
/// the Python runtime imports them whether or not the plugin uses them.
const HARMLESS_WASI: &[&str] =
    &["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/", "wasi:sockets/"];

/// The capability the import `name` (an interface, `pkg:name/iface@version`) needs:
/// `Ok(None)` for what every plugin has (`types`, `crypto`, `tokens`, harmless WASI),
/// `Ok(Some(cap))` for a capability a route grants, `Err(message)` for an interface
/// sluice does not provide.
pub fn import_capability(name: &str) -> Result<Option<&'static str>, String> {
    let iface = name.split('@').next().unwrap_or(name);
    match iface {
        "sluice:plugin/types" | "sluice:plugin/crypto" | "sluice:plugin/tokens" => Ok(None),
        "sluice:plugin/log" => Ok(Some("log")),
        "sluice:plugin/clock" => Ok(Some("clock")),
        "sluice:plugin/metrics" => Ok(Some("metrics")),
        "sluice:plugin/kv" => Ok(Some("kv")),
        "sluice:plugin/http" => Ok(Some("http")),
        "sluice:plugin/secrets" => Ok(Some("secrets")),
        other if HARMLESS_WASI.iter().any(|p| other.starts_with(p)) => Ok(None),
        other => Err(format!("imports `{other}`, which sluice does not provide to plugins")),
    }
}

/// The capabilities `component` imports (sorted, once each), and one message per
/// import sluice does not provide.
pub fn imported_capabilities(component: &Component) -> (Vec<&'static str>, Vec<String>) {
    let (mut caps, mut unprovided) = (Vec::new(), Vec::new());
    for (name, item) in component.component_type().imports(engine()) {
        // Type imports (the world's `use` of `request` and `response`) carry no
        // capability; instances and functions do.
        if matches!(item.ty, ComponentItem::Type(_) | ComponentItem::Resource(_)) {
            continue;
        }
        match import_capability(name) {
            Ok(Some(cap)) => caps.push(cap),
            Ok(None) => {}
            Err(message) => unprovided.push(message),
        }
    }
    caps.sort_unstable();
    caps.dedup();
    (caps, unprovided)
}

impl Grants {
    /// Whether the capability `cap` (as [`import_capability`] names it) is granted.
    pub fn has(&self, cap: &str) -> bool {
        match cap {
            "log" => self.log,
            "clock" => self.clock,
            "metrics" => self.metrics,
            "kv" => self.kv.is_some(),
            "http" => self.http.is_some(),
            "secrets" => !self.secrets.is_empty(),
            _ => false,
        }
    }
}

/// Checks that `component` imports only interfaces that exist and are granted (or
/// are among the `optional` capabilities, which are refused when called instead).
/// Returns one message per refused import.
pub fn check_imports(component: &Component, grants: &Grants, optional: &[&str]) -> Vec<String> {
    let (caps, mut refused) = imported_capabilities(component);
    for cap in caps {
        if !grants.has(cap) && !optional.contains(&cap) {
            let hint = match cap {
                "http" => "grants: { http: { allow: [HOST] } }".to_owned(),
                "secrets" => "grants: { secrets: { NAME: { env: VAR } } }".to_owned(),
                "kv" => "grants: { kv: true }".to_owned(),
                other => format!("grants: {{ {other}: true }}"),
            };
            refused.push(format!("imports `{cap}`, which is not granted (add `{hint}`)"));
        }
    }
    refused
}
