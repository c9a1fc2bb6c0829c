//! The admin listener: status, Prometheus metrics and reload, for operators.
//!
//! | endpoint | what it does |
//! |---|---|
//! | `GET /` | the dashboard (static files embedded in the binary; it polls the endpoints below) |
//! | `GET /-/health` | `200 ok` while the process serves |
//! | `GET /-/status` | JSON: config generation, reload history and last error, listeners, routes, upstream targets' health |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /-/openapi.json` | the routes as one OpenAPI 3.1 document, with the operations of the documents their `openapi-validate` plugins check against (see `openapi::document`) |
//! | `POST /-/reload` | re-read the config source and reload: `200 {"generation": N}` or `422` with every problem |
//! | `GET /-/calls` | the call log, newest first: filters `from`, `to` (ms since the epoch), `route`, `consumer`, `status` (`5xx` or `404`); `limit`, and `before` = the previous page's `next` |
//! | `GET /-/calls/stats` | the call log's aggregates per `bucket` (`minute`, `hour`) and `by` (`route`, `consumer`): requests, errors, p50/p95/p99, tokens, cost; same filters |
//!
//! On loopback (the default, `127.0.0.1:9901`) the admin listener may go without a
//! token. Bound anywhere else, the config must give one (`admin.token` or
//! `admin.token_file`; the config is refused otherwise), and every request but
//! `GET /-/health` must carry it as `Authorization: Bearer <token>` or gets `401`.

use std::convert::Infallible;
use std::path::Path;
use std::time::UNIX_EPOCH;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::metrics;
use super::prom::Exposition;
use crate::Gateway;
use crate::body::{Body, full};
use crate::upstream::CircuitState;

