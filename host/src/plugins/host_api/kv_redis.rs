//! [`RedisKv`]: the plugin kv store on a Redis server, so several gateway instances
//! share one state (rate limits across replicas).
//!
//! Recipe: [`RedisKv::open`] once per config generation (cheap, never connects and
//! needs no runtime) → hand it to plugins granted `kv` → every call runs one atomic
//! Redis command or Lua script under the configured timeout.
//!
//! - **Atomic**: `get`/`set`/`delete` are single commands; `increment` and
//!   `compare-and-swap` are Lua scripts (`EVALSHA`, reloaded after a Redis restart), so
//!   concurrent gateways never lose an update.
//! - **Never hangs**: every call, waiting for a connection included, is decided within
//!   `plugins.kv.timeout`; otherwise the plugin gets `unavailable` and applies its own
//!   policy (fail open or closed).
//! - **Reconnects**: one multiplexed connection per server ([`ConnectionManager`]),
//!   reopened in the background after an error, so calls succeed again once Redis is back.
//! - **One connection across reloads**: connections are shared per (URL, password)
//!   through a table of weak references, so a reload with unchanged settings reuses the
//!   live connection, and a connection is closed when the last snapshot using it goes.

use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};
use tokio::runtime::{Handle, Id as RuntimeId};

use super::kv::{KvFuture, KvStore};
use crate::plugins::bindings::sluice::plugin::kv::KvError;

/// Connection attempts made in a row (after the first) before a reconnect gives up
/// until the next call.
const RECONNECT_RETRIES: usize = 2;
/// First delay between reconnect attempts.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// Longest delay between reconnect attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
/// Largest TTL sent to Redis (about 142 000 years): a larger one overflows `PX`.
const MAX_TTL_MS: u64 = 1 << 52;

/// `increment`: INCRBY, and set the expiry only when this call created the key.
/// KEYS[1] key; ARGV[1] delta; ARGV[2] TTL in ms or "" for none.
const INCREMENT_LUA: &str = r"
local created = redis.call('EXISTS', KEYS[1]) == 0
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and ARGV[2] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return n
";

/// `compare-and-swap`: compare the current value (or its absence), then SET.
/// KEYS[1] key; ARGV[1] "1" if a value is expected, "0" for absent; ARGV[2] the
/// expected value; ARGV[3] the new value; ARGV[4] TTL in ms or "" for none (a TTL of
/// 0 stores a value that is already expired: the key is removed).
const CAS_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
elseif ARGV[4] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
";

static INCREMENT: LazyLock<Script> = LazyLock::new(|| Script::new(INCREMENT_LUA));
static CAS: LazyLock<Script> = LazyLock::new(|| Script::new(CAS_LUA));

/// Settings of a [`RedisKv`] (from `plugins.kv`, defaults applied, password read).
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://…` or `rediss://…`.
    pub url: String,
    /// Replaces the URL's password when set.
    pub password: Option<String>,
    /// Longest time one kv call may take.
    pub timeout: Duration,
    /// Longest time one connection attempt may take.
    pub connect_timeout: Duration,
    /// Prepended to every key.
    pub key_prefix: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// The kv store on Redis. Cheap to open; shares its connection with every other
/// `RedisKv` of the process that has the same URL, password and connect timeout.
pub struct RedisKv {
    conn: Arc<RedisConn>,
    timeout: Duration,
    prefix: String,
}

impl std::fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKv").field("timeout", &self.timeout).field("prefix", &self.prefix).finish()
    }
}

/// What identifies a shared connection.
#[derive(Clone, PartialEq, Eq)]
struct ConnKey {
    url: String,
    password: Option<String>,
    connect_timeout: Duration,
}

/// One Redis server's connection, made on first use in the runtime of the caller.
struct RedisConn {
    client: redis::Client,
    connect_timeout: Duration,
    /// The manager and the runtime that drives it (a manager is bound to a runtime).
    manager: ArcSwapOption<(RuntimeId, ConnectionManager)>,
    /// Serialises making a manager.
    making: Mutex<()>,
}

