//! Compiling components, with two caches keyed by the component's SHA-256: in memory
//! (a reload that keeps a plugin reuses its compiled code) and on disk (a restart
//! loads the artifact in milliseconds instead of compiling again). The disk key also
//! holds the engine's compatibility hash, so a new wasmtime or new engine settings
//! never load stale code.
//!
//! The memory cache holds at most [`MEMORY_CACHE_ENTRIES`] components and forgets the
//! least recently used one first: every deploy of a new plugin version adds an entry,
//! and without a bound the compiled code of every version ever deployed would stay in
//! memory for the life of the process. A build looks up every component it uses, so
//! those of the serving config are always the most recently used; a snapshot still
//! holding an evicted component keeps it alive until the snapshot is dropped.
//!
//! The disk cache is bounded too, at [`DISK_CACHE_BYTES`]: after writing an artifact
//! the oldest ones go first, "old" being the modification time, which every load
//! from the cache refreshes (so it is the time of last use).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::engine::engine;
use super::registry::PluginSource;

/// The default disk cache: `$XDG_CACHE_HOME/sluice` or `~/.cache/sluice`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("sluice"));
    }
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache").join("sluice"))
}

/// Most bytes of compiled plugins kept in the disk cache (an interpreter-based
/// component compiles to tens of MB; a Rust one to about a MB).
pub const DISK_CACHE_BYTES: u64 = 512 << 20;

/// How many compiled components the memory cache keeps.
pub const MEMORY_CACHE_ENTRIES: usize = 64;

fn memory() -> &'static Mutex<Lru<Component>> {
    static MEM: OnceLock<Mutex<Lru<Component>>> = OnceLock::new();
    MEM.get_or_init(|| Mutex::new(Lru::new(MEMORY_CACHE_ENTRIES)))
}

/// A map by content hash that keeps its `capacity` most recently used entries.
#[derive(Debug)]
struct Lru<V> {
    capacity: usize,
    clock: u64,
    entries: HashMap<[u8; 32], (V, u64)>,
}

impl<V: Clone> Lru<V> {
    fn new(capacity: usize) -> Self {
        Lru { capacity: capacity.max(1), clock: 0, entries: HashMap::new() }
    }

    fn get(&mut self, key: &[u8; 32]) -> Option<V> {
        self.clock += 1;
        let (v, used) = self.entries.get_mut(key)?;
        *used = self.clock;
        Some(v.clone())
    }

    fn insert(&mut self, key: [u8; 32], value: V) {
        self.clock += 1;
        self.entries.insert(key, (value, self.clock));
        while self.entries.len() > self.capacity {
            // A linear scan: the cache is small and this runs once per compile.
            let oldest = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k);
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => break,
            };
        }
    }
}

fn engine_key() -> String {
    let mut h = DefaultHasher::new();
    engine().precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compiles the component of `source`, using the caches; `cache_dir` `None` skips
/// disk.
pub fn load_component(source: PluginSource<'_>, cache_dir: Option<&Path>) -> Result<Component, String> {
    let wasm = source.read()?;
    let hash: [u8; 32] = Sha256::digest(&wasm).into();
    if let Some(c) = memory().lock().unwrap_or_else(|p| p.into_inner()).get(&hash) {
        return Ok(c);
    }
    let artifact = cache_dir.map(|d| d.join(format!("{}-{}.cwasm", hex(&hash), engine_key())));
    let component = match artifact.as_deref().and_then(load_artifact) {
        Some(c) => c,
        None => {
            let started = std::time::Instant::now();
            let c = Component::new(engine(), &wasm)
                .map_err(|e| super::compat::explain_compile_error(&wasm, &source, &e))?;
            tracing::info!(plugin = %source, took_ms = started.elapsed().as_millis() as u64, "compiled plugin");
            if let Some(a) = &artifact {
                store_artifact(&c, a);
            }
            c
        }
    };
    memory().lock().unwrap_or_else(|p| p.into_inner()).insert(hash, component.clone());
    Ok(component)
}

/// Loads a compiled artifact written by [`store_artifact`].
#[allow(unsafe_code)]
fn load_artifact(path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: `deserialize_file` trusts its input to be code this engine compiled.
    // The file is named by the SHA-256 of the source component and the engine's
    // compatibility hash, and is only ever written by `store_artifact` (atomically,
    // through a rename); the cache folder must not be writable by anyone the
    // gateway does not trust, like the plugins folder itself.
    match unsafe { Component::deserialize_file(engine(), path) } {
        Ok(c) => {
            // Used now: the disk cache's eviction keeps the recently used.
            let _ = std::fs::File::open(path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
            Some(c)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled plugin");
            None
        }
    }
}

fn store_artifact(component: &Component, path: &Path) {
    let result = (|| -> std::io::Result<()> {
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile_in(dir)?;
        tmp.1.write_all(&bytes)?;
        tmp.1.sync_all()?;
        std::fs::rename(&tmp.0, path)
    })();
    match result {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                prune(dir, path, DISK_CACHE_BYTES);
            }
        }
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot write the plugin compile cache"),
    }
}

