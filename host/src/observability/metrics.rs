//! Request, connection and upstream metrics: plain atomics on the request path, kept
//! by name in the gateway's [`Registry`] so counters run on across reloads, and
//! written out on the admin listener's `/metrics` (see [`write`](fn@write)).
//!
//! What a request touches, once, when its response body ends: one slot of its route's
//! [`KeyedCounts`] (method × status code), two histograms and two byte counters. No
//! lock and no allocation; the handles were resolved when the snapshot was built.
//!
//! Label cardinality is bounded by the config: listeners, routes, upstreams and their
//! targets are named there; methods outside the nine standard ones count as `other`;
//! status codes are at most 64 distinct (method, code) pairs per route, the rest
//! count under `method="other",code="other"`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::Method;

use super::prom::Exposition;

/// An atomic histogram over fixed upper bounds (nanoseconds); observations above the
/// last bound are counted only in the total, which Prometheus calls `le="+Inf"`.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram over `bounds_ns` (ascending).
    pub fn new(bounds_ns: &'static [u64; N]) -> Self {
        Self {
            bounds: bounds_ns,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        if let Some(i) = self.bounds.iter().position(|b| ns <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// `(upper bound in seconds, cumulative count)` per bucket, then the sum in seconds
    /// and the total. Read while others record, the total is at least the last
    /// cumulative count, so the exposition stays consistent.
    pub fn read(&self) -> HistogramReading {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| {
                cumulative += n.load(Relaxed);
                (*b as f64 / 1e9, cumulative)
            })
            .collect();
        let count = self.count.load(Relaxed).max(cumulative);
        HistogramReading { buckets, sum: self.sum_ns.load(Relaxed) as f64 / 1e9, count }
    }
}

/// A histogram as read for the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramReading {
    /// `(le, cumulative count)` in seconds, ascending.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
}

const MS: u64 = 1_000_000;

/// Request durations, from 100 µs (a proxy's own answer) to a minute (long polls).
pub static REQUEST_BOUNDS_NS: [u64; 18] = [
    100_000,
    250_000,
    500_000,
    MS,
    2 * MS + MS / 2,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
    500 * MS,
    1_000 * MS,
    2_500 * MS,
    5_000 * MS,
    10_000 * MS,
    30_000 * MS,
    60_000 * MS,
];

/// Slots of a [`KeyedCounts`].
const SLOTS: usize = 64;
/// Bits of a slot holding the count; the key sits above them.
const COUNT_BITS: u32 = 48;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Counters by a small non-zero key in a fixed table that never locks or allocates:
/// each slot packs its key (high 16 bits) and its count (low 48 bits), claimed by a
/// compare-and-swap from zero. Keys past the table's 64 slots count in `overflow`.
#[derive(Debug)]
pub struct KeyedCounts {
    slots: [AtomicU64; SLOTS],
    overflow: AtomicU64,
}

impl Default for KeyedCounts {
    fn default() -> Self {
        Self { slots: std::array::from_fn(|_| AtomicU64::new(0)), overflow: AtomicU64::new(0) }
    }
}

impl KeyedCounts {
    /// Adds one to `key`'s count (`key` must not be 0).
    pub fn add(&self, key: u16) {
        debug_assert!(key != 0);
        let tag = u64::from(key) << COUNT_BITS;
        let start = (usize::from(key).wrapping_mul(0x9e37)) % SLOTS;
        for probe in 0..SLOTS {
            let slot = &self.slots[(start + probe) % SLOTS];
            let mut now = slot.load(Relaxed);
            if now == 0 {
                match slot.compare_exchange(0, tag | 1, Relaxed, Relaxed) {
                    Ok(_) => return,
                    Err(taken) => now = taken,
                }
            }
            if now & !COUNT_MASK == tag {
                slot.fetch_add(1, Relaxed);
                return;
            }
        }
        self.overflow.fetch_add(1, Relaxed);
    }

