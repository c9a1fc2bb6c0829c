//! `kv`: the plugin key-value store. Keys are namespaced by plugin name. The backend
//! is a [`KvStore`]: [`InProcessKv`] (the default, sharded maps with lazy TTL expiry)
//! or [`RedisKv`](super::kv_redis::RedisKv) (`plugins.kv.backend: redis`).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::config::DEFAULT_KV_MAX_BYTES;
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

/// What an entry counts against [`InProcessKv`]'s bound: its key, its value and the
/// map's bookkeeping.
fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// Bytes of bookkeeping counted per entry (the map's slot, the key's and value's
/// headers).
pub const ENTRY_OVERHEAD: usize = 64;

#[derive(Default)]
struct Shard {
    map: HashMap<String, Entry>,
    ops: u32,
}

impl Shard {
    /// The live entry of `key`, dropping it if expired; sweeps now and then.
    fn live(&mut self, key: &str, now: Instant, used: &AtomicUsize) -> Option<&mut Entry> {
        self.ops = self.ops.wrapping_add(1);
        if self.ops.is_multiple_of(KV_SWEEP_EVERY) {
            self.sweep(now, used);
        }
        if self.map.get(key).is_some_and(|e| !e.live(now)) {
            self.remove(key, used);
        }
        self.map.get_mut(key)
    }

    /// Drops the expired entries.
    fn sweep(&mut self, now: Instant, used: &AtomicUsize) {
        let mut freed = 0;
        self.map.retain(|k, e| {
            let keep = e.live(now);
            if !keep {
                freed += cost(k, &e.value);
            }
            keep
        });
        used.fetch_sub(freed, Relaxed);
    }

    fn remove(&mut self, key: &str, used: &AtomicUsize) -> bool {
        match self.map.remove_entry(key) {
            Some((k, e)) => {
                used.fetch_sub(cost(&k, &e.value), Relaxed);
                true
            }
            None => false,
        }
    }
}

/// The in-process store: shared by every instance and every snapshot of the process,
/// and bounded (`plugins.kv.max_bytes`, the bound of the snapshot whose plugin
/// writes): a write past the bound fails with `unavailable`, after the shard's expired
/// entries were dropped.
pub struct InProcessKv {
    data: Arc<KvData>,
    /// The bound on the bytes held.
    cap: usize,
}

/// The entries of the in-process store.
struct KvData {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    /// Bytes held ([`cost`] of every entry, expired ones not yet dropped included).
    used: AtomicUsize,
}

impl Default for KvData {
    fn default() -> Self {
        Self {
            shards: (0..KV_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            used: AtomicUsize::new(0),
        }
    }
}

impl Default for InProcessKv {
    /// A store of its own (not the process-wide one), with the default bound.
    fn default() -> Self {
        Self { data: Arc::default(), cap: DEFAULT_KV_MAX_BYTES.0 as usize }
    }
}

impl InProcessKv {
    /// The process-wide store, bounded at `max_bytes`.
    pub fn global(max_bytes: usize) -> Arc<InProcessKv> {
        static DATA: OnceLock<Arc<KvData>> = OnceLock::new();
        Arc::new(InProcessKv { data: Arc::clone(DATA.get_or_init(Default::default)), cap: max_bytes })
    }

    /// Bytes held, expired entries not yet dropped included.
    pub fn used_bytes(&self) -> usize {
        self.data.used.load(Relaxed)
    }

    fn lock(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let shards = &self.data.shards;
        let i = (self.data.hasher.hash_one(key) as usize) % shards.len();
        shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Shard, Instant, &AtomicUsize) -> T) -> T {
        f(&mut self.lock(key), Instant::now(), &self.data.used)
    }

    /// Counts `grow` more bytes if the bound allows, after dropping `shard`'s expired
    /// entries when it does not at first.
    fn reserve(&self, shard: &mut Shard, now: Instant, grow: usize) -> Result<(), KvError> {
        let (cap, used) = (self.cap, &self.data.used);
        let take = |n: usize| n.checked_add(grow).filter(|n| *n <= cap);
        if used.fetch_update(Relaxed, Relaxed, take).is_ok() {
            return Ok(());
        }
        shard.sweep(now, used);
        used.fetch_update(Relaxed, Relaxed, take).map(drop).map_err(|_| {
            KvError::Unavailable(format!(
                "the in-process kv store is full (plugins.kv.max_bytes: {cap} bytes)"
            ))
        })
    }

    /// Puts `value` under `key` (replacing a live or expired entry), within the bound.
    fn put(
        &self,
        shard: &mut Shard,
        now: Instant,
        key: &str,
        value: Vec<u8>,
        expires: Option<Instant>,
    ) -> Result<(), KvError> {
        let new = cost(key, &value);
        let old = shard.map.get(key).map_or(0, |e| cost(key, &e.value));
        if new > old {
            self.reserve(shard, now, new - old)?;
        } else {
            self.data.used.fetch_sub(old - new, Relaxed);
        }
        let entry = Entry { value, expires };
        match shard.map.get_mut(key) {
            Some(e) => *e = entry,
            None => {
                shard.map.insert(key.to_owned(), entry);
            }
        }
        Ok(())
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
        self.with(key, |s, now, used| s.live(key, now, used).map(|e| e.value.clone()))
    }