/// Serves the admin API on `tcp` until `shutdown` turns true.
pub async fn serve(tcp: TcpListener, gateway: Gateway, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            r = tcp.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            _ = shutdown.wait_for(|v| *v) => return,
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let gw = gw.clone();
                async move { Ok::<_, Infallible>(handle(req, &gw).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The dashboard's files, embedded: static, so served without the token (the data
/// they fetch is behind it; the page asks for the token on a 401).
const DASHBOARD: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", include_str!("dashboard/index.html")),
    ("/-/dashboard.js", "text/javascript; charset=utf-8", include_str!("dashboard/dashboard.js")),
    ("/-/dashboard.css", "text/css; charset=utf-8", include_str!("dashboard/dashboard.css")),
];

async fn handle(req: Request<Incoming>, gw: &Gateway) -> Response<Body> {
    if req.method() == Method::GET
        && let Some((_, kind, body)) = DASHBOARD.iter().find(|(path, _, _)| *path == req.uri().path())
    {
        let mut resp = text(StatusCode::OK, kind, (*body).to_owned());
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        );
        h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
        return resp;
    }
    let open = req.method() == Method::GET && req.uri().path() == "/-/health";
    if !open && let Some(token) = gw.snapshot().admin_token.clone() {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        if !given.is_some_and(|g| same_token(g.trim().as_bytes(), token.as_bytes())) {
            let mut resp = text(
                StatusCode::UNAUTHORIZED,
                "application/json",
                json!({ "error": "the admin API needs `Authorization: Bearer <admin token>`" }).to_string(),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"sluice-admin\""),
            );
            return resp;
        }
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/-/health") => text(StatusCode::OK, "text/plain", "ok\n".to_owned()),
        (&Method::GET, "/-/status") => text(StatusCode::OK, "application/json", status(gw).to_string()),
        (&Method::GET, "/metrics") => text(StatusCode::OK, "text/plain; version=0.0.4", metrics(gw)),
        (&Method::GET, "/-/openapi.json") => {
            let snap = gw.snapshot();
            let doc = crate::openapi::combined(&snap.config.config, snap.generation);
            text(StatusCode::OK, "application/json", doc.to_string())
        }
        (&Method::POST, "/-/reload") => match gw.reload_from_source().await {
            Ok(generation) => {
                text(StatusCode::OK, "application/json", json!({ "generation": generation }).to_string())
            }
            Err(e) => text(
                StatusCode::UNPROCESSABLE_ENTITY,
                "application/json",
                json!({ "error": e.to_string(), "generation": gw.snapshot().generation }).to_string(),
            ),
        },
        (&Method::GET, "/-/calls") => calls(gw, req.uri().query(), false).await,
        (&Method::GET, "/-/calls/stats") => calls(gw, req.uri().query(), true).await,
        (&Method::POST, "/-/cache/purge") => purge(gw, req.uri().query()),
        (
            _,
            "/-/health" | "/-/status" | "/metrics" | "/-/reload" | "/-/calls" | "/-/calls/stats"
            | "/-/cache/purge" | "/-/openapi.json",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n".to_owned()),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    }
}

/// `POST /-/cache/purge?route=NAME[&path=/exact/path]`: drops a route's cached entries
/// (or those of one path) from the in-memory store.
fn purge(gw: &Gateway, query: Option<&str>) -> Response<Body> {
    let q = query_pairs(query.unwrap_or_default());
    let bad =
        |status: StatusCode, m: String| text(status, "application/json", json!({ "error": m }).to_string());
    let Some(route) = q.get("route") else {
        return bad(StatusCode::BAD_REQUEST, "`route` is required".into());
    };
    let snap = gw.snapshot();
    let Some(cache) =
        snap.routes.iter().find(|r| r.name.as_str() == route.as_str()).and_then(|r| r.cache.as_ref())
    else {
        return bad(StatusCode::NOT_FOUND, format!("no route `{route}` with a cache"));
    };
    match &cache.store {
        crate::cache::Store::Memory(m) => {
            let purged = m.purge(route, q.get("path").map(String::as_str));
            text(StatusCode::OK, "application/json", json!({ "purged": purged }).to_string())
        }
        crate::cache::Store::Kv(_) => bad(
            StatusCode::NOT_IMPLEMENTED,
            "entries in Redis are not purged from here: they expire with their freshness (or delete them in Redis)"
                .into(),
        ),
    }
}

/// `/-/calls` (a page of records) or, with `stats`, `/-/calls/stats` (aggregates).
async fn calls(gw: &Gateway, query: Option<&str>, stats: bool) -> Response<Body> {
    use super::call_log::{self, Bucket, Filter};
    let Some(log) = gw.snapshot().call_log.clone() else {
        let body = json!({ "error": "the call log is off: set server.call_log" }).to_string();
        return text(StatusCode::NOT_FOUND, "application/json", body);
    };
    let q = query_pairs(query.unwrap_or_default());
    let bad =
        |m: String| text(StatusCode::BAD_REQUEST, "application/json", json!({ "error": m }).to_string());
    let filter = match Filter::parse(&q) {
        Ok(f) => f,
        Err(m) => return bad(m),
    };
    let Some(path) = log.path().map(Path::to_owned) else {
        let body = json!({ "error": "the call log is not stored on this node: set server.call_log.path (records go out over OTLP)" }).to_string();
        return text(StatusCode::NOT_FOUND, "application/json", body);
    };
    let work: Box<dyn FnOnce() -> Result<serde_json::Value, String> + Send> = if stats {
        let bucket = match q.get("bucket").map(String::as_str) {
            None | Some("minute") => Bucket::Minute,
            Some("hour") => Bucket::Hour,
            Some(_) => return bad("`bucket` must be `minute` or `hour`".into()),
        };
        let by_consumer = match q.get("by").map(String::as_str) {
            None | Some("route") => false,
            Some("consumer") => true,
            Some(_) => return bad("`by` must be `route` or `consumer`".into()),
        };
        Box::new(move || call_log::stats(&path, &filter, bucket, by_consumer))
    } else {
        let limit = match q.get("limit").map(|v| v.parse::<u32>()) {
            None => 100,
            Some(Ok(n)) if n >= 1 => n,
            Some(_) => return bad(format!("`limit` must be 1 to {}", call_log::MAX_PAGE)),
        };
        let before = match q.get("before").map(|v| v.parse::<i64>()) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(_)) => return bad("`before` must be a record id (a page's `next`)".into()),
        };
        Box::new(move || call_log::page(&path, &filter, limit, before))
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(doc)) => text(StatusCode::OK, "application/json", doc.to_string()),
        Ok(Err(e)) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, "application/json", json!({ "error": e }).to_string())
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            json!({ "error": e.to_string() }).to_string(),
        ),
    }
}

/// A query string's `key=value` pairs, percent-decoded (`+` is a space); the first
/// of a repeated key wins.
fn query_pairs(query: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// Whether two tokens are equal, in time that depends on neither: their SHA-256
/// digests (fixed length, whatever the tokens' lengths) are compared byte by byte
/// without stopping early.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

fn unix(t: Option<std::time::SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs())
}

fn circuit(c: CircuitState) -> &'static str {
    match c {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
    }
}