    /// `(key, count)` of every claimed slot, by key, and the overflow count.
    pub fn read(&self) -> (Vec<(u16, u64)>, u64) {
        let mut v: Vec<(u16, u64)> = self
            .slots
            .iter()
            .map(|s| s.load(Relaxed))
            .filter(|s| *s != 0)
            .map(|s| ((s >> COUNT_BITS) as u16, s & COUNT_MASK))
            .collect();
        v.sort_unstable();
        (v, self.overflow.load(Relaxed))
    }
}

/// The methods counted by name; any other counts as `other`.
const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];

fn method_index(m: &Method) -> u16 {
    METHODS.iter().position(|k| k == m).map_or(METHODS.len(), |i| i) as u16
}

fn method_label(i: u16) -> &'static str {
    METHODS.get(usize::from(i)).map_or("other", Method::as_str)
}

/// The requests of one route on one listener (or of none: requests no route took).
#[derive(Debug)]
pub struct RouteMetrics {
    /// Responses by method and status code.
    responses: KeyedCounts,
    /// From the request's arrival to the end of its response body.
    duration: Histogram<18>,
    /// From sending to the upstream to its response head (only requests that went
    /// upstream).
    upstream_duration: Histogram<18>,
    /// Body bytes read from clients (`[0]`) and sent to them (`[1]`).
    body_bytes: [AtomicU64; 2],
}

impl Default for RouteMetrics {
    fn default() -> Self {
        Self {
            responses: KeyedCounts::default(),
            duration: Histogram::new(&REQUEST_BOUNDS_NS),
            upstream_duration: Histogram::new(&REQUEST_BOUNDS_NS),
            body_bytes: Default::default(),
        }
    }
}

/// What one finished request adds to its route's metrics.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// The response status.
    pub status: u16,
    /// Arrival to the end of the response body.
    pub duration: Duration,
    /// Request body bytes read.
    pub request_bytes: u64,
    /// Response body bytes sent.
    pub response_bytes: u64,
}

impl RouteMetrics {
    /// A request's response ended (or was abandoned).
    pub fn finish(&self, f: Finished<'_>) {
        let key = ((method_index(f.method) + 1) << 10) | f.status.min(999);
        self.responses.add(key);
        self.duration.record(f.duration);
        if f.request_bytes > 0 {
            self.body_bytes[0].fetch_add(f.request_bytes, Relaxed);
        }
        self.body_bytes[1].fetch_add(f.response_bytes, Relaxed);
    }

    /// The upstream answered (its response head) after `took`.
    pub fn upstream_answered(&self, took: Duration) {
        self.upstream_duration.record(took);
    }

    /// Responses so far: `(method, status, count)`; an overflow has status 0.
    pub fn responses(&self) -> Vec<(&'static str, u16, u64)> {
        let (counts, overflow) = self.responses.read();
        let mut v: Vec<_> =
            counts.into_iter().map(|(k, n)| (method_label((k >> 10) - 1), k & 0x3ff, n)).collect();
        if overflow > 0 {
            v.push(("other", 0, overflow));
        }
        v
    }
}

/// Connection protocols, as labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Protocol {
    /// HTTP/1.x (cleartext or TLS).
    Http1 = 0,
    /// HTTP/2 (h2c or TLS).
    Http2 = 1,
    /// Before the protocol is known: a TLS handshake under way, or a cleartext
    /// connection on a listener that speaks both before its first bytes showed which.
    Pending = 2,
}

