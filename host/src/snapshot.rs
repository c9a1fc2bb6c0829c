//! `Snapshot`: everything a request needs, built from one config generation and never
//! mutated. Requests hold an `Arc<Snapshot>` for their whole life, so a reload can swap
//! in a new one while in-flight requests finish on the old.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::cache::RouteCache;
use crate::config::{LoadedConfig, Name, Problem, RouteTargetConfig};
use crate::function::Function;
use crate::listener::ListenerSpec;
use crate::observability::call_log::CallLog;
use crate::observability::metrics::RouteMetrics;
use crate::observability::trace::Tracer;
use crate::plugins::LoadOptions;
use crate::proxy::aggregate::Aggregate;
use crate::proxy::mcp::McpEndpoint;
use crate::proxy::split::Split;
use crate::router::Router;
use crate::upstream::Upstream;

/// One immutable generation of the gateway's configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every successful build.
    pub generation: u64,
    /// The config this snapshot was built from.
    pub config: LoadedConfig,
    /// Routes in config order; the routers return indexes into this.
    pub routes: Vec<Route>,
    /// Per listener, its router and the metrics of the routes it serves.
    /// Looked up by listener name for every request: the router's fast map.
    pub routers: crate::router::Map<Name, Arc<ListenerRoutes>>,
    /// Upstream pools by name.
    pub upstreams: HashMap<Name, Arc<Upstream>>,
    /// Listener settings, resolved (defaults applied, certificates loaded).
    pub listeners: Vec<Arc<ListenerSpec>>,
    /// The bearer token admin requests must carry (`admin.token` or the contents of
    /// `admin.token_file`), if one is configured.
    pub admin_token: Option<Arc<str>>,
    /// The tracer, when `server.tracing` is set.
    pub tracer: Option<Arc<Tracer>>,
    /// The call log, when `server.call_log` is set.
    pub call_log: Option<Arc<CallLog>>,
}

/// What one listener serves: the router over its routes, and each route's request
/// metrics on this listener (resolved here, so a request counts without a lookup).
#[derive(Debug)]
pub struct ListenerRoutes {
    /// The listener's router; it returns indexes into [`Snapshot::routes`].
    pub router: Router,
    /// Indexed like [`Snapshot::routes`]; `None` for routes served elsewhere.
    route_metrics: Box<[Option<Arc<RouteMetrics>>]>,
    /// Requests no route took (404s, requests the edge refused).
    unrouted: Arc<RouteMetrics>,
}

impl ListenerRoutes {
    /// The metrics of route `index`, or of requests no route took.
    pub fn metrics(&self, route: Option<usize>) -> &RouteMetrics {
        route.and_then(|i| self.route_metrics.get(i)?.as_deref()).unwrap_or(&self.unrouted)
    }

    /// `(route name or "", metrics)`: the unrouted series first, then the routes.
    pub fn all_metrics<'a>(
        &'a self,
        routes: &'a [Route],
    ) -> impl Iterator<Item = (&'a str, &'a RouteMetrics)> {
        let routed =
            self.route_metrics.iter().zip(routes).filter_map(|(m, r)| Some((r.name.as_str(), m.as_deref()?)));
        std::iter::once(("", &*self.unrouted)).chain(routed)
    }
}

/// A route, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: Name,
    /// Where its requests go.
    pub target: Target,
    /// Its plugin chain (the global chain first); empty when it has no plugins.
    pub chain: Arc<crate::plugins::Chain>,
    /// Protocols an `Upgrade` may switch to, lowercase.
    pub upgrades: Box<[Box<str>]>,
    /// The JSON Schema of the route's input, when it is a prompt template (the `ai`
    /// plugin's `prompt.input_schema`): an MCP tool whose path leads here takes it
    /// when it has none of its own.
    pub input_schema: Option<Arc<serde_json::Value>>,
    /// Its response cache, in front of its upstream.
    pub cache: Option<Arc<crate::cache::RouteCache>>,
}

