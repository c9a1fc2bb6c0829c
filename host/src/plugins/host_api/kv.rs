//! `kv`: the plugin key-value store. Keys are namespaced by plugin name. The backend
//! is a [`KvStore`]: [`InProcessKv`] (the default, sharded maps with lazy TTL expiry)
//! or [`RedisKv`](super::kv_redis::RedisKv) (`plugins.kv.backend: redis`).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::plugins::bindings::sluice::plugin::kv::{Host, KvError};
use crate::plugins::state::PluginState;

/// Shards of the in-process store (fewer lock collisions between workers).
pub const KV_SHARDS: usize = 16;
/// Operations on a shard between sweeps of its expired keys.
pub const KV_SWEEP_EVERY: u32 = 1024;

/// A future returned by a [`KvStore`].
pub type KvFuture<'a, T> = BoxFuture<'a, Result<T, KvError>>;

/// A key-value backend. Keys arrive already namespaced by plugin.
pub trait KvStore: Send + Sync + 'static {
    /// The value of `key`, if present and not expired.
    fn get(&self, key: String) -> KvFuture<'_, Option<Vec<u8>>>;
    /// Stores `value`, expiring after `ttl` if given.
    fn set(&self, key: String, value: Vec<u8>, ttl: Option<Duration>) -> KvFuture<'_, ()>;
    /// Removes `key`; true if it was present.
    fn delete(&self, key: String) -> KvFuture<'_, bool>;
    /// Adds `delta` to the decimal integer at `key` (absent: 0); `ttl` applies when the
    /// key is created.
    fn increment(&self, key: String, delta: i64, ttl: Option<Duration>) -> KvFuture<'_, i64>;
    /// Replaces the value if it equals `expected` (`None`: absent).
    fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl: Option<Duration>,
    ) -> KvFuture<'_, bool>;
    /// The store as an [`InProcessKv`], when it is one: its operations never wait, so
    /// plugins using it can take the synchronous call path.
    fn in_process(&self) -> Option<&InProcessKv> {
        None
    }
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, Entry>,
    ops: u32,
}

impl Shard {
    /// The live entry of `key`, dropping it if expired; sweeps now and then.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        self.ops = self.ops.wrapping_add(1);
        if self.ops.is_multiple_of(KV_SWEEP_EVERY) {
            self.map.retain(|_, e| e.live(now));
        }
        if self.map.get(key).is_some_and(|e| !e.live(now)) {
            self.map.remove(key);
        }
        self.map.get_mut(key)
    }
}

/// The in-process store: shared by every instance and every snapshot of the process.
pub struct InProcessKv {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

impl Default for InProcessKv {
    fn default() -> Self {
        Self { shards: (0..KV_SHARDS).map(|_| Mutex::default()).collect(), hasher: RandomState::new() }
    }
}

impl InProcessKv {
    /// The process-wide store.
    pub fn global() -> Arc<InProcessKv> {
        static KV: OnceLock<Arc<InProcessKv>> = OnceLock::new();
        Arc::clone(KV.get_or_init(Default::default))
    }

    fn lock(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Shard, Instant) -> T) -> T {
        f(&mut self.lock(key), Instant::now())
    }
}

fn expiry(now: Instant, ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|t| now + t)
}

/// The store's operations, done at once: the synchronous call path uses them
/// directly, the [`KvStore`] impl wraps them in ready futures.
impl InProcessKv {
    /// The value of `key`, if present and not expired.
    pub fn get_now(&self, key: &str) -> Option<Vec<u8>> {
        self.with(key, |s, now| s.live(key, now).map(|e| e.value.clone()))
    }

    /// Stores `value` under `key`, expiring after `ttl` if given.
    pub fn set_now(&self, key: String, value: Vec<u8>, ttl: Option<Duration>) {
        let mut shard = self.lock(&key);
        shard.ops = shard.ops.wrapping_add(1);
        shard.map.insert(key, Entry { value, expires: expiry(Instant::now(), ttl) });
    }