impl Protocol {
    const LABELS: [&'static str; 3] = ["http1", "http2", "pending"];
}

/// One listener's connections.
#[derive(Debug)]
pub struct ListenerMetrics {
    accepted: AtomicU64,
    /// Connections accepted by each worker (`crate::workers`), to see how evenly the
    /// kernel spreads them.
    by_worker: Box<[AtomicU64]>,
    open: [AtomicI64; 3],
    in_flight: AtomicI64,
    /// Idle HTTP/1 connections waiting without buffers (`listener/h1.rs`).
    parked: AtomicI64,
}

impl Default for ListenerMetrics {
    fn default() -> Self {
        ListenerMetrics {
            accepted: AtomicU64::new(0),
            by_worker: (0..crate::workers::MAX).map(|_| AtomicU64::new(0)).collect(),
            open: Default::default(),
            in_flight: AtomicI64::new(0),
            parked: AtomicI64::new(0),
        }
    }
}

impl ListenerMetrics {
    /// A request arrived; it is in flight until [`ListenerMetrics::request_ended`].
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A request's response ended (or was abandoned).
    pub fn request_ended(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// Counts a parked connection until the guard drops.
    pub fn parked(self: &Arc<Self>) -> ParkedConnection {
        self.parked.fetch_add(1, Relaxed);
        ParkedConnection(Arc::clone(self))
    }

    /// Counts an accepted connection, open as `protocol` until the guard drops.
    pub fn accepted(self: &Arc<Self>, protocol: Protocol) -> OpenConnection {
        self.accepted.fetch_add(1, Relaxed);
        if let Some(k) = crate::workers::current() {
            self.by_worker[k.min(self.by_worker.len() - 1)].fetch_add(1, Relaxed);
        }
        self.open[protocol as usize].fetch_add(1, Relaxed);
        OpenConnection { metrics: Arc::clone(self), protocol }
    }
}

/// A parked connection, counted until dropped.
#[derive(Debug)]
pub struct ParkedConnection(Arc<ListenerMetrics>);

impl Drop for ParkedConnection {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Relaxed);
    }
}

/// An open connection, counted until dropped.
#[derive(Debug)]
pub struct OpenConnection {
    metrics: Arc<ListenerMetrics>,
    protocol: Protocol,
}

impl OpenConnection {
    /// A pending connection turned out to speak `protocol` (TLS negotiated it, or its
    /// first bytes showed it); a connection already identified stays as it is.
    pub fn identified(&mut self, protocol: Protocol) {
        if self.protocol == Protocol::Pending {
            self.metrics.open[Protocol::Pending as usize].fetch_sub(1, Relaxed);
            self.metrics.open[protocol as usize].fetch_add(1, Relaxed);
            self.protocol = protocol;
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.open[self.protocol as usize].fetch_sub(1, Relaxed);
    }
}

/// Outcomes of the attempts sent to an upstream target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Attempt {
    /// A response head came back (whatever its status).
    Response = 0,
    /// No connection (refused, DNS, TLS).
    ConnectFailed = 1,
    /// The connect or response timeout passed.
    Timeout = 2,
    /// The connection failed after the request was sent (reset, bad response).
    Failed = 3,
}

impl Attempt {
    const LABELS: [&'static str; 4] = ["response", "connect_failed", "timeout", "failed"];

    /// The outcome an upstream error stands for.
    pub fn of(e: &crate::error::ProxyError) -> Attempt {
        use crate::error::ProxyError as E;
        match e {
            E::Connect { .. } => Attempt::ConnectFailed,
            E::ConnectTimeout { .. } | E::UpstreamTimeout { .. } => Attempt::Timeout,
            _ => Attempt::Failed,
        }
    }
}

/// One upstream target's attempts and circuit.
#[derive(Debug, Default)]
pub struct TargetMetrics {
    attempts: [AtomicU64; 4],
    circuit_opens: AtomicU64,
}

impl TargetMetrics {
    /// Counts one attempt's outcome.
    pub fn attempt(&self, outcome: Attempt) {
        self.attempts[outcome as usize].fetch_add(1, Relaxed);
    }

    /// Counts the target's circuit opening.
    pub fn circuit_opened(&self) {
        self.circuit_opens.fetch_add(1, Relaxed);
    }
}

/// Why an upstream retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Retry {
    /// The target answered with a status in `retry.on_status`.
    Status = 0,
    /// The attempt failed (connect, timeout, reset).
    Error = 1,
}

/// One upstream's retries.
#[derive(Debug, Default)]
pub struct UpstreamMetrics {
    retries: [AtomicU64; 2],
}

impl UpstreamMetrics {
    /// Counts a retry.
    pub fn retry(&self, why: Retry) {
        self.retries[why as usize].fetch_add(1, Relaxed);
    }
}