/// Live connections of the process, by settings; dead entries are pruned on open.
static CONNECTIONS: Mutex<Vec<(ConnKey, Weak<RedisConn>)>> = Mutex::new(Vec::new());

impl RedisKv {
    /// A store with `settings`, reusing a live connection with the same URL, password
    /// and connect timeout. Never connects: the first call does. Fails only on a URL
    /// the client cannot parse.
    pub fn open(settings: &RedisSettings) -> Result<RedisKv, String> {
        let key = ConnKey {
            url: settings.url.clone(),
            password: settings.password.clone(),
            connect_timeout: settings.connect_timeout,
        };
        let mut table = CONNECTIONS.lock().unwrap_or_else(|p| p.into_inner());
        table.retain(|(_, w)| w.strong_count() > 0);
        let conn = match table.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
            Some(conn) => conn,
            None => {
                let conn = Arc::new(RedisConn::new(&key)?);
                table.push((key, Arc::downgrade(&conn)));
                conn
            }
        };
        Ok(RedisKv { conn, timeout: settings.timeout, prefix: settings.key_prefix.clone() })
    }

    /// Whether `self` and `other` share one connection.
    pub fn shares_connection_with(&self, other: &RedisKv) -> bool {
        Arc::ptr_eq(&self.conn, &other.conn)
    }

    /// Live Redis connections (shared ones counted once) in this process.
    pub fn live_connections() -> usize {
        let table = CONNECTIONS.lock().unwrap_or_else(|p| p.into_inner());
        table.iter().filter(|(_, w)| w.strong_count() > 0).count()
    }

    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    /// Runs `op` on the connection, decided within the timeout.
    fn call<'a, T, F, Fut>(&'a self, what: &'static str, op: F) -> KvFuture<'a, T>
    where
        T: Send + 'a,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'a,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'a,
    {
        Box::pin(async move {
            let manager = self.conn.manager()?;
            match tokio::time::timeout(self.timeout, op(manager)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(kv_error(what, &e)),
                Err(_) => Err(KvError::Unavailable(format!(
                    "redis did not answer {what} within {}ms",
                    self.timeout.as_millis()
                ))),
            }
        })
    }
}

impl RedisConn {
    fn new(key: &ConnKey) -> Result<RedisConn, String> {
        let mut info =
            key.url.as_str().into_connection_info().map_err(|e| format!("invalid redis url: {e}"))?;
        if let Some(pw) = &key.password {
            let redis = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info).map_err(|e| format!("invalid redis url: {e}"))?;
        Ok(RedisConn {
            client,
            connect_timeout: key.connect_timeout,
            manager: ArcSwapOption::empty(),
            making: Mutex::new(()),
        })
    }

    /// The connection manager of the current runtime, made (lazily, without waiting
    /// for the server) on first use.
    fn manager(&self) -> Result<ConnectionManager, KvError> {
        let rt = Handle::try_current()
            .map_err(|_| KvError::Unavailable("redis kv used outside the async runtime".into()))?
            .id();
        if let Some(m) = &*self.manager.load()
            && m.0 == rt
        {
            return Ok(m.1.clone());
        }
        let _making = self.making.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = &*self.manager.load()
            && m.0 == rt
        {
            return Ok(m.1.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None)
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| KvError::Unavailable(format!("redis: {e}")))?;
        // Connect in the background, so the first calls need not drive the handshake.
        let mut warm = manager.clone();
        tokio::spawn(async move {
            let _ = redis::cmd("PING").query_async::<()>(&mut warm).await;
        });
        self.manager.store(Some(Arc::new((rt, manager.clone()))));
        Ok(manager)
    }
}

/// Maps a Redis error to the plugin's error.
fn kv_error(what: &str, e: &redis::RedisError) -> KvError {
    let detail = e.detail().unwrap_or_default();
    if detail.contains("not an integer") || detail.contains("overflow") {
        return KvError::NotANumber;
    }
    KvError::Unavailable(format!("redis {what} failed: {e}"))
}

