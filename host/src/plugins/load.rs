//! Building the chains of a config generation: find each plugin in the registry,
//! compile it (cached), check its imports against its grants, and create its
//! instance pool — which instantiates and configures a first instance, so every
//! load-time fault becomes a config [`Problem`] at the entry's YAML path.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::cache::{default_cache_dir, load_component};
use super::chain::{Chain, ChainEntry};
use super::compat;
use super::engine::POOL_COMPONENT_INSTANCES;
use super::error::{Phase, PluginError, PluginErrorKind};
use super::host_api::{
    Grants, HostEnv, HttpGrant, InProcessKv, KvStore, PluginClock, RedisKv, RedisSettings, check_imports,
    sync_blocker,
};
use super::limits::Limits;
use super::pool::{InstancePool, Pre};
use super::registry::Registry;
use super::stats::stats_for;
use crate::config::{
    DEFAULT_KV_CONNECT_TIMEOUT, DEFAULT_KV_KEY_PREFIX, DEFAULT_KV_MAX_BYTES, DEFAULT_KV_REDIS_URL,
    DEFAULT_KV_TIMEOUT, DEFAULT_PLUGIN_HTTP_TIMEOUT, KvBackendConfig, LoadedConfig, MAX_PLUGIN_MEMORY,
    PluginRefConfig, Problem, SecretSourceConfig,
};

/// The route name used for global entries while loading.
pub const GLOBAL_ROUTE: &str = "*";

/// How the plugins of a generation see the world. The default is the gateway's: the
/// system clock and the store `plugins.kv` configures. The offline harness
/// (`sluice plugin test`) fixes the clock and gives each run a store of its own, so a
/// run is reproducible.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// What the `clock` import reads.
    pub clock: PluginClock,
    /// The kv store to use instead of `plugins.kv`'s.
    pub kv: Option<Arc<dyn KvStore>>,
    /// Where the snapshot takes its request, connection and upstream metric handles
    /// (the gateway's, so counters run on across reloads).
    pub metrics: Arc<crate::observability::metrics::Registry>,
    /// The gateway's tracer, kept across reloads that leave `server.tracing` alone.
    pub tracer: Arc<crate::observability::trace::TracerSlot>,
    /// The gateway's call log, kept across reloads that leave `server.call_log` alone.
    pub call_log: Arc<crate::observability::call_log::CallLogSlot>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions").field("clock", &self.clock).field("kv", &self.kv.is_some()).finish()
    }
}

/// Where compiled components of `loaded` are cached on disk: `plugins.cache_dir`
/// (`""` for none), else the user's cache folder.
pub fn compiled_cache_dir(loaded: &LoadedConfig) -> Option<PathBuf> {
    match loaded.config.plugins.cache_dir.as_deref() {
        Some("") => None,
        Some(d) => Some(loaded.resolve_path(d)),
        None => default_cache_dir(),
    }
}

/// Builds one chain per route of `loaded` (in route order), or every problem found.
pub fn build_chains(loaded: &LoadedConfig, options: &LoadOptions) -> Result<Vec<Arc<Chain>>, Vec<Problem>> {
    let cfg = &loaded.config;
    let any = !cfg.plugins.global.is_empty() || cfg.routes.iter().any(|r| !r.plugins.is_empty());
    if !any {
        // No plugins: never touch the engine.
        return Ok(cfg.routes.iter().map(|r| Arc::new(Chain::new(r.name.as_str(), Vec::new()))).collect());
    }
    let mut loader = Loader::new(loaded, options)?;
    let mut problems = Vec::new();
    let mut global = Vec::new();
    for (j, p) in cfg.plugins.global.iter().enumerate() {
        match loader.entry(&format!("plugins.global[{j}]"), GLOBAL_ROUTE, p) {
            Ok(e) => global.push(e),
            Err(p) => problems.push(p),
        }
    }
    let mut chains = Vec::with_capacity(cfg.routes.len());
    for (i, r) in cfg.routes.iter().enumerate() {
        let mut entries = global.clone();
        for (j, p) in r.plugins.iter().enumerate() {
            match loader.entry(&format!("routes[{i}].plugins[{j}]"), r.name.as_str(), p) {
                Ok(e) => entries.push(e),
                Err(p) => problems.push(p),
            }
        }
        chains.push(Arc::new(Chain::new(r.name.as_str(), entries)));
    }
    if problems.is_empty() { Ok(chains) } else { Err(problems) }
}

/// The field a plugin's config error is about, when the plugin named it the way the
/// Rust SDK does (``invalid config at `rules[0].max`: …``), so the problem points at
/// that field of the config file rather than at the whole `config`.
fn config_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("invalid config at `")?;
    let (field, _) = rest.split_once("`: ")?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']');
    (!field.is_empty() && field.chars().all(plain)).then_some(field)
}

