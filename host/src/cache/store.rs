//! Where cached responses live: the process-wide in-memory store (sharded, least
//! recently used entries evicted past a byte bound, kept across reloads) or the
//! `plugins.kv` Redis server (entries encoded, expired by Redis).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hashlink::LinkedHashMap;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::policy::Lifetime;
use crate::plugins::host_api::KvStore;

/// The process's in-memory store.
static GLOBAL: OnceLock<Arc<MemoryStore>> = OnceLock::new();

/// Shards of the in-memory store (a lock each).
const SHARDS: usize = 16;
/// Bookkeeping counted per entry besides its key, headers and body.
const ENTRY_OVERHEAD: usize = 160;
/// Stored variants of one key (different `Vary` values); the oldest goes first.
pub const MAX_VARIANTS: usize = 8;

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    /// Its status.
    pub status: StatusCode,
    /// Its headers as the upstream sent them, hop-by-hop headers removed.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
    /// When it was received (wall clock, so Redis replicas agree).
    pub received: SystemTime,
    /// Its `Age` when it arrived.
    pub initial_age: Duration,
    /// How it ages.
    pub lifetime: Lifetime,
    /// The request headers it varies on, with the values the request that fetched it
    /// had.
    pub vary: Vec<(HeaderName, Option<String>)>,
}

impl Entry {
    /// Its current age (RFC 9111 §4.2.3, without the correction for response delay).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.received).unwrap_or(Duration::ZERO) + self.initial_age
    }

    /// Whether a request with these values of the entry's `Vary` headers may use it.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, stored)| *stored == super::policy::vary_value(request, name))
    }

    /// Whether it may be revalidated with a conditional request.
    pub fn has_validator(&self) -> bool {
        self.headers.contains_key(http::header::ETAG)
            || self.headers.contains_key(http::header::LAST_MODIFIED)
    }

    /// How long the store keeps it after it arrived: freshness, the stale windows,
    /// and with a validator a while longer so it can be revalidated instead of
    /// fetched anew.
    pub fn keep_for(&self) -> Duration {
        let l = &self.lifetime;
        let stale = l.stale_while_revalidate.max(l.stale_if_error);
        let revalidation =
            if self.has_validator() { l.fresh_for.max(Duration::from_secs(600)) } else { Duration::ZERO };
        (l.fresh_for + stale + revalidation).saturating_sub(self.initial_age).max(Duration::from_secs(1))
    }

    fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 16).sum();
        ENTRY_OVERHEAD + self.body.len() + headers
    }
}

/// The variants stored under one key, shared: a hit clones one `Arc`.
pub type Variants = Arc<[Arc<Entry>]>;

/// `variants` with `entry` in place of the variant it matches (same `Vary` values), or
/// added, keeping at most [`MAX_VARIANTS`].
pub fn with_variant(variants: Option<&Variants>, entry: Arc<Entry>) -> Variants {
    let mut out: Vec<Arc<Entry>> =
        variants.into_iter().flat_map(|v| v.iter()).filter(|v| v.vary != entry.vary).cloned().collect();
    out.push(entry);
    if out.len() > MAX_VARIANTS {
        out.remove(0);
    }
    out.into()
}

/// A cache store.
#[derive(Clone)]
pub enum Store {
    /// The process-wide in-memory store.
    Memory(Arc<MemoryStore>),
    /// The kv backend (Redis), keys under `cache\0`.
    Kv(Arc<dyn KvStore>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Memory(m) => f.debug_tuple("Memory").field(&m.used_bytes()).finish(),
            Store::Kv(_) => f.write_str("Kv"),
        }
    }
}

impl Store {
    /// The variants stored under `key`. A store that fails (Redis down) is a miss.
    pub async fn get(&self, key: &str) -> Option<Variants> {
        match self {
            Store::Memory(m) => m.get(key),
            Store::Kv(kv) => {
                let raw = kv.get(kv_key(key)).await.ok()??;
                decode(&raw)
            }
        }
    }

    /// Stores `variants` under `key` for `keep_for`. A failure (Redis down) is logged
    /// by the caller's absence of a hit later; nothing else depends on it.
    pub async fn put(&self, key: String, variants: Variants, keep_for: Duration) {
        match self {
            Store::Memory(m) => m.put(key, variants, keep_for),
            Store::Kv(kv) => {
                let encoded = encode(&variants);
                if let Err(e) = kv.set(kv_key(&key), encoded, Some(keep_for)).await {
                    tracing::debug!(error = ?e, "cache entry not stored in the kv backend");
                }
            }
        }
    }
}

fn kv_key(key: &str) -> String {
    format!("cache\0{key}")
}

#[derive(Default)]
struct Shard {
    slots: LinkedHashMap<String, Slot>,
    /// Bytes its slots hold.
    held: usize,
}

struct Slot {
    variants: Variants,
    expires: Instant,
    size: usize,
}

/// The in-memory store: sharded maps in least-recently-used order with a byte bound.
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    used: AtomicUsize,
    max_bytes: AtomicUsize,
}

