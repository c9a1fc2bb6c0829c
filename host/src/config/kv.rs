//! The `plugins.kv` section: which backend serves the plugin `kv` API (the in-process
//! store or Redis) and how the gateway talks to Redis. Checked by [`validate_kv`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Problem;
use super::plugins::SecretSourceConfig;
use super::types::{ByteSize, ConfigDuration};

/// Default Redis URL of the `redis` backend.
pub const DEFAULT_KV_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Default time one kv call on Redis may take before it fails with `unavailable`.
pub const DEFAULT_KV_TIMEOUT: ConfigDuration = ConfigDuration::millis(50);
/// Default time one connection attempt to Redis (TCP, TLS, `AUTH`, `SELECT`) may take.
pub const DEFAULT_KV_CONNECT_TIMEOUT: ConfigDuration = ConfigDuration::secs(1);
/// Default prefix of every key the gateway writes to Redis.
pub const DEFAULT_KV_KEY_PREFIX: &str = "sluice:";
/// Default bound on the in-process store's size.
pub const DEFAULT_KV_MAX_BYTES: ByteSize = ByteSize::mib(64);

/// The store behind the plugin `kv` API, shared by every plugin granted `kv` (keys
/// are namespaced by plugin name, so plugins never see each other's keys).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvConfig {
    /// `in_process` (default): a store in the gateway's memory, shared by every
    /// route and kept across reloads, lost on restart. `redis`: a Redis server, so
    /// several gateway instances share one state (rate limits across replicas).
    #[serde(default)]
    pub backend: KvBackendConfig,
    /// Redis server: `redis://[user:password@]host:port/db`, or `rediss://…` for TLS
    /// (verified against the system roots). Default `redis://127.0.0.1:6379/0`.
    /// Only with `backend: redis`.
    #[serde(default)]
    pub url: Option<String>,
    /// The Redis password, read at load from an environment variable
    /// (`{ env: REDIS_PASSWORD }`) or a file (`{ file: redis.pass }`); it replaces a
    /// password written in `url`. Only with `backend: redis`.
    #[serde(default)]
    pub password: Option<SecretSourceConfig>,
    /// Longest time one kv call may take on Redis, waiting for a connection
    /// included; past it the plugin gets `unavailable` and decides (fail open or
    /// closed). Requests never hang on Redis. Default `50ms`. Only with `backend: redis`.
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Longest time one connection attempt to Redis may take. Connections are made
    /// in the background and remade when Redis comes back. Default `1s`. Only with
    /// `backend: redis`.
    #[serde(default)]
    pub connect_timeout: Option<ConfigDuration>,
    /// Prepended to every Redis key, so several gateways (or other applications)
    /// can share one Redis database. The key of a plugin's `k` is
    /// `PREFIX` + plugin name + a NUL byte + `k`. Default `sluice:`. Only with
    /// `backend: redis`.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// Bound on the in-process store's size: keys, values and 64 bytes of
    /// bookkeeping per entry, for every plugin together. A write past it fails with
    /// `unavailable` (the plugin decides: `rate-limit` follows its `on_error`), after
    /// the expired entries of the key's shard were dropped. Default `64MiB`. Only with
    /// `backend: in_process`.
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
}

/// A kv backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KvBackendConfig {
    /// In the gateway's memory.
    #[default]
    InProcess,
    /// A Redis server (or a Redis-compatible one, such as Valkey).
    Redis,
}

/// Problems of the `plugins.kv` section.
pub fn validate_kv(kv: &KvConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let at = |field: &str| format!("plugins.kv.{field}");
    match kv.backend {
        KvBackendConfig::InProcess => {
            let redis_only = [
                ("url", kv.url.is_some()),
                ("password", kv.password.is_some()),
                ("timeout", kv.timeout.is_some()),
                ("connect_timeout", kv.connect_timeout.is_some()),
                ("key_prefix", kv.key_prefix.is_some()),
            ];
            for (field, set) in redis_only {
                if set {
                    problems.push(Problem::new(
                        at(field),
                        format!(
                            "`{field}` is a setting of the redis backend: add `backend: redis` or remove it"
                        ),
                    ));
                }
            }
        }
        KvBackendConfig::Redis => {
            if kv.max_bytes.is_some() {
                problems.push(Problem::new(
                    at("max_bytes"),
                    "`max_bytes` bounds the in-process store: Redis has its own (`maxmemory`); remove it",
                ));
            }
            if let Some(url) = &kv.url
                && let Err(m) = check_redis_url(url)
            {
                problems.push(Problem::new(at("url"), m));
            }
            for (field, d) in [("timeout", kv.timeout), ("connect_timeout", kv.connect_timeout)] {
                if d.is_some_and(|d| d.get().is_zero()) {
                    problems.push(Problem::new(
                        at(field),
                        "must be longer than 0: give a duration like `50ms` or `1s`",
                    ));
                }
            }
        }
    }
    problems
}

/// Whether `url` is a Redis URL the client understands.
fn check_redis_url(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
        return Err(format!(
            "invalid redis url `{url}`: use `redis://host:port/db` (or `rediss://` for TLS)"
        ));
    }
    url.into_connection_info().map(drop).map_err(|e| format!("invalid redis url `{url}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(url: &str) -> KvConfig {
        KvConfig { backend: KvBackendConfig::Redis, url: Some(url.into()), ..KvConfig::default() }
    }

    #[test]
    fn redis_urls_are_checked() {
        assert!(validate_kv(&redis("redis://127.0.0.1:6379/0")).is_empty());
        assert!(validate_kv(&redis("rediss://cache.internal:6380")).is_empty());
        let p = validate_kv(&redis("http://127.0.0.1:6379"));
        assert_eq!(p[0].path, "plugins.kv.url");
        assert!(!validate_kv(&redis("redis://127.0.0.1:6379/notadb")).is_empty());
    }

    #[test]
    fn redis_settings_need_the_redis_backend() {
        let kv = KvConfig { key_prefix: Some("x:".into()), ..KvConfig::default() };
        let p = validate_kv(&kv);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].path, "plugins.kv.key_prefix");
    }

    #[test]
    fn max_bytes_bounds_the_in_process_store_only() {
        let kv = KvConfig { max_bytes: Some(ByteSize::mib(1)), ..KvConfig::default() };
        assert!(validate_kv(&kv).is_empty());
        let p = validate_kv(&KvConfig { max_bytes: Some(ByteSize::mib(1)), ..redis("redis://127.0.0.1/0") });
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].path, "plugins.kv.max_bytes");
    }
}