    /// Removes `key`; true if it was present.
    pub fn delete_now(&self, key: &str) -> bool {
        self.with(key, |s, now| s.live(key, now).is_some() && s.map.remove(key).is_some())
    }

    /// Adds `delta` to the decimal integer at `key` (absent: 0); `ttl` applies when the
    /// key is created.
    pub fn increment_now(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        self.with(key, |s, now| match s.live(key, now) {
            Some(e) => {
                let n: i64 = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .ok_or(KvError::NotANumber)?;
                let n = n.saturating_add(delta);
                e.value.clear();
                // Writing a number into a Vec cannot fail.
                std::io::Write::write_fmt(&mut e.value, format_args!("{n}"))
                    .map_err(|_| KvError::NotANumber)?;
                Ok(n)
            }
            None => {
                let value = delta.to_string().into_bytes();
                s.map.insert(key.to_owned(), Entry { value, expires: expiry(now, ttl) });
                Ok(delta)
            }
        })
    }

    /// Replaces the value of `key` with `new` if it equals `expected` (`None`: absent).
    pub fn compare_and_swap_now(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl: Option<Duration>,
    ) -> bool {
        self.with(key, |s, now| {
            let current = s.live(key, now).map(|e| e.value.as_slice());
            if current != expected {
                return false;
            }
            s.map.insert(key.to_owned(), Entry { value: new, expires: expiry(now, ttl) });
            true
        })
    }
}

impl KvStore for InProcessKv {
    fn get(&self, key: String) -> KvFuture<'_, Option<Vec<u8>>> {
        let v = self.get_now(&key);
        Box::pin(async move { Ok(v) })
    }

    fn set(&self, key: String, value: Vec<u8>, ttl: Option<Duration>) -> KvFuture<'_, ()> {
        self.set_now(key, value, ttl);
        Box::pin(async { Ok(()) })
    }

    fn delete(&self, key: String) -> KvFuture<'_, bool> {
        let had = self.delete_now(&key);
        Box::pin(async move { Ok(had) })
    }

    fn increment(&self, key: String, delta: i64, ttl: Option<Duration>) -> KvFuture<'_, i64> {
        let r = self.increment_now(&key, delta, ttl);
        Box::pin(async move { r })
    }

    fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl: Option<Duration>,
    ) -> KvFuture<'_, bool> {
        let swapped = self.compare_and_swap_now(&key, expected.as_deref(), new, ttl);
        Box::pin(async move { Ok(swapped) })
    }

    fn in_process(&self) -> Option<&InProcessKv> {
        Some(self)
    }
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

fn denied() -> KvError {
    KvError::Unavailable("kv is not granted to this plugin".into())
}

impl PluginState {
    fn kv_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.env.plugin.len() + 1 + key.len());
        k.push_str(&self.env.plugin);
        k.push('\u{0}');
        k.push_str(key);
        k
    }
}