/// The `/-/status` document.
pub fn status(gw: &Gateway) -> serde_json::Value {
    let snap = gw.snapshot();
    let reload = gw.reload_status();
    let upstreams: serde_json::Map<String, serde_json::Value> = snap
        .upstreams
        .iter()
        .map(|(name, up)| {
            let targets: Vec<serde_json::Value> = up
                .targets_status()
                .into_iter()
                .map(|t| {
                    json!({
                        "address": &*t.address,
                        "healthy": t.healthy,
                        "ejected": t.ejected,
                        "circuit": circuit(t.circuit),
                        "in_flight": t.in_flight,
                    })
                })
                .collect();
            (name.to_string(), json!({ "targets": targets }))
        })
        .collect();
    let mut listeners: Vec<(String, serde_json::Value)> =
        gw.addrs().into_iter().map(|(k, v)| (k, serde_json::Value::String(v.to_string()))).collect();
    listeners.sort_by(|a, b| a.0.cmp(&b.0));
    json!({
        "generation": snap.generation,
        "config": gw.source().path().map(|p| p.display().to_string()),
        "reload": {
            "reloads_total": reload.reloads_total,
            "failures_total": reload.failures_total,
            "last_error": reload.last_error(),
            "last_attempt_unix": unix(reload.last_attempt()),
            "last_success_unix": unix(reload.last_success),
            "history": reload.history.iter().map(|a| json!({
                "at_unix": unix(Some(a.at)),
                "generation": a.generation,
                "error": a.error,
            })).collect::<Vec<_>>(),
        },
        "live_snapshots": crate::snapshot::live_snapshots(),
        "listeners": listeners.into_iter().collect::<serde_json::Map<_, _>>(),
        "routes": snap.routes.iter().map(|r| r.name.to_string()).collect::<Vec<_>>(),
        "chains": snap
            .routes
            .iter()
            .map(|r| {
                let plugins: Vec<String> = r.chain.entries().iter().map(|e| e.pool.plugin().to_string()).collect();
                (r.name.to_string(), json!(plugins))
            })
            .collect::<serde_json::Map<_, _>>(),
        "upstreams": upstreams,
    })
}

/// The `/metrics` page in Prometheus text format.
pub fn metrics(gw: &Gateway) -> String {
    let snap = gw.snapshot();
    let reload = gw.reload_status();
    let mut out = Exposition::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(Vec<(&str, &str)>, f64)]| {
        out.family(name, kind, help);
        for (labels, v) in samples {
            out.sample(name, labels, *v);
        }
    };
    metric(
        "sluice_config_generation",
        "gauge",
        "Generation of the config snapshot serving now.",
        &[(vec![], snap.generation as f64)],
    );
    metric(
        "sluice_reloads_total",
        "counter",
        "Successful reloads.",
        &[(vec![], reload.reloads_total as f64)],
    );
    metric(
        "sluice_reload_failures_total",
        "counter",
        "Reloads rejected; the previous config kept serving.",
        &[(vec![], reload.failures_total as f64)],
    );
    metric(
        "sluice_reload_last_failed",
        "gauge",
        "1 when the most recent reload attempt failed.",
        &[(vec![], if reload.last_error().is_some() { 1.0 } else { 0.0 })],
    );
    metric(
        "sluice_snapshots_live",
        "gauge",
        "Config snapshots alive (current plus those still held by in-flight requests).",
        &[(vec![], crate::snapshot::live_snapshots() as f64)],
    );
    let mut healthy = Vec::new();
    let mut in_flight = Vec::new();
    let mut open = Vec::new();
    let mut names: Vec<_> = snap.upstreams.keys().collect();
    names.sort();
    let statuses: Vec<_> = names.iter().map(|n| (n.as_str(), snap.upstreams[*n].targets_status())).collect();
    for (name, targets) in &statuses {
        for t in targets {
            let labels = vec![("upstream", *name), ("target", &*t.address)];
            healthy.push((labels.clone(), if t.healthy && !t.ejected { 1.0 } else { 0.0 }));
            in_flight.push((labels.clone(), t.in_flight as f64));
            open.push((labels, if t.circuit == CircuitState::Closed { 0.0 } else { 1.0 }));
        }
    }
    metric(
        "sluice_upstream_target_up",
        "gauge",
        "1 when the target may receive traffic (healthy, not ejected).",
        &healthy,
    );
    metric("sluice_upstream_target_in_flight", "gauge", "Requests in flight to the target.", &in_flight);
    metric(
        "sluice_upstream_target_circuit_open",
        "gauge",
        "1 when the target's circuit is open or half-open.",
        &open,
    );
    let (mut instances, mut bound) = (Vec::new(), Vec::new());
    let pools = snap.plugin_pools();
    for pool in &pools {
        let labels: Vec<(&str, &str)> =
            vec![("plugin", pool.plugin().as_ref()), ("route", &pool.route), ("entry", &pool.at)];
        let (live, idle) = (pool.live(), pool.idle());
        let with = |state| labels.iter().copied().chain([("state", state)]).collect::<Vec<_>>();
        instances.push((with("idle"), idle as f64));
        instances.push((with("busy"), live.saturating_sub(idle) as f64));
        bound.push((labels, pool.limits.max_instances as f64));
    }
    metric(
        "sluice_plugin_instances",
        "gauge",
        "Instances of each plugin entry of the current config: idle (warm) or busy (in a call or holding a stream).",
        &instances,
    );
    metric("sluice_plugin_instances_max", "gauge", "Each plugin entry's limits.max_instances.", &bound);
    if let Some(m) = crate::plugins::engine::created().and_then(|e| e.pooling_allocator_metrics()) {
        use crate::plugins::engine::{POOL_COMPONENT_INSTANCES, POOL_MEMORIES, POOL_STACKS};
        let kinds = [
            ("component_instances", m.component_instances() as f64, POOL_COMPONENT_INSTANCES),
            ("memories", m.memories() as f64, POOL_MEMORIES),
            ("stacks", m.stacks() as f64, POOL_STACKS),
        ];
        let used: Vec<_> = kinds.iter().map(|(k, n, _)| (vec![("kind", *k)], *n)).collect();
        let total: Vec<_> = kinds.iter().map(|(k, _, t)| (vec![("kind", *k)], f64::from(*t))).collect();
        metric(
            "sluice_plugin_engine_slots_in_use",
            "gauge",
            "Slots of the process-wide plugin engine in use (every snapshot's instances).",
            &used,
        );
        metric("sluice_plugin_engine_slots", "gauge", "Slots of the process-wide plugin engine.", &total);
    }
    requests(&snap, &mut out);
    crate::plugins::stats::write_prometheus(&mut out);
    crate::cache::stats::write_prometheus(&mut out, crate::cache::memory_bytes());
    out.finish()
}