struct Loader<'a> {
    loaded: &'a LoadedConfig,
    options: &'a LoadOptions,
    registry: Registry,
    cache_dir: Option<PathBuf>,
    upstreams: Arc<HashSet<String>>,
    compiled: HashMap<String, Result<compat::Linked, String>>,
    /// The kv store of this generation, opened when the first plugin granted `kv` is loaded.
    kv: OnceCell<Result<Arc<dyn KvStore>, Problem>>,
}

impl<'a> Loader<'a> {
    fn new(loaded: &'a LoadedConfig, options: &'a LoadOptions) -> Result<Self, Vec<Problem>> {
        let dir = super::registry::plugins_dir(loaded);
        let registry = Registry::scan(&dir).map_err(|m| vec![Problem::new("plugins.dir", m)])?;
        let cache_dir = compiled_cache_dir(loaded);
        let upstreams = Arc::new(loaded.config.upstreams.keys().map(|k| k.to_string()).collect());
        Ok(Self {
            loaded,
            options,
            registry,
            cache_dir,
            upstreams,
            compiled: HashMap::new(),
            kv: OnceCell::new(),
        })
    }

    fn compile(&mut self, name: &str) -> Option<Result<compat::Linked, String>> {
        if let Some(c) = self.compiled.get(name) {
            return Some(c.clone());
        }
        let source = self.registry.get(name)?;
        // The world and its version are checked before linking, so a plugin author
        // reads what to fix rather than a linker error.
        let pre = load_component(source, self.cache_dir.as_deref()).and_then(|c| compat::link(&c));
        self.compiled.insert(name.to_owned(), pre.clone());
        Some(pre)
    }