impl Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        let Some(kv) = self.env.grants.kv.clone() else { return Ok(Err(denied())) };
        Ok(self.wait_on(kv.get(self.kv_key(&key))).await)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), KvError>> {
        let Some(kv) = self.env.grants.kv.clone() else { return Ok(Err(denied())) };
        Ok(self.wait_on(kv.set(self.kv_key(&key), value, ttl(ttl_ms))).await)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, KvError>> {
        let Some(kv) = self.env.grants.kv.clone() else { return Ok(Err(denied())) };
        Ok(self.wait_on(kv.delete(self.kv_key(&key))).await)
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, KvError>> {
        let Some(kv) = self.env.grants.kv.clone() else { return Ok(Err(denied())) };
        Ok(self.wait_on(kv.increment(self.kv_key(&key), delta, ttl(ttl_ms))).await)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, KvError>> {
        let Some(kv) = self.env.grants.kv.clone() else { return Ok(Err(denied())) };
        Ok(self.wait_on(kv.compare_and_swap(self.kv_key(&key), expected, new, ttl(ttl_ms))).await)
    }
}

/// `kv` on the synchronous call path, which only plugins whose store is the
/// in-process one take (see [`super::sync_blocker`]).
mod sync_path {
    use super::{InProcessKv, KvError, PluginState, ttl};
    use crate::plugins::bindings::sync::sluice::plugin::kv::{Host, KvError as SyncKvError};

    fn to_sync(e: KvError) -> SyncKvError {
        match e {
            KvError::Unavailable(m) => SyncKvError::Unavailable(m),
            KvError::NotANumber => SyncKvError::NotANumber,
        }
    }

    impl PluginState {
        /// The in-process store and this plugin's key for `key`, or why there is none.
        fn in_process_kv(&self, key: &str) -> Result<(&InProcessKv, String), SyncKvError> {
            match self.env.grants.kv.as_deref() {
                None => Err(to_sync(super::denied())),
                Some(kv) => match kv.in_process() {
                    Some(kv) => Ok((kv, self.kv_key(key))),
                    None => Err(SyncKvError::Unavailable(
                        "this plugin's kv store needs the asynchronous call path".into(),
                    )),
                },
            }
        }
    }

    impl Host for PluginState {
        fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, SyncKvError>> {
            Ok(self.in_process_kv(&key).map(|(kv, k)| kv.get_now(&k)))
        }

        fn set(
            &mut self,
            key: String,
            value: Vec<u8>,
            ttl_ms: Option<u64>,
        ) -> wasmtime::Result<Result<(), SyncKvError>> {
            Ok(self.in_process_kv(&key).map(|(kv, k)| kv.set_now(k, value, ttl(ttl_ms))))
        }

        fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, SyncKvError>> {
            Ok(self.in_process_kv(&key).map(|(kv, k)| kv.delete_now(&k)))
        }

        fn increment(
            &mut self,
            key: String,
            delta: i64,
            ttl_ms: Option<u64>,
        ) -> wasmtime::Result<Result<i64, SyncKvError>> {
            Ok(self
                .in_process_kv(&key)
                .and_then(|(kv, k)| kv.increment_now(&k, delta, ttl(ttl_ms)).map_err(to_sync)))
        }

        fn compare_and_swap(
            &mut self,
            key: String,
            expected: Option<Vec<u8>>,
            new: Vec<u8>,
            ttl_ms: Option<u64>,
        ) -> wasmtime::Result<Result<bool, SyncKvError>> {
            Ok(self
                .in_process_kv(&key)
                .map(|(kv, k)| kv.compare_and_swap_now(&k, expected.as_deref(), new, ttl(ttl_ms))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn increments_sum_and_cas_and_ttl() {
        let kv = InProcessKv::default();
        assert_eq!(kv.increment("a".into(), 2, None).await.unwrap(), 2);
        assert_eq!(kv.increment("a".into(), 3, None).await.unwrap(), 5);
        assert!(kv.compare_and_swap("b".into(), None, b"x".to_vec(), None).await.unwrap());
        assert!(!kv.compare_and_swap("b".into(), None, b"y".to_vec(), None).await.unwrap());
        assert!(kv.compare_and_swap("b".into(), Some(b"x".to_vec()), b"y".to_vec(), None).await.unwrap());
        assert_eq!(kv.get("b".into()).await.unwrap(), Some(b"y".to_vec()));
        kv.set("n".into(), b"text".to_vec(), None).await.unwrap();
        assert!(matches!(kv.increment("n".into(), 1, None).await, Err(KvError::NotANumber)));
        kv.set("t".into(), b"1".to_vec(), Some(Duration::ZERO)).await.unwrap();
        assert_eq!(kv.get("t".into()).await.unwrap(), None);
        assert!(kv.delete("a".into()).await.unwrap());
        assert!(!kv.delete("a".into()).await.unwrap());
    }
}