    /// Stores `value` under `key`, expiring after `ttl` if given.
    pub fn set_now(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), KvError> {
        let mut shard = self.lock(key);
        shard.ops = shard.ops.wrapping_add(1);
        let now = Instant::now();
        self.put(&mut shard, now, key, value, expiry(now, ttl))
    }

    /// Removes `key`; true if it was present.
    pub fn delete_now(&self, key: &str) -> bool {
        self.with(key, |s, now, used| s.live(key, now, used).is_some() && s.remove(key, used))
    }

    /// Adds `delta` to the decimal integer at `key` (absent: 0); `ttl` applies when the
    /// key is created.
    pub fn increment_now(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        let mut shard = self.lock(key);
        let now = Instant::now();
        let (n, expires) = match shard.live(key, now, &self.data.used) {
            Some(e) => {
                let n: i64 = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .ok_or(KvError::NotANumber)?;
                (n.saturating_add(delta), e.expires)
            }
            None => (delta, expiry(now, ttl)),
        };
        self.put(&mut shard, now, key, n.to_string().into_bytes(), expires)?;
        Ok(n)
    }

    /// Replaces the value of `key` with `new` if it equals `expected` (`None`: absent).
    pub fn compare_and_swap_now(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        let mut shard = self.lock(key);
        let now = Instant::now();
        let current = shard.live(key, now, &self.data.used).map(|e| e.value.as_slice());
        if current != expected {
            return Ok(false);
        }
        self.put(&mut shard, now, key, new, expiry(now, ttl)).map(|()| true)
    }
}

impl KvStore for InProcessKv {
    fn get(&self, key: String) -> KvFuture<'_, Option<Vec<u8>>> {
        let v = self.get_now(&key);
        Box::pin(async move { Ok(v) })
    }

    fn set(&self, key: String, value: Vec<u8>, ttl: Option<Duration>) -> KvFuture<'_, ()> {
        let r = self.set_now(&key, value, ttl);
        Box::pin(async move { r })
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
        Box::pin(async move { swapped })
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
            Ok(self
                .in_process_kv(&key)
                .and_then(|(kv, k)| kv.set_now(&k, value, ttl(ttl_ms)).map_err(to_sync)))
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
            Ok(self.in_process_kv(&key).and_then(|(kv, k)| {
                kv.compare_and_swap_now(&k, expected.as_deref(), new, ttl(ttl_ms)).map_err(to_sync)
            }))
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

    #[test]
    fn the_store_is_bounded_and_what_leaves_it_is_given_back() {
        let kv = InProcessKv { data: Arc::default(), cap: 10 * (ENTRY_OVERHEAD + 8) };
        let full = |r: Result<(), KvError>| matches!(r, Err(KvError::Unavailable(m)) if m.contains("plugins.kv.max_bytes"));
        // Ten entries of 8 bytes (key + value) fill it; the eleventh is refused.
        for i in 0..10 {
            kv.set_now(&format!("k{i}"), b"123456".to_vec(), None).unwrap();
        }
        assert_eq!(kv.used_bytes(), 10 * (ENTRY_OVERHEAD + 8));
        assert!(full(kv.set_now("kx", b"123456".to_vec(), None)));
        assert!(matches!(kv.increment_now("n", 1, None), Err(KvError::Unavailable(_))));
        assert!(matches!(
            kv.compare_and_swap_now("c", None, b"x".to_vec(), None),
            Err(KvError::Unavailable(_))
        ));
        // Replacing a value with one as large fits; a larger one does not.
        kv.set_now("k0", b"abcdef".to_vec(), None).unwrap();
        assert!(full(kv.set_now("k0", b"abcdefg".to_vec(), None)));
        assert_eq!(kv.get_now("k0"), Some(b"abcdef".to_vec()), "a refused write changes nothing");
        // A delete gives its bytes back.
        assert!(kv.delete_now("k1"));
        kv.set_now("kx", b"123456".to_vec(), None).unwrap();
        // Expired entries are dropped to make room (their shard's, at once; the others'
        // on their next sweep, or when read).
        for i in 0..10 {
            kv.set_now(&format!("k{i}"), b"123456".to_vec(), Some(Duration::ZERO)).unwrap_or(());
        }
        for i in 0..10 {
            assert_eq!(kv.get_now(&format!("k{i}")), None);
        }
        kv.set_now("fresh", b"1234".to_vec(), None).unwrap();
        assert!(kv.delete_now("fresh") && kv.delete_now("kx"));
        assert_eq!(kv.used_bytes(), 0, "every byte was given back");
    }
}
