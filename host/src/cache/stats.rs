//! Counters of the route caches: what each route's cache did, by outcome, and the
//! in-memory store's size. One [`CacheCounters`] per route name for the process, so
//! the numbers survive reloads; lock-free on the request path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use super::Outcome;
use crate::observability::prom::Exposition;

/// Every outcome, in the order of the counters.
const OUTCOMES: [Outcome; 5] =
    [Outcome::Hit, Outcome::Miss, Outcome::Stale, Outcome::Revalidated, Outcome::Bypass];

/// A route cache's counters.
#[derive(Debug, Default)]
pub struct CacheCounters([AtomicU64; OUTCOMES.len()]);

impl CacheCounters {
    /// The counters of route `route`'s cache.
    pub fn of(route: &str) -> Arc<CacheCounters> {
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(reg.entry(route.to_owned()).or_default())
    }

    /// Counts one request's outcome.
    pub fn count(&self, outcome: Outcome) {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.0[i].fetch_add(1, Relaxed);
    }

    /// The count of `outcome`.
    pub fn get(&self, outcome: Outcome) -> u64 {
        OUTCOMES.iter().position(|o| *o == outcome).map_or(0, |i| self.0[i].load(Relaxed))
    }
}

fn registry() -> &'static Mutex<HashMap<String, Arc<CacheCounters>>> {
    static REG: OnceLock<Mutex<HashMap<String, Arc<CacheCounters>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// `sluice_cache_responses_total{route, status}` and the in-memory store's size, when
/// any route has had a cache.
pub fn write_prometheus(out: &mut Exposition, memory_bytes: Option<usize>) {
    let mut all: Vec<(String, Arc<CacheCounters>)> = {
        let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        reg.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
    };
    if all.is_empty() {
        return;
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    out.family(
        "sluice_cache_responses_total",
        "counter",
        "Requests to routes with a cache, by what the cache did (HIT, MISS, STALE, REVALIDATED, BYPASS).",
    );
    for (route, c) in &all {
        for o in OUTCOMES {
            out.sample(
                "sluice_cache_responses_total",
                &[("route", route), ("status", o.as_str())],
                c.get(o) as f64,
            );
        }
    }
    if let Some(bytes) = memory_bytes {
        out.family("sluice_cache_memory_bytes", "gauge", "Bytes held by the in-memory cache store.");
        out.sample("sluice_cache_memory_bytes", &[], bytes as f64);
    }
}
