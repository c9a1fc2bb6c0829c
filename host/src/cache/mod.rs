//! Response caching: a route's cache rules and keys ([`RouteCache`]), the store its
//! entries live in ([`store`]), the HTTP caching rules ([`policy`]) and the fills in
//! flight that let a burst of misses for one entry make one upstream call
//! ([`Fills`]). The proxy's `cache` module drives them for a request.

pub mod policy;
pub mod stats;
pub mod store;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName, header};
use tokio::sync::watch;

use crate::config::{
    AuthorizedCaching, CacheBackendConfig, CacheStoreConfig, DEFAULT_CACHE_LOCK_TIMEOUT,
    DEFAULT_CACHE_MAX_BODY, DEFAULT_CACHE_MAX_BYTES, DEFAULT_CACHE_STATUSES, RouteCacheConfig,
};
use crate::plugins::host_api::KvStore;
pub use policy::Rules;
pub use store::{Entry, Store};

/// Default upper bound on freshness (`max_ttl`).
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(86_400);

/// What the cache did for a request: the `x-cache-status` header and the access
/// log's `cache` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from a fresh entry.
    Hit,
    /// Fetched from the upstream (and stored when allowed).
    Miss,
    /// Answered from a stale entry: while it is refreshed, or because the upstream failed.
    Stale,
    /// A stale entry the upstream confirmed with `304`.
    Revalidated,
    /// The request may not use the cache (method, body, range, authorization).
    Bypass,
}

impl Outcome {
    /// Its name in headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
            Outcome::Revalidated => "REVALIDATED",
            Outcome::Bypass => "BYPASS",
        }
    }
}

/// The header that tells clients what the cache did.
pub static STATUS_HEADER: HeaderName = HeaderName::from_static("x-cache-status");

/// A route's cache, built from its `cache` block.
#[derive(Debug)]
pub struct RouteCache {
    /// What is stored and for how long.
    pub rules: Rules,
    /// Query parameters in the key, sorted; `None`: the whole query.
    key_query: Option<Vec<String>>,
    key_headers: Vec<HeaderName>,
    authorized: AuthorizedCaching,
    /// Largest body stored.
    pub max_body: usize,
    /// How long a request waits for a fill in flight.
    pub lock_timeout: Duration,
    /// Whether responses get `x-cache-status`.
    pub status_header: bool,
    /// Where entries live.
    pub store: Store,
    /// What it did, counted.
    pub counters: Arc<stats::CacheCounters>,
}

impl RouteCache {
    /// The cache of route `route`'s validated `cache` block, storing into `store`.
    pub fn new(route: &str, cfg: &RouteCacheConfig, store: Store) -> RouteCache {
        let statuses = cfg.statuses.as_deref().unwrap_or(DEFAULT_CACHE_STATUSES);
        let rules = Rules {
            ttl: cfg.ttl.map(|t| t.get()),
            max_ttl: cfg.max_ttl.map_or(DEFAULT_MAX_TTL, |t| t.get()),
            stale_while_revalidate: cfg.stale_while_revalidate.map_or(Duration::ZERO, |t| t.get()),
            stale_if_error: cfg.stale_if_error.map_or(Duration::ZERO, |t| t.get()),
            statuses: statuses.iter().filter_map(|s| http::StatusCode::from_u16(*s).ok()).collect(),
            cookies: cfg.cookies,
            authorized: cfg.authorized != AuthorizedCaching::Skip,
        };
        let key_query = cfg.key.query.clone().map(|mut q| {
            q.sort();
            q.dedup();
            q
        });
        RouteCache {
            rules,
            key_query,
            key_headers: cfg
                .key
                .headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            authorized: cfg.authorized,
            max_body: cfg.max_body.unwrap_or(DEFAULT_CACHE_MAX_BODY).0 as usize,
            lock_timeout: cfg.lock_timeout.unwrap_or(DEFAULT_CACHE_LOCK_TIMEOUT).get(),
            status_header: cfg.status_header,
            store,
            counters: stats::CacheCounters::of(route),
        }
    }

