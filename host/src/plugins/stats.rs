//! Per-plugin metrics: calls per phase, errors by kind, a latency histogram, and the
//! counters and histograms plugins define themselves. One [`PluginStats`] per plugin
//! name for the whole process, so numbers survive reloads; lock-free on the hot path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::error::{Phase, PluginErrorKind};
use super::pool::Made;
use crate::observability::metrics::{Histogram, KeyedCounts};
use crate::observability::prom::Exposition;

/// Upper bounds (ns) of the call latency histogram's buckets: 1 µs to 100 ms.
pub static LATENCY_BOUNDS_NS: [u64; 14] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
];

/// A plugin-defined histogram: count and sum.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CustomHistogram {
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

/// The metrics of one plugin.
#[derive(Debug)]
pub struct PluginStats {
    calls: [AtomicU64; Phase::COUNT],
    errors: [AtomicU64; PluginErrorKind::LABELS.len()],
    /// Call latency (every phase).
    pub latency: Histogram<14>,
    /// Requests the plugin answered itself, by status code.
    answers: KeyedCounts,
    counters: Mutex<HashMap<String, u64>>,
    /// Labeled counter series: (name, labels) → value.
    labeled: Mutex<HashMap<(String, Labels), u64>>,
    /// New labeled series refused because the plugin had [`MAX_LABELED_SERIES`].
    dropped_series: AtomicU64,
    histograms: Mutex<HashMap<String, CustomHistogram>>,
    /// Phase calls made on the asynchronous path (on a fiber).
    async_calls: AtomicU64,
    yields: AtomicU64,
    /// Instances made, by [`Made`].
    made: [AtomicU64; 2],
    /// Checkouts that found every instance in use and waited.
    checkout_waits: AtomicU64,
}

impl Default for PluginStats {
    fn default() -> Self {
        Self {
            calls: Default::default(),
            errors: Default::default(),
            latency: Histogram::new(&LATENCY_BOUNDS_NS),
            answers: KeyedCounts::default(),
            counters: Mutex::default(),
            labeled: Mutex::default(),
            dropped_series: AtomicU64::default(),
            histograms: Mutex::default(),
            async_calls: AtomicU64::default(),
            yields: AtomicU64::default(),
            made: Default::default(),
            checkout_waits: AtomicU64::default(),
        }
    }
}

/// A plugin-defined series' labels, as the plugin gave them.
pub type Labels = Vec<(String, String)>;

/// Most series of each kind (counters, labeled counter series, histograms) one
/// plugin may create (a cardinality guard).
pub const MAX_LABELED_SERIES: usize = 1000;
/// Longest series key (name, label names and values), in bytes.
pub const MAX_SERIES_KEY: usize = 256;

/// A valid label name that does not clash with the labels the gateway sets.
fn valid_label(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name != "plugin"
        && name != "name"
}

impl PluginStats {
    /// Counts a call of `phase` that took `took`.
    pub fn record_call(&self, phase: Phase, took: Duration) {
        self.calls[phase as usize].fetch_add(1, Relaxed);
        self.latency.record(took);
    }

    /// Counts a request the plugin answered itself (a rate limit's 429, an auth's
    /// 401, a static answer).
    pub fn record_answer(&self, status: http::StatusCode) {
        self.answers.add(status.as_u16());
    }

    /// Requests answered so far, by status code.
    pub fn answers(&self) -> Vec<(u16, u64)> {
        self.answers.read().0
    }

    /// Counts a phase call made on the asynchronous path.
    pub fn record_async_call(&self) {
        self.async_calls.fetch_add(1, Relaxed);
    }

    /// Phase calls made on the asynchronous path so far (`configure` and `info`
    /// included).
    pub fn async_calls(&self) -> u64 {
        self.async_calls.load(Relaxed)
    }

    /// Counts a long call yielding its worker thread to other requests (see
    /// [`super::deadline`]).
    pub fn record_yield(&self) {
        self.yields.fetch_add(1, Relaxed);
    }

    /// Times long calls yielded to other requests so far.
    pub fn yields(&self) -> u64 {
        self.yields.load(Relaxed)
    }

    /// Counts an instance made at load or on the request path.
    pub fn record_made(&self, at: Made) {
        self.made[at as usize].fetch_add(1, Relaxed);
    }

    /// Instances made so far at load or on the request path.
    pub fn made(&self, at: Made) -> u64 {
        self.made[at as usize].load(Relaxed)
    }

    /// Counts a checkout that had to wait for an instance.
    pub fn record_checkout_wait(&self) {
        self.checkout_waits.fetch_add(1, Relaxed);
    }

    /// Checkouts that waited so far.
    pub fn checkout_waits(&self) -> u64 {
        self.checkout_waits.load(Relaxed)
    }