impl MemoryStore {
    /// A store bounded at `max_bytes`.
    pub fn new(max_bytes: usize) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            used: AtomicUsize::new(0),
            max_bytes: AtomicUsize::new(max_bytes),
        }
    }

    /// The process's store, its bound set to `max_bytes` (the config's, on each load).
    pub fn global(max_bytes: usize) -> Arc<MemoryStore> {
        let store = GLOBAL.get_or_init(|| Arc::new(MemoryStore::new(max_bytes)));
        store.max_bytes.store(max_bytes, Ordering::Relaxed);
        Arc::clone(store)
    }

    /// The process's store, if a config has made it.
    pub fn existing() -> Option<&'static Arc<MemoryStore>> {
        GLOBAL.get()
    }

    /// Bytes held now.
    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let h = key
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        &self.shards[(h % SHARDS as u64) as usize]
    }

    fn get(&self, key: &str) -> Option<Variants> {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let slot = shard.slots.to_back(key)?;
        if slot.expires > Instant::now() {
            return Some(slot.variants.clone());
        }
        let gone = shard.slots.remove(key).map_or(0, |s| s.size);
        shard.held -= gone;
        self.used.fetch_sub(gone, Ordering::Relaxed);
        None
    }

    /// Drops every entry of route `route` (of one path, when given); returns how many
    /// keys went. Keys start `route NUL upstream NUL host NUL path NUL`.
    pub fn purge(&self, route: &str, path: Option<&str>) -> usize {
        let mut purged = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let doomed: Vec<String> = shard
                .slots
                .keys()
                .filter(|k| {
                    let mut parts = k.split('\0');
                    parts.next() == Some(route) && path.is_none_or(|p| parts.nth(2) == Some(p))
                })
                .cloned()
                .collect();
            for k in doomed {
                if let Some(slot) = shard.slots.remove(&k) {
                    shard.held -= slot.size;
                    self.used.fetch_sub(slot.size, Ordering::Relaxed);
                    purged += 1;
                }
            }
        }
        purged
    }

    /// Stores `variants` under `key` for `keep_for`, evicting the least recently used
    /// entries of its shard to make room; an entry larger than a shard's share of the
    /// bound is not stored.
    pub fn put(&self, key: String, variants: Variants, keep_for: Duration) {
        let size = key.len() + variants.iter().map(|e| e.size()).sum::<usize>();
        let max = self.max_bytes.load(Ordering::Relaxed);
        if size > max / SHARDS {
            return;
        }
        let shard_max = max / SHARDS;
        let mut shard = self.shard(&key).lock().unwrap_or_else(|p| p.into_inner());
        let mut freed = shard.slots.remove(&key).map_or(0, |old| old.size);
        shard.held -= freed;
        while shard.held + size > shard_max {
            let Some((_, evicted)) = shard.slots.pop_front() else { break };
            shard.held -= evicted.size;
            freed += evicted.size;
        }
        shard.slots.insert(key, Slot { variants, expires: Instant::now() + keep_for, size });
        shard.held += size;
        self.used.fetch_sub(freed, Ordering::Relaxed);
        self.used.fetch_add(size, Ordering::Relaxed);
    }
}

// The kv encoding: a version byte, the variant count, then each variant. Integers are
// little-endian; strings and bytes are prefixed with their u32 length.
const ENCODING: u8 = 1;

fn encode(variants: &[Arc<Entry>]) -> Vec<u8> {
    let mut out = vec![ENCODING, variants.len() as u8];
    for e in variants {
        put_u16(&mut out, e.status.as_u16());
        let received = e.received.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        for n in [
            received,
            e.initial_age.as_millis() as u64,
            e.lifetime.fresh_for.as_millis() as u64,
            e.lifetime.stale_while_revalidate.as_millis() as u64,
            e.lifetime.stale_if_error.as_millis() as u64,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(u8::from(e.lifetime.revalidate_always));
        put_u16(&mut out, e.vary.len() as u16);
        for (name, value) in &e.vary {
            put_bytes(&mut out, name.as_str().as_bytes());
            match value {
                Some(v) => {
                    out.push(1);
                    put_bytes(&mut out, v.as_bytes());
                }
                None => out.push(0),
            }
        }
        put_u16(&mut out, e.headers.len() as u16);
        for (name, value) in &e.headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &e.body);
    }
    out
}

fn put_u16(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }
}