    fn entry(&mut self, at: &str, route: &str, p: &PluginRefConfig) -> Result<Arc<ChainEntry>, Problem> {
        let name = p.name.as_str();
        let fail = |kind: PluginErrorKind, phase: Phase| {
            PluginError { route: route.to_owned(), plugin: name.to_owned(), phase, kind }.to_string()
        };
        let pre = match self.compile(name) {
            None => {
                let dir = self.registry.dir().display();
                return Err(Problem::new(
                    format!("{at}.name"),
                    format!(
                        "unknown plugin `{name}`: no {name}.wasm in {dir}, and no built-in plugin of that name (built-in: {})",
                        super::builtin::names().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            Some(Err(m)) => {
                return Err(Problem::new(format!("{at}.name"), fail(PluginErrorKind::Load(m), Phase::Load)));
            }
            Some(Ok(pre)) => pre,
        };
        let grants = self.grants(at, p)?;
        let optional = self.registry.get(name).map_or(&[][..], |s| s.optional_capabilities());
        let refused = check_imports(pre.component(), &grants, optional);
        if !refused.is_empty() {
            let msg = format!("plugin {name} on route {route} {}", refused.join("; "));
            return Err(Problem::new(format!("{at}.grants"), msg));
        }
        if let Some(m) = p.limits.memory
            && m.bytes() > MAX_PLUGIN_MEMORY.bytes()
        {
            return Err(Problem::new(
                format!("{at}.limits.memory"),
                format!("must be at most {MAX_PLUGIN_MEMORY}"),
            ));
        }
        if p.limits.deadline.is_some_and(|d| d.get().is_zero()) {
            return Err(Problem::new(format!("{at}.limits.deadline"), "must be more than 0ms"));
        }
        for (field, d) in
            [("idle_timeout", p.limits.idle_timeout), ("configure_deadline", p.limits.configure_deadline)]
        {
            if d.is_some_and(|d| d.get().is_zero()) {
                return Err(Problem::new(format!("{at}.limits.{field}"), "must be more than 0ms"));
            }
        }
        let limits = Limits::from_config(&p.limits);
        let slots = POOL_COMPONENT_INSTANCES as usize;
        if p.limits.max_instances == Some(0) || limits.max_instances > slots {
            return Err(Problem::new(
                format!("{at}.limits.max_instances"),
                format!("must be between 1 and {slots} (the process's plugin instance slots)"),
            ));
        }
        if limits.warm > limits.max_instances {
            return Err(Problem::new(
                format!("{at}.limits.warm"),
                format!("must be at most limits.max_instances ({})", limits.max_instances),
            ));
        }
        let env = Arc::new(HostEnv {
            plugin: Arc::from(name),
            grants,
            upstreams: Arc::clone(&self.upstreams),
            stats: stats_for(name),
            clock: self.options.clock,
        });
        let config_json = p.config.as_ref().map_or_else(|| "{}".to_owned(), |v| v.to_string());
        let blocker = sync_blocker(pre.component(), &env.grants);
        let sync = match (pre.sync_pre, blocker) {
            (Ok(sync), None) => Some(sync),
            (Err(why), _) | (Ok(_), Some(why)) => {
                tracing::debug!(plugin = name, route, "asynchronous call path: {why}");
                None
            }
        };
        let pre = Pre::new(sync, pre.async_pre);
        match InstancePool::new(pre, env, config_json, limits, Arc::from(route), Arc::from(at)) {
            Ok(pool) => Ok(Arc::new(ChainEntry { pool: Arc::new(pool), on_error: p.on_error })),
            Err((_, PluginErrorKind::Config(msg))) => {
                let path = config_field(&msg).map_or_else(
                    || format!("{at}.config"),
                    |f| format!("{at}.config{}{f}", if f.starts_with('[') { "" } else { "." }),
                );
                Err(Problem::new(path, fail(PluginErrorKind::Config(msg), Phase::Configure)))
            }
            Err((phase, kind)) => Err(Problem::new(at.to_owned(), fail(kind, phase))),
        }
    }

    fn grants(&self, at: &str, p: &PluginRefConfig) -> Result<Grants, Problem> {
        let g = &p.grants;
        let mut secrets = HashMap::new();
        for (k, src) in &g.secrets {
            secrets.insert(k.clone(), self.secret(&format!("{at}.grants.secrets.{k}"), src)?);
        }
        let http = g.http.as_ref().map(|h| HttpGrant {
            allow: h.allow.iter().map(|a| a.to_ascii_lowercase()).collect(),
            timeout: h.timeout.unwrap_or(DEFAULT_PLUGIN_HTTP_TIMEOUT).get().max(Duration::from_millis(1)),
        });
        let kv = if g.kv { Some(self.kv.get_or_init(|| self.open_kv()).clone()?) } else { None };
        Ok(Grants { log: g.log, clock: g.clock, metrics: g.metrics, kv, http, secrets })
    }

    /// A secret's value, read at load; problems are reported at `path`.
    fn secret(&self, path: &str, src: &SecretSourceConfig) -> Result<String, Problem> {
        read_secret(self.loaded, path, src)
    }

    fn open_kv(&self) -> Result<Arc<dyn KvStore>, Problem> {
        open_kv(self.loaded, self.options)
    }
}

/// A secret's value, read at load; problems are reported at `path`.
fn read_secret(loaded: &LoadedConfig, path: &str, src: &SecretSourceConfig) -> Result<String, Problem> {
    match src {
        SecretSourceConfig::Env(var) => std::env::var(var)
            .map_err(|_| Problem::new(path, format!("environment variable `{var}` is not set"))),
        SecretSourceConfig::File(f) => {
            let file = loaded.resolve_path(f);
            std::fs::read_to_string(&file)
                .map(|v| v.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| Problem::new(path, format!("cannot read {}: {e}", file.display())))
        }
    }
}

/// The store of `plugins.kv`: the process-wide in-process store, or Redis (sharing a
/// live connection with the same settings, so reloads do not reconnect). The plugin
/// `kv` API and the `redis` response cache use it.
pub fn open_kv(loaded: &LoadedConfig, options: &LoadOptions) -> Result<Arc<dyn KvStore>, Problem> {
    if let Some(kv) = &options.kv {
        return Ok(Arc::clone(kv));
    }
    let kv = &loaded.config.plugins.kv;
    match kv.backend {
        KvBackendConfig::InProcess => {
            Ok(InProcessKv::global(kv.max_bytes.unwrap_or(DEFAULT_KV_MAX_BYTES).0 as usize))
        }
        KvBackendConfig::Redis => {
            let password =
                kv.password.as_ref().map(|p| read_secret(loaded, "plugins.kv.password", p)).transpose()?;
            let settings = RedisSettings {
                url: kv.url.clone().unwrap_or_else(|| DEFAULT_KV_REDIS_URL.to_owned()),
                password,
                timeout: kv.timeout.unwrap_or(DEFAULT_KV_TIMEOUT).get(),
                connect_timeout: kv.connect_timeout.unwrap_or(DEFAULT_KV_CONNECT_TIMEOUT).get(),
                key_prefix: kv.key_prefix.clone().unwrap_or_else(|| DEFAULT_KV_KEY_PREFIX.to_owned()),
            };
            let store = RedisKv::open(&settings).map_err(|m| Problem::new("plugins.kv.url", m))?;
            Ok(Arc::new(store))
        }
    }
}