    /// The key of a request to `route` going to `upstream`, or `None` when it may not
    /// use the cache (it carries `Authorization` and the route says `skip`, or
    /// `per_consumer` without a consumer).
    pub fn key(
        &self,
        route: &str,
        upstream: &str,
        host: Option<&str>,
        uri: &http::Uri,
        headers: &HeaderMap,
        consumer: Option<&str>,
    ) -> Option<String> {
        let (path, query) = (uri.path(), uri.query());
        let consumer = match (headers.contains_key(header::AUTHORIZATION), self.authorized) {
            (false, _) | (true, AuthorizedCaching::Shared) => "",
            (true, AuthorizedCaching::Skip) => return None,
            (true, AuthorizedCaching::PerConsumer) => consumer?,
        };
        let mut key = String::with_capacity(64 + path.len());
        // NUL separates the parts: none of them can contain one.
        let _ = write!(key, "{route}\0{upstream}\0{}\0{path}\0", host.unwrap_or("").to_ascii_lowercase());
        match (&self.key_query, query) {
            (None, Some(q)) => key.push_str(q),
            (None, None) => {}
            (Some(names), q) => {
                let mut pairs: Vec<(String, String)> = form_urlencoded::parse(q.unwrap_or("").as_bytes())
                    .filter(|(k, _)| names.iter().any(|n| n == k))
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                pairs.sort();
                for (k, v) in pairs {
                    let _ = write!(key, "{k}={v}&");
                }
            }
        }
        for name in &self.key_headers {
            key.push('\0');
            for v in headers.get_all(name) {
                key.push_str(&String::from_utf8_lossy(v.as_bytes()));
                key.push('\n');
            }
        }
        key.push('\0');
        key.push_str(consumer);
        Some(key)
    }

    /// Whether a request with these headers counts as authorized for storing (it
    /// carried `Authorization`).
    pub fn authorized(headers: &HeaderMap) -> bool {
        headers.contains_key(header::AUTHORIZATION)
    }
}

/// The in-memory store's size, if the process has one.
pub fn memory_bytes() -> Option<usize> {
    store::MemoryStore::existing().map(|m| m.used_bytes())
}

/// The store `server.cache` names: the process's in-memory store (its bound set to
/// the config's), or the kv backend `kv` (Redis).
pub fn store_for(cfg: &CacheStoreConfig, kv: impl FnOnce() -> Option<Arc<dyn KvStore>>) -> Option<Store> {
    match cfg.backend {
        CacheBackendConfig::Memory => {
            let max = cfg.max_bytes.unwrap_or(DEFAULT_CACHE_MAX_BYTES).0 as usize;
            Some(Store::Memory(store::MemoryStore::global(max)))
        }
        CacheBackendConfig::Redis => kv().map(Store::Kv),
    }
}

/// Fetches in flight, by key: the first request to miss an entry fetches it while
/// the others wait (up to the route's `lock_timeout`) and then read the store.
#[derive(Debug, Default)]
pub struct Fills {
    inflight: Mutex<HashMap<String, watch::Receiver<()>>>,
}

/// A request's part in a fill.
pub enum Fill {
    /// It fetches; the others wait until this guard drops (stored, or given up).
    Leader(FillGuard),
    /// Another request is fetching: wait for it.
    Wait(watch::Receiver<()>),
}

/// Held by the request fetching an entry; dropping it wakes the waiters.
#[derive(Debug)]
pub struct FillGuard {
    key: String,
    fills: Arc<Fills>,
    _done: watch::Sender<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.fills.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

impl Fills {
    /// The process's fills.
    pub fn global() -> Arc<Fills> {
        static GLOBAL: OnceLock<Arc<Fills>> = OnceLock::new();
        Arc::clone(GLOBAL.get_or_init(Arc::default))
    }