/// A TTL as `PX` milliseconds ("" for none).
fn ttl_arg(ttl: Option<Duration>) -> String {
    ttl.map(|t| (t.as_millis().min(u128::from(MAX_TTL_MS)) as u64).to_string()).unwrap_or_default()
}

impl KvStore for RedisKv {
    fn get(&self, key: String) -> KvFuture<'_, Option<Vec<u8>>> {
        let key = self.key(&key);
        self.call("get", move |mut c| async move {
            redis::cmd("GET").arg(&key).query_async::<Option<Vec<u8>>>(&mut c).await
        })
    }

    fn set(&self, key: String, value: Vec<u8>, ttl: Option<Duration>) -> KvFuture<'_, ()> {
        let key = self.key(&key);
        let ttl = ttl_arg(ttl);
        self.call("set", move |mut c| async move {
            let mut cmd;
            if ttl == "0" {
                // Stored already expired: gone.
                cmd = redis::cmd("DEL");
                cmd.arg(&key);
            } else {
                cmd = redis::cmd("SET");
                cmd.arg(&key).arg(&value);
                if !ttl.is_empty() {
                    cmd.arg("PX").arg(&ttl);
                }
            }
            cmd.query_async::<redis::Value>(&mut c).await.map(drop)
        })
    }

    fn delete(&self, key: String) -> KvFuture<'_, bool> {
        let key = self.key(&key);
        self.call("delete", move |mut c| async move {
            redis::cmd("DEL").arg(&key).query_async::<i64>(&mut c).await.map(|n| n > 0)
        })
    }

    fn increment(&self, key: String, delta: i64, ttl: Option<Duration>) -> KvFuture<'_, i64> {
        let key = self.key(&key);
        let ttl = ttl_arg(ttl);
        self.call("increment", move |mut c| async move {
            INCREMENT.key(&key).arg(delta).arg(&ttl).invoke_async::<i64>(&mut c).await
        })
    }

    fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl: Option<Duration>,
    ) -> KvFuture<'_, bool> {
        let key = self.key(&key);
        let ttl = ttl_arg(ttl);
        self.call("compare-and-swap", move |mut c| async move {
            let (has, expected) = match expected {
                Some(v) => ("1", v),
                None => ("0", Vec::new()),
            };
            CAS.key(&key)
                .arg(has)
                .arg(expected)
                .arg(new)
                .arg(&ttl)
                .invoke_async::<i64>(&mut c)
                .await
                .map(|n| n == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            password: None,
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            key_prefix: "t:".into(),
        }
    }

    #[test]
    fn stores_with_the_same_settings_share_one_connection() {
        let a = RedisKv::open(&settings("redis://127.0.0.1:1/0")).unwrap();
        let b = RedisKv::open(&RedisSettings {
            key_prefix: "other:".into(),
            ..settings("redis://127.0.0.1:1/0")
        })
        .unwrap();
        let c = RedisKv::open(&settings("redis://127.0.0.1:1/1")).unwrap();
        assert!(a.shares_connection_with(&b), "only the prefix differs");
        assert!(!a.shares_connection_with(&c), "another database");
        drop((a, b));
        let d = RedisKv::open(&settings("redis://127.0.0.1:1/0")).unwrap();
        assert!(!d.shares_connection_with(&c));
    }

    #[test]
    fn ttls_are_sent_as_milliseconds() {
        assert_eq!(ttl_arg(None), "");
        assert_eq!(ttl_arg(Some(Duration::from_millis(1500))), "1500");
        assert_eq!(ttl_arg(Some(Duration::MAX)), MAX_TTL_MS.to_string());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_within_the_timeout() {
        // Port 1 on loopback: nothing listens there, the connection is refused.
        let kv = RedisKv::open(&settings("redis://127.0.0.1:1/0")).unwrap();
        for _ in 0..3 {
            match kv.increment("k".into(), 1, None).await {
                Err(KvError::Unavailable(m)) => assert!(m.contains("redis"), "{m}"),
                other => panic!("expected unavailable, got {other:?}"),
            }
        }
    }
}