/// The request, connection and upstream families of the snapshot serving now.
fn requests(snap: &crate::snapshot::Snapshot, out: &mut Exposition) {
    let mut routes = Vec::new();
    let mut listeners: Vec<_> = snap.listeners.iter().map(|l| (l.name.as_str(), &*l.metrics)).collect();
    listeners.sort_by_key(|(n, _)| *n);
    for (listener, _) in &listeners {
        let Some(served) = snap.routers.get(*listener) else { continue };
        for (route, metrics) in served.all_metrics(&snap.routes) {
            routes.push(metrics::RouteSeries { listener, route, metrics });
        }
    }
    let mut names: Vec<_> = snap.upstreams.keys().collect();
    names.sort();
    let upstreams: Vec<_> = names.iter().map(|n| (n.as_str(), snap.upstreams[*n].metrics())).collect();
    let targets: Vec<_> = names
        .iter()
        .flat_map(|n| {
            snap.upstreams[*n].target_metrics().map(|(target, metrics)| metrics::TargetSeries {
                upstream: n.as_str(),
                target,
                metrics,
            })
        })
        .collect();
    metrics::write(out, &routes, &listeners, &upstreams, &targets);
    let stored: Vec<(&[(&str, &str)], &metrics::Deliveries)> =
        snap.call_log.iter().map(|l| (&[][..], &*l.stats)).collect();
    metrics::write_deliveries(
        out,
        (
            "sluice_call_log_records_total",
            "Call log records: written, dropped because the queue was full (the request never waits), or lost to a failed write.",
            "written",
        ),
        &stored,
    );
    let spans = [("signal", "spans")];
    let calls = [("signal", "call_log")];
    let exported: Vec<(&[(&str, &str)], &metrics::Deliveries)> = [
        snap.tracer.as_ref().map(|t| (&spans[..], t.stats())),
        snap.call_log.as_ref().and_then(|l| Some((&calls[..], l.otlp_stats()?))),
    ]
    .into_iter()
    .flatten()
    .collect();
    metrics::write_deliveries(
        out,
        (
            "sluice_otlp_items_total",
            "Items sent over OTLP, by signal: exported, dropped because the export queue was full, or lost to a failed export.",
            "exported",
        ),
        &exported,
    );
}