/// Where a route's requests go.
#[derive(Debug)]
pub enum Target {
    /// An upstream pool.
    Upstream(Arc<Upstream>),
    /// A fixed response.
    Static(StaticResponse),
    /// A JSON echo of the request.
    Echo {
        /// Status to answer with.
        status: StatusCode,
    },
    /// An MCP endpoint whose tools are routes.
    Mcp(Arc<McpEndpoint>),
    /// A weighted split between upstream pools.
    Split(Arc<Split>),
    /// Parallel upstream calls composed into one JSON answer.
    Aggregate(Arc<Aggregate>),
    /// A `wasi:http` component run inside the gateway.
    Function(Arc<Function>),
}

/// A fixed response, pre-built at load time.
#[derive(Debug, Clone)]
pub struct StaticResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// Snapshots alive in this process. After a reload the old one lives on only while
/// requests still hold it, so this stays at 1–2: the admin API reports it as a leak
/// detector.
static LIVE_SNAPSHOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many snapshots are alive in this process right now.
pub fn live_snapshots() -> usize {
    LIVE_SNAPSHOTS.load(std::sync::atomic::Ordering::Relaxed)
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        LIVE_SNAPSHOTS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The current snapshot, swapped atomically on reload.
pub type SnapshotCell = arc_swap::ArcSwap<Snapshot>;

impl Snapshot {
    /// The resolved settings of the listener called `name`.
    pub fn listener(&self, name: &Name) -> Option<Arc<ListenerSpec>> {
        self.listeners.iter().find(|l| &l.name == name).cloned()
    }

    /// Every plugin entry's instance pool, once each (a global entry is shared by
    /// every route's chain), in config order.
    pub fn plugin_pools(&self) -> Vec<Arc<crate::plugins::pool::InstancePool>> {
        let mut pools: Vec<Arc<crate::plugins::pool::InstancePool>> = Vec::new();
        for route in &self.routes {
            for entry in route.chain.entries() {
                if !pools.iter().any(|p| Arc::ptr_eq(p, &entry.pool)) {
                    pools.push(Arc::clone(&entry.pool));
                }
            }
        }
        pools
    }

    /// How long in-flight requests may take to finish on shutdown.
    pub fn grace_period(&self) -> std::time::Duration {
        self.config.config.server.grace_period.unwrap_or(crate::config::DEFAULT_GRACE_PERIOD).get()
    }

    /// Builds a snapshot, collecting every problem (with its location) on failure.
    pub fn build(config: LoadedConfig, generation: u64) -> Result<Snapshot, crate::config::ConfigError> {
        Self::build_with(config, generation, &LoadOptions::default())
    }

    /// [`Snapshot::build`] with plugins loaded under `options` (clock and kv store).
    pub fn build_with(
        config: LoadedConfig,
        generation: u64,
        options: &LoadOptions,
    ) -> Result<Snapshot, crate::config::ConfigError> {
        let mut problems = Vec::new();
        let cfg = &config.config;

        let mut upstreams = HashMap::new();
        for (name, up) in &cfg.upstreams {
            match Upstream::build(name, up, &config.base_dir, &options.metrics) {
                Ok(u) => {
                    upstreams.insert(name.clone(), Arc::new(u));
                }
                Err(p) => problems.extend(p),
            }
        }

        let chains = crate::plugins::build_chains(&config, options).unwrap_or_else(|p| {
            problems.extend(p);
            Vec::new()
        });

        // The store of the routes' caches, opened only when a route has one.
        let cache_store = if cfg.routes.iter().any(|r| r.cache.is_some()) {
            let mut kv_problem = None;
            let store = crate::cache::store_for(&cfg.server.cache, || {
                crate::plugins::load::open_kv(&config, options).map_err(|p| kv_problem = Some(p)).ok()
            });
            problems.extend(kv_problem);
            store
        } else {
            None
        };

        let mut routes = Vec::with_capacity(cfg.routes.len());
        for (i, r) in cfg.routes.iter().enumerate() {
            let target = match &r.target {
                RouteTargetConfig::Upstream(name) => match upstreams.get(name) {
                    Some(u) => Target::Upstream(Arc::clone(u)),
                    None => {
                        problems.push(Problem::new(
                            format!("routes[{i}].target.upstream"),
                            format!("unknown upstream `{name}`"),
                        ));
                        continue;
                    }
                },
                RouteTargetConfig::Static(s) => match static_response(s, i) {
                    Ok(s) => Target::Static(s),
                    Err(p) => {
                        problems.extend(p);
                        continue;
                    }
                },
                RouteTargetConfig::Echo(e) => Target::Echo {
                    status: answer_status(e.status, format!("routes[{i}].target.echo.status"), &mut problems),
                },
                RouteTargetConfig::Mcp(m) => {
                    let found = crate::config::validate_mcp(m, &format!("routes[{i}].target.mcp"));
                    if !found.is_empty() {
                        problems.extend(found);
                        continue;
                    }
                    Target::Mcp(Arc::new(McpEndpoint::new(m)))
                }
                RouteTargetConfig::Aggregate(a) => {
                    let at = format!("routes[{i}].target.aggregate");
                    let found = crate::config::validate_aggregate(a, &at, |n| upstreams.contains_key(n));
                    match Aggregate::new(a, |n| upstreams.get(n).cloned()) {
                        Some(agg) if found.is_empty() => Target::Aggregate(Arc::new(agg)),
                        _ => {
                            problems.extend(found);
                            continue;
                        }
                    }
                }
                RouteTargetConfig::Split(sp) => {
                    let at = format!("routes[{i}].target.split");
                    let found = crate::config::validate_split(sp, &at, |n| upstreams.contains_key(n));
                    match Split::new(sp, |n| upstreams.get(n).cloned()) {
                        Some(split) if found.is_empty() => Target::Split(Arc::new(split)),
                        _ => {
                            problems.extend(found);
                            continue;
                        }
                    }
                }
                RouteTargetConfig::Function(f) => {
                    let at = format!("routes[{i}].target.function");
                    match Function::load(f, r.name.as_str(), &at, &config, &upstreams) {
                        Ok(function) => Target::Function(Arc::new(function)),
                        Err(found) => {
                            problems.extend(found);
                            continue;
                        }
                    }
                }
            };
            let chain = chains.get(i).cloned().unwrap_or_default();
            let upgrades = r.upgrades.iter().map(|u| u.to_ascii_lowercase().into_boxed_str()).collect();
            let input_schema = prompt_input_schema(r).map(Arc::new);
            let cache = match (&r.cache, &cache_store) {
                (Some(c), Some(store)) => Some(Arc::new(RouteCache::new(r.name.as_str(), c, store.clone()))),
                _ => None,
            };
            routes.push(Route { name: r.name.clone(), target, chain, upgrades, input_schema, cache });
        }

        let mut listeners = Vec::new();
        let mut routers = HashMap::default();
        for (li, l) in cfg.listeners.iter().enumerate() {
            match ListenerSpec::build(li, l, &config, &options.metrics) {
                Ok(spec) => listeners.push(Arc::new(spec)),
                Err(p) => problems.extend(p),
            }
            let served: Vec<(usize, &crate::config::RouteConfig)> = cfg
                .routes
                .iter()
                .enumerate()
                .filter(|(_, r)| r.listeners.is_empty() || r.listeners.contains(&l.name))
                .collect();
            match Router::build(&served) {
                Ok(router) => {
                    let mut route_metrics = vec![None; cfg.routes.len()];
                    for (i, r) in &served {
                        route_metrics[*i] =
                            Some(options.metrics.route(l.name.as_str(), Some(r.name.as_str())));
                    }
                    let unrouted = options.metrics.route(l.name.as_str(), None);
                    let served =
                        ListenerRoutes { router, route_metrics: route_metrics.into_boxed_slice(), unrouted };
                    routers.insert(l.name.clone(), Arc::new(served));
                }
                Err(p) => problems.extend(p),
            }
        }

        let admin_token = match admin_token(&config) {
            Ok(t) => t,
            Err(p) => {
                problems.push(p);
                None
            }
        };
        if !problems.is_empty() {
            return Err(config.error(problems));
        }
        // Both start background work: only when serving (`sluice check` has no runtime).
        let serving = tokio::runtime::Handle::try_current().is_ok();
        let service =
            config.config.server.tracing.as_ref().and_then(|t| t.service_name.as_deref()).unwrap_or("sluice");
        let call_log = match options.call_log.for_config(
            config.config.server.call_log.as_ref().filter(|_| serving),
            &config.base_dir,
            service,
        ) {
            Ok(log) => log,
            Err(message) => return Err(config.error(vec![Problem::new("server.call_log.path", message)])),
        };
        let tracer = options.tracer.for_config(config.config.server.tracing.as_ref().filter(|_| serving));
        LIVE_SNAPSHOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Snapshot {
            generation,
            config,
            routes,
            routers,
            upstreams,
            listeners,
            admin_token,
            tracer,
            call_log,
        })
    }
}