    /// Counts a fault.
    pub fn record_error(&self, kind: &PluginErrorKind) {
        self.errors[kind.index()].fetch_add(1, Relaxed);
    }

    /// Calls of `phase` so far.
    pub fn calls(&self, phase: Phase) -> u64 {
        self.calls[phase as usize].load(Relaxed)
    }

    /// Faults so far, by kind label.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        PluginErrorKind::LABELS.iter().zip(&self.errors).map(|(l, n)| (*l, n.load(Relaxed))).collect()
    }

    /// Faults of one kind label (`trap`, `deadline`, `memory`, …).
    pub fn errors_of(&self, label: &str) -> u64 {
        self.errors().into_iter().find(|(l, _)| *l == label).map_or(0, |(_, n)| n)
    }

    /// Whether a new series with a key of `key_bytes` may join `series` existing
    /// ones; a refused one is counted as dropped.
    fn admits(&self, series: usize, key_bytes: usize) -> bool {
        let ok = series < MAX_LABELED_SERIES && key_bytes <= MAX_SERIES_KEY;
        if !ok {
            self.dropped_series.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Adds to a plugin-defined counter. Past [`MAX_LABELED_SERIES`] counters (or
    /// with a name longer than [`MAX_SERIES_KEY`]) new ones are dropped and counted.
    pub fn custom_counter_add(&self, name: &str, value: u64) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = c.get_mut(name) {
            *v = v.saturating_add(value);
        } else if self.admits(c.len(), name.len()) {
            c.insert(name.to_owned(), value);
        }
    }

    /// Adds to one labeled series of a plugin-defined counter. Invalid label names
    /// are ignored; past [`MAX_LABELED_SERIES`] new series are dropped and counted.
    pub fn custom_counter_add_labeled(&self, name: &str, labels: &[(String, String)], value: u64) {
        if !labels.iter().all(|(k, _)| valid_label(k)) {
            return;
        }
        let mut c = self.labeled.lock().unwrap_or_else(|p| p.into_inner());
        let key = (name.to_owned(), labels.to_vec());
        let key_bytes = name.len() + labels.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if let Some(v) = c.get_mut(&key) {
            *v = v.saturating_add(value);
        } else if self.admits(c.len(), key_bytes) {
            c.insert(key, value);
        }
    }

    /// The labeled counter series: ((name, labels), value).
    pub fn custom_labeled(&self) -> Vec<((String, Labels), u64)> {
        let c = self.labeled.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = c.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }

    /// Records into a plugin-defined histogram.
    /// Past [`MAX_LABELED_SERIES`] histograms (or with a name longer than
    /// [`MAX_SERIES_KEY`]) new ones are dropped and counted.
    pub fn custom_histogram_record(&self, name: &str, value: f64) {
        let mut h = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = h.get_mut(name) {
            e.count += 1;
            e.sum += value;
        } else if self.admits(h.len(), name.len()) {
            h.insert(name.to_owned(), CustomHistogram { count: 1, sum: value });
        }
    }

    /// The plugin-defined counters.
    pub fn custom_counters(&self) -> HashMap<String, u64> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The plugin-defined histograms.
    pub fn custom_histograms(&self) -> HashMap<String, CustomHistogram> {
        self.histograms.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The stats of `plugin`, created on first use.
pub fn stats_for(plugin: &str) -> Arc<PluginStats> {
    let mut all = registry().lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(all.entry(plugin.to_owned()).or_default())
}

/// Every plugin's stats, by name (for the admin API and metrics export).
pub fn all_stats() -> Vec<(String, Arc<PluginStats>)> {
    let all = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<_> = all.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Writes every plugin's metrics: calls by phase, errors by kind, call latency,
/// requests answered, and the plugin-defined counters.
pub fn write_prometheus(out: &mut Exposition) {
    let all = all_stats();
    if all.is_empty() {
        return;
    }
    let phases = [Phase::Configure, Phase::Request, Phase::Response, Phase::ResponseChunk];
    out.family("sluice_plugin_calls_total", "counter", "Plugin calls by phase.");
    for (name, s) in &all {
        for p in phases {
            let phase = p.to_string();
            out.sample(
                "sluice_plugin_calls_total",
                &[("plugin", name), ("phase", &phase)],
                s.calls(p) as f64,
            );
        }
    }
    per_plugin(
        out,
        &all,
        "sluice_plugin_async_calls_total",
        "Plugin calls made on the asynchronous path (on a fiber: plugins that may wait).",
        PluginStats::async_calls,
    );
    per_plugin(
        out,
        &all,
        "sluice_plugin_yields_total",
        "Times a long plugin call yielded its worker thread to other requests (every tick it ran past the first).",
        PluginStats::yields,
    );
    out.family(
        "sluice_plugin_instances_made_total",
        "counter",
        "Plugin instances instantiated and configured, at load or on the request path (a call found none idle).",
    );
    for (name, s) in &all {
        for (at, label) in [(Made::Load, "load"), (Made::Request, "request")] {
            out.sample(
                "sluice_plugin_instances_made_total",
                &[("plugin", name), ("at", label)],
                s.made(at) as f64,
            );
        }
    }
    per_plugin(
        out,
        &all,
        "sluice_plugin_checkout_waits_total",
        "Calls that found every instance of their entry in use (limits.max_instances) and waited for one.",
        PluginStats::checkout_waits,
    );
    out.family("sluice_plugin_errors_total", "counter", "Plugin faults by kind.");
    for (name, s) in &all {
        for (kind, n) in s.errors() {
            out.sample("sluice_plugin_errors_total", &[("plugin", name), ("kind", kind)], n as f64);
        }
    }
    out.family(
        "sluice_plugin_responses_total",
        "counter",
        "Requests a plugin answered itself instead of passing them on (a rate limit's 429, an authentication's 401), by status code.",
    );
    for (name, s) in &all {
        for (code, n) in s.answers() {
            let code = code.to_string();
            out.sample("sluice_plugin_responses_total", &[("plugin", name), ("code", &code)], n as f64);
        }
    }
    out.family("sluice_plugin_call_duration_seconds", "histogram", "Time spent in plugin calls.");
    for (name, s) in &all {
        out.histogram("sluice_plugin_call_duration_seconds", &[("plugin", name)], &s.latency.read());
    }
    out.family("sluice_plugin_custom_total", "counter", "Counters defined by plugins.");
    for (name, s) in &all {
        let mut counters: Vec<_> = s.custom_counters().into_iter().collect();
        counters.sort();
        for (metric, v) in counters {
            out.sample("sluice_plugin_custom_total", &[("plugin", name), ("name", &metric)], v as f64);
        }
        for ((metric, labels), v) in s.custom_labeled() {
            let mut all = vec![("plugin", name.as_str()), ("name", metric.as_str())];
            all.extend(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            out.sample("sluice_plugin_custom_total", &all, v as f64);
        }
    }
    per_plugin(
        out,
        &all,
        "sluice_plugin_custom_series_dropped_total",
        "Plugin-defined series (counters, labeled series, histograms) refused past the per-plugin caps.",
        |s| s.dropped_series.load(Relaxed),
    );
}

/// One counter with one series per plugin: `metric{plugin="…"} value`.
fn per_plugin(
    out: &mut Exposition,
    all: &[(String, Arc<PluginStats>)],
    metric: &str,
    help: &str,
    value: impl Fn(&PluginStats) -> u64,
) {
    out.family(metric, "counter", help);
    for (name, s) in all {
        out.sample(metric, &[("plugin", name)], value(s) as f64);
    }
}

fn registry() -> &'static Mutex<HashMap<String, Arc<PluginStats>>> {
    static REG: OnceLock<Mutex<HashMap<String, Arc<PluginStats>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_defined_series_are_bounded_in_number_and_key_length() {
        let s = PluginStats::default();
        let labels = |i: usize| vec![("k".to_owned(), i.to_string())];
        for i in 0..MAX_LABELED_SERIES + 10 {
            s.custom_counter_add(&format!("c{i}"), 1);
            s.custom_counter_add_labeled("l", &labels(i), 1);
            s.custom_histogram_record(&format!("h{i}"), 1.0);
        }
        assert_eq!(s.custom_counters().len(), MAX_LABELED_SERIES);
        assert_eq!(s.custom_labeled().len(), MAX_LABELED_SERIES);
        assert_eq!(s.custom_histograms().len(), MAX_LABELED_SERIES);
        assert_eq!(s.dropped_series.load(Relaxed), 30, "ten refused of each kind");
        // Existing series still count.
        s.custom_counter_add("c0", 1);
        s.custom_histogram_record("h0", 2.0);
        assert_eq!(s.custom_counters()["c0"], 2);
        assert_eq!(s.custom_histograms()["h0"], CustomHistogram { count: 2, sum: 3.0 });
        // A key past the length bound is refused even with room.
        let t = PluginStats::default();
        let long = "x".repeat(MAX_SERIES_KEY + 1);
        t.custom_counter_add(&long, 1);
        t.custom_histogram_record(&long, 1.0);
        t.custom_counter_add_labeled("l", &[("k".to_owned(), long.clone())], 1);
        t.custom_counter_add(&long[..MAX_SERIES_KEY], 1);
        assert_eq!(t.custom_counters().len(), 1);
        assert!(t.custom_histograms().is_empty() && t.custom_labeled().is_empty());
        assert_eq!(t.dropped_series.load(Relaxed), 3);
    }
}