/// Removes the least recently used artifacts of `dir` until they take at most
/// `limit` bytes; `keep` (the one just written) stays whatever its size.
fn prune(dir: &Path, keep: &Path, limit: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut artifacts: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let path = e.path();
            if path.extension()? != "cwasm" {
                return None;
            }
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    let mut total: u64 = artifacts.iter().map(|a| a.1).sum();
    artifacts.sort();
    for (_, len, path) in artifacts {
        if total <= limit {
            break;
        }
        if path != keep && std::fs::remove_file(&path).is_ok() {
            tracing::debug!(path = %path.display(), "removed a least recently used compiled plugin");
            total -= len;
        }
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = format!(".tmp-{}-{}", std::process::id(), fastrand::u64(..));
    let p = dir.join(name);
    let f = std::fs::OpenOptions::new().write(true).create_new(true).open(&p)?;
    Ok((p, f))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::{Lru, prune};

    #[test]
    fn the_disk_cache_drops_the_least_recently_used_artifacts_past_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, age_s: u64, len: usize| {
            let p = dir.path().join(name);
            std::fs::write(&p, vec![0u8; len]).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
            p
        };
        let oldest = at("a.cwasm", 300, 400);
        let old = at("b.cwasm", 200, 400);
        let recent = at("c.cwasm", 100, 400);
        let other = at("notes.txt", 900, 5000);
        let new = at("d.cwasm", 0, 400);
        // 1600 bytes of artifacts, 1000 allowed: the two oldest go.
        prune(dir.path(), &new, 1000);
        assert!(!oldest.exists() && !old.exists());
        assert!(recent.exists() && new.exists(), "the recently used stay");
        assert!(other.exists(), "only artifacts are the cache's to remove");
        // The one just written stays even when it alone is past the bound.
        prune(dir.path(), &new, 100);
        assert!(new.exists() && !recent.exists());
    }

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn the_memory_cache_keeps_the_most_recently_used_entries() {
        let mut lru = Lru::new(3);
        for n in 0..3 {
            lru.insert(key(n), n);
        }
        // Entry 0 is used again (a reload that keeps that plugin): 1 is now the oldest.
        assert_eq!(lru.get(&key(0)), Some(0));
        lru.insert(key(3), 3);
        assert_eq!(lru.entries.len(), 3);
        assert_eq!(lru.get(&key(1)), None, "the least recently used entry went");
        assert_eq!((lru.get(&key(0)), lru.get(&key(2)), lru.get(&key(3))), (Some(0), Some(2), Some(3)));
    }

    #[test]
    fn deploying_many_versions_does_not_grow_the_memory_cache() {
        // Every reload looks up the plugin that stays and compiles the new version of
        // the one that changes.
        let mut lru = Lru::new(4);
        lru.insert(key(255), 255);
        for version in 0..200u8 {
            assert_eq!(lru.get(&key(255)), Some(255), "the unchanged plugin is never recompiled");
            if lru.get(&key(version)).is_none() {
                lru.insert(key(version), version);
            }
            assert!(lru.entries.len() <= 4);
        }
    }
}
