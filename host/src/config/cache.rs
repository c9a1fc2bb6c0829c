//! Response caching: a route's `cache` block (what is stored and for how long) and the
//! process-wide `server.cache` block (where entries live and how much room they get).
//! Checked by [`validate_route_cache`] and [`validate_cache_store`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Problem;
use super::types::{ByteSize, ConfigDuration};

/// Default bound on the in-memory cache store.
pub const DEFAULT_CACHE_MAX_BYTES: ByteSize = ByteSize::mib(256);
/// Default largest response body a route stores.
pub const DEFAULT_CACHE_MAX_BODY: ByteSize = ByteSize::mib(1);
/// Default time a request waits for another request already fetching the same entry.
pub const DEFAULT_CACHE_LOCK_TIMEOUT: ConfigDuration = ConfigDuration::secs(5);
/// Default statuses a route stores: the ones RFC 9110 §15.1 calls heuristically
/// cacheable, less `206` (ranges are passed through, not stored).
pub const DEFAULT_CACHE_STATUSES: &[u16] = &[200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// A route's response cache: `cache: { ttl: 30s }`. Only `GET` and `HEAD` requests use
/// it (a `HEAD` is answered from a stored `GET`). It sits between the request phase
/// and the target: auth and rate limits run on every request, hits included, and the
/// response phase runs on hits as on misses. Responses are stored as the upstream sent
/// them and honour its `Cache-Control` (`no-store`, `private`, `no-cache`, `max-age`,
/// `s-maxage`, `must-revalidate`, `stale-while-revalidate`, `stale-if-error`),
/// `Expires`, `Vary`, `ETag` and `Last-Modified`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheConfig {
    /// How long a response stays fresh when the upstream gives no freshness of its own
    /// (no `max-age`, `s-maxage` or `Expires`). Default: such responses are not stored.
    #[serde(default)]
    pub ttl: Option<ConfigDuration>,
    /// Upper bound on any response's freshness, the upstream's included. Default `1d`.
    #[serde(default)]
    pub max_ttl: Option<ConfigDuration>,
    /// How long past its freshness a response may still be served while one request
    /// refreshes it in the background, when the upstream's `stale-while-revalidate`
    /// does not say. Default `0s`.
    #[serde(default)]
    pub stale_while_revalidate: Option<ConfigDuration>,
    /// How long past its freshness a response may still be served when the upstream
    /// fails (connection error, timeout, `5xx`), when the upstream's `stale-if-error`
    /// does not say. Default `0s`.
    #[serde(default)]
    pub stale_if_error: Option<ConfigDuration>,
    /// Statuses stored. Default `[200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]`.
    #[serde(default)]
    pub statuses: Option<Vec<u16>>,
    /// What besides the route, the upstream, the host and the path tells entries apart.
    #[serde(default)]
    pub key: CacheKeyConfig,
    /// Requests carrying `Authorization`: `skip` (default: never looked up or stored),
    /// `per_consumer` (stored apart for each consumer an auth plugin established; a
    /// request without a consumer skips the cache) or `shared` (one entry for everyone:
    /// only for content that is the same whoever asks).
    #[serde(default)]
    pub authorized: AuthorizedCaching,
    /// Store responses that carry `Set-Cookie` (the cookie is then replayed to every
    /// client the entry serves). Default `false`: such responses are never stored.
    #[serde(default)]
    pub cookies: bool,
    /// Largest body stored; a longer response is passed through and not stored.
    /// Default `1MiB`.
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    /// How long a request for an entry that another request is already fetching waits
    /// for it (request coalescing: a burst of misses makes one upstream call), before
    /// going to the upstream itself. Default `5s`.
    #[serde(default)]
    pub lock_timeout: Option<ConfigDuration>,
    /// Add `x-cache-status` to responses: `HIT`, `MISS`, `STALE`, `REVALIDATED`,
    /// `UPDATING` or `BYPASS`. Default `true`.
    #[serde(default = "yes")]
    pub status_header: bool,
}

fn yes() -> bool {
    true
}

/// The parts of a request a cache key takes beyond route, upstream, host and path.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheKeyConfig {
    /// Query parameters in the key: absent (default) takes the whole query string as
    /// sent; a list takes only those parameters (in a fixed order, so `?a=1&b=2` and
    /// `?b=2&a=1` share an entry); `[]` ignores the query.
    #[serde(default)]
    pub query: Option<Vec<String>>,
    /// Request headers in the key (case-insensitive names), for differences the
    /// upstream does not declare with `Vary`.
    #[serde(default)]
    pub headers: Vec<String>,
}

/// How a route's cache treats requests with `Authorization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizedCaching {
    /// Never looked up or stored.
    #[default]
    Skip,
    /// Stored apart for each consumer.
    PerConsumer,
    /// One entry for every client.
    Shared,
}

/// Where cached responses live (`server.cache`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheStoreConfig {
    /// `memory` (default): in the gateway's memory, least recently used entries
    /// evicted past `max_bytes`, kept across reloads, lost on restart. `redis`: the
    /// Redis server of `plugins.kv` (which must then use `backend: redis`), so replicas
    /// share entries; Redis's own eviction policy bounds it.
    #[serde(default)]
    pub backend: CacheBackendConfig,
    /// Bound on the in-memory store: bodies, headers and keys of every entry of every
    /// route together. Default `256MiB`. Only with `backend: memory`.
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
}

/// The store behind route caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheBackendConfig {
    /// In-process, LRU.
    #[default]
    Memory,
    /// The `plugins.kv` Redis server.
    Redis,
}

/// Problems of route `i`'s `cache` block.
pub fn validate_route_cache(c: &RouteCacheConfig, at: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(statuses) = &c.statuses {
        for (j, s) in statuses.iter().enumerate() {
            if !(200..=599).contains(s) {
                problems
                    .push(Problem::new(format!("{at}.statuses[{j}]"), format!("{s} is not a final status")));
            }
        }
    }
    if let Some(q) = &c.key.query {
        for (j, name) in q.iter().enumerate() {
            if name.is_empty() {
                problems.push(Problem::new(format!("{at}.key.query[{j}]"), "empty parameter name"));
            }
        }
    }
    for (j, h) in c.key.headers.iter().enumerate() {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            problems
                .push(Problem::new(format!("{at}.key.headers[{j}]"), format!("`{h}` is not a header name")));
        }
    }
    if c.ttl.is_some_and(|t| t.get().is_zero()) {
        problems.push(Problem::new(
            format!("{at}.ttl"),
            "must be longer than 0s (leave it out to store only responses that say how long they stay fresh)",
        ));
    }
    problems
}

/// Problems of `server.cache`, given whether `plugins.kv` is on Redis.
pub fn validate_cache_store(c: &CacheStoreConfig, kv_is_redis: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    if c.backend == CacheBackendConfig::Redis {
        if !kv_is_redis {
            problems.push(Problem::new(
                "server.cache.backend",
                "`redis` uses the Redis server of `plugins.kv`: set `plugins.kv.backend: redis` (and its `url`)",
            ));
        }
        if c.max_bytes.is_some() {
            problems.push(Problem::new("server.cache.max_bytes", "only applies to `backend: memory`"));
        }
    }
    problems
}