/// The variants of an encoded value; `None` for anything malformed or of another
/// encoding version (a miss, never an error).
fn decode(raw: &[u8]) -> Option<Variants> {
    let mut r = Reader(raw);
    if r.u8()? != ENCODING {
        return None;
    }
    let count = r.u8()?;
    let mut variants = Vec::with_capacity(count.into());
    for _ in 0..count {
        let status = StatusCode::from_u16(r.u16()?).ok()?;
        let ms = |n: u64| Duration::from_millis(n);
        let received = UNIX_EPOCH + ms(r.u64()?);
        let initial_age = ms(r.u64()?);
        let fresh_for = ms(r.u64()?);
        let stale_while_revalidate = ms(r.u64()?);
        let stale_if_error = ms(r.u64()?);
        let revalidate_always = r.u8()? == 1;
        let mut vary = Vec::new();
        for _ in 0..r.u16()? {
            let name = HeaderName::from_bytes(r.bytes()?).ok()?;
            let value = match r.u8()? {
                1 => Some(String::from_utf8(r.bytes()?.to_vec()).ok()?),
                _ => None,
            };
            vary.push((name, value));
        }
        let mut headers = HeaderMap::new();
        for _ in 0..r.u16()? {
            let name = HeaderName::from_bytes(r.bytes()?).ok()?;
            let value = HeaderValue::from_bytes(r.bytes()?).ok()?;
            headers.append(name, value);
        }
        let body = Bytes::copy_from_slice(r.bytes()?);
        let lifetime = Lifetime { fresh_for, stale_while_revalidate, stale_if_error, revalidate_always };
        variants.push(Arc::new(Entry { status, headers, body, received, initial_age, lifetime, vary }));
    }
    r.0.is_empty().then(|| variants.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str, vary: Option<&str>) -> Arc<Entry> {
        let mut headers = HeaderMap::new();
        headers.insert("etag", HeaderValue::from_static("\"x\""));
        headers.append("x-many", HeaderValue::from_static("1"));
        headers.append("x-many", HeaderValue::from_static("2"));
        Arc::new(Entry {
            status: StatusCode::OK,
            headers,
            body: Bytes::from(body.to_owned()),
            received: UNIX_EPOCH + Duration::from_millis(1_764_000_000_123),
            initial_age: Duration::from_secs(3),
            lifetime: Lifetime {
                fresh_for: Duration::from_secs(60),
                stale_while_revalidate: Duration::from_secs(5),
                stale_if_error: Duration::ZERO,
                revalidate_always: true,
            },
            vary: vec![(http::header::ACCEPT, vary.map(str::to_owned))],
        })
    }

    #[test]
    fn the_kv_encoding_round_trips_and_refuses_damage() {
        let variants: Variants = vec![entry("one", Some("text/html")), entry("", None)].into();
        let raw = encode(&variants);
        let back = decode(&raw).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in variants.iter().zip(back.iter()) {
            assert_eq!(
                (a.status, &a.headers, &a.body, a.received),
                (b.status, &b.headers, &b.body, b.received)
            );
            assert_eq!((a.initial_age, a.lifetime, &a.vary), (b.initial_age, b.lifetime, &b.vary));
        }
        for cut in 0..raw.len() {
            assert!(decode(&raw[..cut]).is_none(), "a value cut at {cut} bytes decoded");
        }
        let mut other_version = raw.clone();
        other_version[0] = 2;
        assert!(decode(&other_version).is_none());
    }

    #[test]
    fn the_memory_store_evicts_the_least_recently_used_past_its_bound() {
        // One shard's share is 1/16 of the bound: keys landing in one shard compete.
        let store = MemoryStore::new(16 * 2_500);
        let keys: Vec<String> = (0..200)
            .map(|i| format!("k{i}"))
            .filter(|k| std::ptr::eq(store.shard(k), store.shard("k0")))
            .take(4)
            .collect();
        let body = "x".repeat(500);
        let long = Duration::from_secs(60);
        for k in &keys[..3] {
            store.put(k.clone(), vec![entry(&body, None)].into(), long);
        }
        assert!(store.get(&keys[0]).is_some(), "touched: now the most recent");
        store.put(keys[3].clone(), vec![entry(&body, None)].into(), long);
        assert!(store.get(&keys[1]).is_none(), "the least recently used went first");
        assert!(
            store.get(&keys[0]).is_some() && store.get(&keys[2]).is_some() && store.get(&keys[3]).is_some()
        );
        assert!(store.used_bytes() <= 2_500);
        // An entry larger than a shard's share is not stored at all.
        store.put("huge".into(), vec![entry(&"y".repeat(5_000), None)].into(), long);
        assert!(store.get("huge").is_none());
        store.put("short".into(), vec![entry("z", None)].into(), Duration::ZERO);
        assert!(store.get("short").is_none(), "expired entries are not served");
    }

    #[test]
    fn a_variant_replaces_the_one_with_its_vary_values() {
        let a = entry("a", Some("text/html"));
        let b = entry("b", Some("application/json"));
        let a2 = entry("a2", Some("text/html"));
        let v = with_variant(None, a);
        let v = with_variant(Some(&v), b);
        let v = with_variant(Some(&v), a2);
        let bodies: Vec<&[u8]> = v.iter().map(|e| &e.body[..]).collect();
        assert_eq!(bodies, [&b"b"[..], &b"a2"[..]]);
        let mut many: Variants = Arc::new([]);
        for i in 0..MAX_VARIANTS + 3 {
            many = with_variant(Some(&many), entry("v", Some(&i.to_string())));
        }
        assert_eq!(many.len(), MAX_VARIANTS);
        assert_eq!(many[0].vary[0].1.as_deref(), Some("3"));
    }
}