/// What became of the items handed to a background queue (the call log's writer, an
/// OTLP exporter): delivered, dropped because the queue was full (the request never
/// waits for it), or lost to a failed write or export.
#[derive(Debug, Default)]
pub struct Deliveries {
    delivered: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl Deliveries {
    /// `n` items delivered.
    pub fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Relaxed);
    }

    /// One item dropped at a full queue.
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }

    /// `n` items lost to a failure.
    pub fn failed(&self, n: u64) {
        self.failed.fetch_add(n, Relaxed);
    }

    /// `(delivered, dropped, failed)`.
    pub fn read(&self) -> (u64, u64, u64) {
        (self.delivered.load(Relaxed), self.dropped.load(Relaxed), self.failed.load(Relaxed))
    }
}

/// Writes a counter family with one series per outcome of each source: `delivered`
/// names the first outcome (`written`, `exported`), then `dropped` and `failed`.
/// Nothing is written without a source.
pub fn write_deliveries(
    out: &mut Exposition,
    (name, help, delivered): (&str, &str, &str),
    sources: &[(&[(&str, &str)], &Deliveries)],
) {
    if sources.is_empty() {
        return;
    }
    out.family(name, "counter", help);
    for (labels, d) in sources {
        let (ok, dropped, failed) = d.read();
        for (outcome, n) in [(delivered, ok), ("dropped", dropped), ("failed", failed)] {
            let mut all = labels.to_vec();
            all.push(("outcome", outcome));
            out.sample(name, &all, n as f64);
        }
    }
}

/// Live metric handles by key. Weak, so a route, listener or target that left the
/// config stops being reported once no snapshot holds it; one that stays keeps its
/// numbers because the old snapshot still holds them while the new one is built.
struct Handles<K, V>(Mutex<HashMap<K, Weak<V>>>);

impl<K, V> Default for Handles<K, V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: Eq + Hash, V: Default> Handles<K, V> {
    fn get(&self, key: K) -> Arc<V> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        map.retain(|_, v| v.strong_count() > 0);
        let made = Arc::new(V::default());
        map.insert(key, Arc::downgrade(&made));
        made
    }
}

/// The metric handles of one gateway, by name: each reload's snapshot takes the
/// handles of the listeners, routes and upstreams it keeps from here, so their
/// counters run on. (One per gateway rather than per process: several gateways in
/// one process, as in the test suite, count apart.)
#[derive(Default)]
pub struct Registry {
    routes: Handles<(String, String), RouteMetrics>,
    listeners: Handles<String, ListenerMetrics>,
    upstreams: Handles<String, UpstreamMetrics>,
    targets: Handles<(String, String), TargetMetrics>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// The metrics of `route` on `listener` (`None`: requests no route took).
    pub fn route(&self, listener: &str, route: Option<&str>) -> Arc<RouteMetrics> {
        self.routes.get((listener.to_owned(), route.unwrap_or_default().to_owned()))
    }

    /// The connection metrics of `listener`.
    pub fn listener(&self, listener: &str) -> Arc<ListenerMetrics> {
        self.listeners.get(listener.to_owned())
    }

    /// The retry metrics of `upstream`.
    pub fn upstream(&self, upstream: &str) -> Arc<UpstreamMetrics> {
        self.upstreams.get(upstream.to_owned())
    }

    /// The attempt and circuit metrics of `target` of `upstream`.
    pub fn target(&self, upstream: &str, target: &str) -> Arc<TargetMetrics> {
        self.targets.get((upstream.to_owned(), target.to_owned()))
    }
}

/// The route metrics a snapshot serves with, to be written out.
#[derive(Debug, Clone)]
pub struct RouteSeries<'a> {
    /// Listener name.
    pub listener: &'a str,
    /// Route name, or `""` for requests no route took.
    pub route: &'a str,
    /// The handles.
    pub metrics: &'a RouteMetrics,
}

/// A target's metrics, to be written out.
#[derive(Debug, Clone)]
pub struct TargetSeries<'a> {
    /// Upstream name.
    pub upstream: &'a str,
    /// Target address.
    pub target: &'a str,
    /// The handles.
    pub metrics: &'a TargetMetrics,
}