/// `admin.token`, or the trimmed contents of `admin.token_file`.
fn admin_token(config: &LoadedConfig) -> Result<Option<Arc<str>>, Problem> {
    let Some(admin) = &config.config.admin else { return Ok(None) };
    if let Some(t) = &admin.token {
        return Ok(Some(t.trim().into()));
    }
    let Some(file) = &admin.token_file else { return Ok(None) };
    let path = config.base_dir.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Problem::new("admin.token_file", format!("cannot read `{}`: {e}", path.display())))?;
    match text.trim() {
        "" => Err(Problem::new("admin.token_file", format!("`{}` is empty", path.display()))),
        t => Ok(Some(t.into())),
    }
}

/// A target's configured status (default 200), which must be a final one.
fn answer_status(code: Option<u16>, at: String, problems: &mut Vec<Problem>) -> StatusCode {
    crate::error::final_status(code.unwrap_or(200)).unwrap_or_else(|| {
        problems.push(Problem::new(at, "status must be 200 to 999 (a final status)"));
        StatusCode::OK
    })
}

fn static_response(
    s: &crate::config::StaticResponseConfig,
    i: usize,
) -> Result<StaticResponse, Vec<Problem>> {
    let mut problems = Vec::new();
    let status = answer_status(s.status, format!("routes[{i}].target.static.status"), &mut problems);
    let mut headers = HeaderMap::new();
    for (k, v) in &s.headers {
        let path = format!("routes[{i}].target.static.headers.{k}");
        match (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            (Ok(k), Ok(v)) => {
                headers.append(k, v);
            }
            (Err(_), _) => problems.push(Problem::new(path, format!("invalid header name `{k}`"))),
            (_, Err(_)) => problems.push(Problem::new(path, "invalid header value")),
        }
    }
    if problems.is_empty() {
        Ok(StaticResponse { status, headers, body: Bytes::from(s.body.clone()) })
    } else {
        Err(problems)
    }
}

/// The `prompt.input_schema` of the route's `ai` plugin in prompt mode, if any.
fn prompt_input_schema(r: &crate::config::RouteConfig) -> Option<serde_json::Value> {
    let config = r.plugins.iter().find(|p| p.name.as_str() == "ai")?.config.as_ref()?;
    if config.get("mode").and_then(serde_json::Value::as_str) != Some("prompt") {
        return None;
    }
    config.pointer("/prompt/input_schema").filter(|s| s.is_object()).cloned()
}