    /// Joins the fill of `key`, leading it when none is in flight.
    pub fn join(self: &Arc<Self>, key: &str) -> Fill {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = inflight.get(key) {
            return Fill::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        inflight.insert(key.to_owned(), rx);
        Fill::Leader(FillGuard { key: key.to_owned(), fills: Arc::clone(self), _done: tx })
    }

    /// Waits until the fill `rx` belongs to ends, or `timeout` passes.
    pub async fn wait(mut rx: watch::Receiver<()>, timeout: Duration) {
        // `changed` fails once the leader's sender is dropped: that is the signal.
        let _ = tokio::time::timeout(timeout, async { while rx.changed().await.is_ok() {} }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheKeyConfig;

    fn cache(cfg: RouteCacheConfig) -> RouteCache {
        RouteCache::new("test", &cfg, Store::Memory(Arc::new(store::MemoryStore::new(1 << 20))))
    }

    fn uri(path: &str, query: Option<&str>) -> http::Uri {
        match query {
            Some(q) => format!("{path}?{q}").parse().unwrap(),
            None => path.parse().unwrap(),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn keys_tell_apart_what_the_route_says_and_nothing_else() {
        let c = cache(RouteCacheConfig {
            key: CacheKeyConfig {
                query: Some(vec!["b".into(), "a".into()]),
                headers: vec!["x-tenant".into()],
            },
            ..Default::default()
        });
        let none = HeaderMap::new();
        let k = |q: Option<&str>, h: &HeaderMap| {
            c.key("r", "u", Some("Example.com"), &uri("/p", q), h, None).unwrap()
        };
        assert_eq!(k(Some("a=1&b=2&utm=x"), &none), k(Some("b=2&a=1"), &none));
        assert_ne!(k(Some("a=1"), &none), k(Some("a=2"), &none));
        assert_ne!(k(None, &none), k(None, &headers(&[("x-tenant", "t1")])));
        assert_eq!(
            c.key("r", "u", Some("example.com"), &uri("/p", None), &none, None).unwrap(),
            k(None, &none)
        );
        assert_ne!(
            c.key("r", "v", None, &uri("/p", None), &none, None),
            c.key("r", "u", None, &uri("/p", None), &none, None)
        );

        let whole = cache(RouteCacheConfig::default());
        let k = |q| whole.key("r", "u", None, &uri("/p", q), &none, None).unwrap();
        assert_ne!(k(Some("a=1&b=2")), k(Some("b=2&a=1")), "by default the query is taken as sent");
        let ignored = cache(RouteCacheConfig {
            key: CacheKeyConfig { query: Some(vec![]), headers: vec![] },
            ..Default::default()
        });
        assert_eq!(
            ignored.key("r", "u", None, &uri("/p", Some("a=1")), &none, None),
            ignored.key("r", "u", None, &uri("/p", None), &none, None)
        );
    }

    #[test]
    fn authorized_requests_follow_the_route() {
        let auth = headers(&[("authorization", "Bearer t")]);
        let skip = cache(RouteCacheConfig::default());
        assert!(skip.key("r", "u", None, &uri("/", None), &auth, Some("alice")).is_none());
        let per =
            cache(RouteCacheConfig { authorized: AuthorizedCaching::PerConsumer, ..Default::default() });
        assert!(per.key("r", "u", None, &uri("/", None), &auth, None).is_none());
        assert_ne!(
            per.key("r", "u", None, &uri("/", None), &auth, Some("alice")),
            per.key("r", "u", None, &uri("/", None), &auth, Some("bob"))
        );
        let shared = cache(RouteCacheConfig { authorized: AuthorizedCaching::Shared, ..Default::default() });
        assert_eq!(
            shared.key("r", "u", None, &uri("/", None), &auth, Some("alice")),
            shared.key("r", "u", None, &uri("/", None), &auth, Some("bob"))
        );
    }

    #[tokio::test]
    async fn one_request_leads_a_fill_and_the_others_wake_when_it_ends() {
        let fills = Arc::new(Fills::default());
        let Fill::Leader(guard) = fills.join("k") else { panic!("the first request leads") };
        let Fill::Wait(rx) = fills.join("k") else { panic!("the second waits") };
        assert!(matches!(fills.join("other"), Fill::Leader(_)));
        let waiter = tokio::spawn(Fills::wait(rx, Duration::from_secs(60)));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken").unwrap();
        assert!(matches!(fills.join("k"), Fill::Leader(_)), "the key is free again");
    }
}