/// Writes the request, connection and upstream families.
pub fn write(
    out: &mut Exposition,
    routes: &[RouteSeries<'_>],
    listeners: &[(&str, &ListenerMetrics)],
    upstreams: &[(&str, &UpstreamMetrics)],
    targets: &[TargetSeries<'_>],
) {
    out.family(
        "sluice_requests_total",
        "counter",
        "Requests answered, by listener, route (empty: no route matched), method and status code.",
    );
    for r in routes {
        for (method, status, n) in r.metrics.responses() {
            let code = if status == 0 { "other".to_owned() } else { status.to_string() };
            out.sample(
                "sluice_requests_total",
                &[("listener", r.listener), ("route", r.route), ("method", method), ("code", &code)],
                n as f64,
            );
        }
    }
    out.family(
        "sluice_connections_parked",
        "gauge",
        "Idle HTTP/1 connections waiting for their next request with their buffers released.",
    );
    for (name, m) in listeners {
        out.sample("sluice_connections_parked", &[("listener", name)], m.parked.load(Relaxed) as f64);
    }
    out.family("sluice_requests_in_flight", "gauge", "Requests whose response has not ended yet.");
    for (name, m) in listeners {
        out.sample("sluice_requests_in_flight", &[("listener", name)], m.in_flight.load(Relaxed) as f64);
    }
    out.family(
        "sluice_request_duration_seconds",
        "histogram",
        "From a request's arrival to the end of its response body.",
    );
    for r in routes {
        let labels = [("listener", r.listener), ("route", r.route)];
        out.histogram("sluice_request_duration_seconds", &labels, &r.metrics.duration.read());
    }
    out.family(
        "sluice_upstream_duration_seconds",
        "histogram",
        "From sending a request upstream (retries included) to the response head.",
    );
    for r in routes.iter().filter(|r| r.metrics.upstream_duration.count() > 0) {
        let labels = [("listener", r.listener), ("route", r.route)];
        out.histogram("sluice_upstream_duration_seconds", &labels, &r.metrics.upstream_duration.read());
    }
    let bodies = [
        ("sluice_request_body_bytes_total", "Request body bytes read from clients."),
        ("sluice_response_body_bytes_total", "Response body bytes sent to clients."),
    ];
    for (i, (name, help)) in bodies.into_iter().enumerate() {
        out.family(name, "counter", help);
        for r in routes {
            let n = r.metrics.body_bytes[i].load(Relaxed);
            out.sample(name, &[("listener", r.listener), ("route", r.route)], n as f64);
        }
    }
    out.family("sluice_connections_accepted_total", "counter", "Client connections accepted.");
    for (name, m) in listeners {
        out.sample(
            "sluice_connections_accepted_total",
            &[("listener", name)],
            m.accepted.load(Relaxed) as f64,
        );
    }
    out.family(
        "sluice_worker_connections_accepted_total",
        "counter",
        "Client connections accepted, by the worker that accepted them (only with worker threads).",
    );
    for (name, m) in listeners {
        for (k, n) in m.by_worker.iter().enumerate() {
            let n = n.load(Relaxed);
            if n > 0 {
                let worker = k.to_string();
                out.sample(
                    "sluice_worker_connections_accepted_total",
                    &[("listener", name), ("worker", &worker)],
                    n as f64,
                );
            }
        }
    }
    out.family(
        "sluice_connections_open",
        "gauge",
        "Open client connections by protocol (pending: before the protocol is known: a TLS handshake, or a cleartext connection of a listener speaking both before its first bytes).",
    );
    for (name, m) in listeners {
        for (p, label) in Protocol::LABELS.iter().enumerate() {
            let n = m.open[p].load(Relaxed);
            out.sample("sluice_connections_open", &[("listener", name), ("protocol", label)], n as f64);
        }
    }
    out.family(
        "sluice_upstream_attempts_total",
        "counter",
        "Attempts sent to upstream targets, by outcome (retries are attempts too).",
    );
    for t in targets {
        for (i, outcome) in Attempt::LABELS.iter().enumerate() {
            let n = t.metrics.attempts[i].load(Relaxed);
            let labels = [("upstream", t.upstream), ("target", t.target), ("outcome", *outcome)];
            out.sample("sluice_upstream_attempts_total", &labels, n as f64);
        }
    }
    out.family("sluice_upstream_circuit_opens_total", "counter", "Times a target's circuit breaker opened.");
    for t in targets {
        let n = t.metrics.circuit_opens.load(Relaxed);
        out.sample(
            "sluice_upstream_circuit_opens_total",
            &[("upstream", t.upstream), ("target", t.target)],
            n as f64,
        );
    }
    out.family(
        "sluice_upstream_retries_total",
        "counter",
        "Retries, by reason: a status in retry.on_status, or a failed attempt.",
    );
    for (name, m) in upstreams {
        for (i, reason) in ["status", "error"].iter().enumerate() {
            let n = m.retries[i].load(Relaxed);
            out.sample("sluice_upstream_retries_total", &[("upstream", name), ("reason", reason)], n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_counts_keep_keys_apart_and_overflow_past_the_table() {
        let c = KeyedCounts::default();
        for key in 1..=100u16 {
            for _ in 0..key {
                c.add(key);
            }
        }
        let (counts, overflow) = c.read();
        assert_eq!(counts.len(), SLOTS);
        for (key, n) in &counts {
            assert_eq!(u64::from(*key), *n);
        }
        let counted: u64 = counts.iter().map(|(_, n)| n).sum();
        assert_eq!(counted + overflow, (1..=100u64).sum::<u64>());
    }

    #[test]
    fn keyed_counts_are_exact_under_contention() {
        let c = Arc::new(KeyedCounts::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for i in 0..10_000u16 {
                        c.add(1 + (i + t) % 8);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (counts, overflow) = c.read();
        assert_eq!(overflow, 0);
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 40_000);
        assert!(counts.iter().all(|(_, n)| *n == 5_000), "{counts:?}");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_the_total_counts_everything() {
        static BOUNDS: [u64; 3] = [1_000, 10_000, 100_000];
        let h = Histogram::new(&BOUNDS);
        for us in [0, 1, 5, 50, 500] {
            h.record(Duration::from_micros(us));
        }
        let r = h.read();
        assert_eq!(r.buckets, vec![(1e-6, 2), (1e-5, 3), (1e-4, 4)]);
        assert_eq!(r.count, 5);
        assert!((r.sum - 556e-6).abs() < 1e-12, "{}", r.sum);
    }

    #[test]
    fn route_metrics_count_by_method_and_code() {
        let m = RouteMetrics::default();
        let weird = Method::from_bytes(b"PURGE").unwrap();
        for (method, status) in
            [(&Method::GET, 200), (&Method::GET, 200), (&weird, 404), (&Method::POST, 503)]
        {
            m.finish(Finished {
                method,
                status,
                duration: Duration::from_millis(1),
                request_bytes: 3,
                response_bytes: 5,
            });
        }
        assert_eq!(m.responses(), vec![("GET", 200, 2), ("POST", 503, 1), ("other", 404, 1)]);
        assert_eq!(m.body_bytes[0].load(Relaxed), 12);
        assert_eq!(m.body_bytes[1].load(Relaxed), 20);
    }

    #[test]
    fn the_registry_shares_live_handles_and_forgets_dropped_ones() {
        let registry = Registry::default();
        let a = registry.route("l", Some("r"));
        a.upstream_answered(Duration::from_millis(1));
        let b = registry.route("l", Some("r"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &registry.route("l", None)));
        drop((a, b));
        let fresh = registry.route("l", Some("r"));
        assert_eq!(fresh.upstream_duration.count(), 0);
    }

    #[test]
    fn a_pending_connection_moves_to_its_protocol_once() {
        let l = Arc::new(ListenerMetrics::default());
        let mut c = l.accepted(Protocol::Pending);
        c.identified(Protocol::Http2);
        c.identified(Protocol::Http1);
        let open = |p: Protocol| l.open[p as usize].load(Relaxed);
        assert_eq!((open(Protocol::Pending), open(Protocol::Http2), open(Protocol::Http1)), (0, 1, 0));
        drop(c);
        assert_eq!(open(Protocol::Http2), 0);
        assert_eq!(l.accepted.load(Relaxed), 1);
    }
}
