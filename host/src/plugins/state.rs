//! `PluginState`: the data of one plugin instance's `Store` — the request and
//! response slots the resources read and write, the capabilities granted to the
//! plugin, its memory limiter and its (empty) WASI context.
//!
//! Per call, the chain moves the request's head (method, URI, headers) and, when the
//! plugin declared a body phase, its buffered body into the slot, calls the export
//! with a borrow of the fixed [`REQUEST_REP`] handle, and moves them back. Nothing is
//! copied unless the plugin asks for it.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::deadline::CallTiming;
use super::host_api::HostEnv;
use super::output::{self, MAX_CONTEXT, MAX_EDITS, OutputLimit, Written, room_for_one, too_many};

/// The `request` resource: a marker, the data lives in [`PluginState::req`].
#[derive(Debug)]
pub struct RequestHandle;
/// The `response` resource: a marker, the data lives in [`PluginState::resp`].
#[derive(Debug)]
pub struct ResponseHandle;

/// The rep of the one request handle of a store.
pub const REQUEST_REP: u32 = 0;
/// The rep of the one response handle of a store.
pub const RESPONSE_REP: u32 = 1;
/// Bytes of guest stderr kept for the log when a plugin faults.
pub const STDERR_CAPTURE: usize = 4096;

/// Who made a request, as an authentication plugin established it (`set-consumer`).
/// Later plugins, the response phase and the access log see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// The consumer's name.
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
}

/// Values plugins keep for the rest of one request (`set-context`), private to the
/// plugin that stored them: (plugin, key, value).
#[derive(Debug, Clone, Default)]
pub struct RequestContext(Vec<(Arc<str>, String, String)>);

impl RequestContext {
    /// The value `plugin` stored under `key`.
    pub fn get(&self, plugin: &str, key: &str) -> Option<&str> {
        self.0.iter().find(|(p, k, _)| &**p == plugin && k == key).map(|(_, _, v)| v.as_str())
    }

    /// Stores `value` under `key` for `plugin`, replacing an earlier value; fails
    /// past [`MAX_CONTEXT`](super::output::MAX_CONTEXT) entries.
    pub fn set(&mut self, plugin: &Arc<str>, key: String, value: String) -> Result<(), OutputLimit> {
        let full = self.0.len() >= MAX_CONTEXT;
        match self.0.iter_mut().find(|(p, k, _)| p == plugin && *k == key) {
            Some(entry) => entry.2 = value,
            None if full => return Err(OutputLimit(format!("kept more than {MAX_CONTEXT} context entries"))),
            None => self.0.push((Arc::clone(plugin), key, value)),
        }
        Ok(())
    }
}

/// Access-log fields plugins attach to one request (`log.annotate`), shared by the
/// request's phases and its streamed chunks: (plugin, key, value).
#[derive(Debug, Clone, Default)]
pub struct Annotations(Arc<std::sync::Mutex<Vec<Annotation>>>);

/// One annotation: (plugin, key, value).
type Annotation = (Arc<str>, String, String);

impl Annotations {
    /// Most keys kept per request.
    pub const MAX_KEYS: usize = 32;
    /// Longest value kept, in bytes (longer values are cut at a character boundary).
    pub const MAX_VALUE: usize = 256;

    /// Sets `plugin.key` to `value`.
    pub fn set(&self, plugin: &Arc<str>, key: String, mut value: String) {
        if value.len() > Self::MAX_VALUE {
            let mut cut = Self::MAX_VALUE;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
        }
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let full = all.len() >= Self::MAX_KEYS;
        match all.iter_mut().find(|(p, k, _)| p == plugin && *k == key) {
            Some(entry) => entry.2 = value,
            None if !full => all.push((Arc::clone(plugin), key, value)),
            None => {}
        }
    }

    /// The value of `key` from whichever plugin set it first.
    pub fn find(&self, key: &str) -> Option<String> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().find(|(_, k, _)| k == key).map(|(_, _, v)| v.clone())
    }

    /// The value of `plugin.key`.
    pub fn get(&self, plugin: &str, key: &str) -> Option<String> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().find(|(p, k, _)| &**p == plugin && k == key).map(|(_, _, v)| v.clone())
    }
}

impl std::fmt::Display for Annotations {
    /// `plugin.key=value` pairs separated by spaces (values with spaces are quoted).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (i, (p, k, v)) in all.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            if v.contains([' ', '"']) || v.is_empty() {
                write!(f, "{sep}{p}.{k}={v:?}")?;
            } else {
                write!(f, "{sep}{p}.{k}={v}")?;
            }
        }
        Ok(())
    }
}

/// The request as a plugin sees it during one call.
#[derive(Debug, Default)]
pub struct RequestSlot {
    /// Method.
    pub method: Method,
    /// Target.
    pub uri: Uri,
    /// Headers.
    pub headers: HeaderMap,
    /// The buffered body, when a plugin of the chain declared `request-body`.
    pub body: Option<Bytes>,
    /// True when a plugin replaced the body.
    pub body_changed: bool,
    /// An upstream chosen by a plugin.
    pub upstream: Option<String>,
    /// True while the current plugin may touch the body.
    pub body_allowed: bool,
    /// The client's IP address.
    pub client_ip: Option<std::net::IpAddr>,
    /// The request id the gateway assigned (or accepted from the client).
    pub request_id: Option<http::HeaderValue>,
    /// The path parameters the route captured.
    pub params: crate::router::PathParams,
    /// The consumer set by an authentication plugin.
    pub consumer: Option<Consumer>,
    /// Values plugins stored for the rest of the request.
    pub context: RequestContext,
    /// The chain position of the plugin being called (tags its response edits).
    pub entry: usize,
    /// Response-header changes plugins made in the request phase.
    pub response_edits: ResponseEdits,
    /// What the phase's plugins wrote so far.
    pub written: Written,
}

/// One change to a response header, made by a plugin in the request phase
/// (`request.edit-response-header`) and applied by the gateway in the response phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replace every value of the header.
    Set(HeaderName, HeaderValue),
    /// Add a value after the existing ones.
    Append(HeaderName, HeaderValue),
    /// Remove every value.
    Remove(HeaderName),
}

impl HeaderEdit {
    /// Applies the change to `headers`, unless `headers` would then have more than
    /// [`MAX_HEADERS`](super::output::MAX_HEADERS) values.
    pub fn apply(self, headers: &mut HeaderMap) -> Result<(), OutputLimit> {
        // (The map's own limit, 32,768, is far above the bound; it would panic.)
        let full = |_| too_many(output::MAX_HEADERS + 1);
        match self {
            HeaderEdit::Set(n, v) => {
                if !headers.contains_key(&n) {
                    room_for_one(headers)?;
                }
                headers.try_insert(n, v).map(drop).map_err(full)
            }
            HeaderEdit::Append(n, v) => {
                room_for_one(headers)?;
                headers.try_append(n, v).map(drop).map_err(full)
            }
            HeaderEdit::Remove(n) => {
                headers.remove(n);
                Ok(())
            }
        }
    }
}

/// The response-header changes of one request, each with the chain position of the
/// plugin that made it, in the order they were made.
#[derive(Debug, Clone, Default)]
pub struct ResponseEdits(Vec<(usize, HeaderEdit)>);

impl ResponseEdits {
    /// Records `edit`, made by the plugin at chain position `entry`; fails past
    /// [`MAX_EDITS`](super::output::MAX_EDITS) edits.
    pub fn push(&mut self, entry: usize, edit: HeaderEdit) -> Result<(), OutputLimit> {
        if self.0.len() >= MAX_EDITS {
            return Err(OutputLimit(format!("queued more than {MAX_EDITS} response-header edits")));
        }
        self.0.push((entry, edit));
        Ok(())
    }

    /// True when no plugin made a change.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when the plugin at `entry` made a change.
    pub fn has(&self, entry: usize) -> bool {
        self.0.iter().any(|(e, _)| *e == entry)
    }

    /// Applies the changes of the plugin at `entry` to `headers` (and forgets them).
    /// The edits were bounded when made ([`MAX_EDITS`]), so they are applied whatever
    /// the response already has; only the map's own limit (where it would panic)
    /// drops one.
    pub fn apply(&mut self, entry: usize, headers: &mut HeaderMap) {
        for (_, edit) in self.0.extract_if(.., |(e, _)| *e == entry) {
            let _at_map_limit = match edit {
                HeaderEdit::Set(n, v) => headers.try_insert(n, v).map(drop),
                HeaderEdit::Append(n, v) => headers.try_append(n, v).map(drop),
                HeaderEdit::Remove(n) => {
                    headers.remove(n);
                    Ok(())
                }
            };
        }
    }
}

/// The response as a plugin sees it during one call.
#[derive(Debug, Default)]
pub struct ResponseSlot {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The buffered body, when a plugin of the chain declared `response-body`.
    pub body: Option<Bytes>,
    /// True when a plugin replaced the body.
    pub body_changed: bool,
    /// True while the current plugin may touch the body.
    pub body_allowed: bool,
    /// The request's consumer (read-only in the response phase).
    pub consumer: Option<Consumer>,
    /// The values plugins stored during the request phase.
    pub context: RequestContext,
    /// What the phase's plugins wrote so far.
    pub written: Written,
}

/// Caps the linear memory of an instance and remembers when the cap was hit, so a
/// trap that follows can be reported as a memory fault.
#[derive(Debug)]
pub struct MemoryLimiter {
    /// Largest linear memory, in bytes.
    pub cap: usize,
    /// Set when a growth past the cap was refused.
    pub exceeded: bool,
    /// The largest size a linear memory has grown to, in bytes.
    pub size: usize,
    /// `size` when the instance was ready (instantiated and configured).
    pub baseline: usize,
}

impl MemoryLimiter {
    /// A fresh limiter for `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self { cap, exceeded: false, size: 0, baseline: 0 }
    }

    /// Whether the instance has grown, since it was ready, past three quarters of its
    /// cap: the pool retires it then rather than let a slowly growing heap (a
    /// garbage-collected runtime's, a leak) fail a request at the cap.
    pub fn nearly_full(&self) -> bool {
        self.size > self.cap / 4 * 3 && self.size > self.baseline
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.exceeded = true;
            return Ok(false);
        }
        self.size = self.size.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= super::limits::MAX_TABLE_ELEMENTS)
    }
}

/// The data of one plugin instance's store.
pub struct PluginState {
    /// Capabilities and identity of the plugin entry.
    pub env: Arc<HostEnv>,
    /// The route of the current call.
    pub route: Arc<str>,
    /// The request slot.
    pub req: RequestSlot,
    /// The response slot.
    pub resp: ResponseSlot,
    /// Memory cap.
    pub limiter: MemoryLimiter,
    /// True while `configure` runs (outbound calls are refused then).
    pub configuring: bool,
    /// The access-log annotations of the request being handled, during a call.
    pub annotations: Option<Annotations>,
    /// The request's `traceparent` during a call, when tracing is on: outbound
    /// `http` calls carry it.
    pub traceparent: Option<http::HeaderValue>,
    /// The current call's clock: its deadline, and the time it did not run.
    pub timing: CallTiming,
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
}

/// A WASI context with no preopens, no environment, no arguments and no network, and
/// the pipe that captures its stderr: a WASI guest (a Rust std, Python or JS plugin, a
/// wasi:http function) runs but has no ambient authority.
pub fn sandboxed_wasi() -> (WasiCtx, MemoryOutputPipe) {
    let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
    let wasi = WasiCtx::builder()
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    (wasi, stderr)
}

impl PluginState {
    /// Fresh state for a new instance of the plugin entry `env`, timed by `timing`.
    pub fn new(env: Arc<HostEnv>, route: Arc<str>, memory_cap: usize, timing: CallTiming) -> Self {
        let (wasi, stderr) = sandboxed_wasi();
        Self {
            env,
            route,
            req: RequestSlot::default(),
            resp: ResponseSlot::default(),
            limiter: MemoryLimiter::new(memory_cap),
            configuring: false,
            annotations: None,
            traceparent: None,
            timing,
            wasi,
            table: ResourceTable::new(),
            stderr,
        }
    }

    /// Awaits a host operation the plugin waits on (an outbound HTTP call, a Redis
    /// round trip). The time is given back to the call's deadline (see
    /// [`super::deadline`]): the deadline limits what the plugin runs, and the operation
    /// has its own timeout.
    pub async fn wait_on<T>(&mut self, op: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = op.await;
        self.timing.waited(started.elapsed());
        out
    }

    /// The store's resource table (WASI's streams and pollables live there).
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// What the guest wrote to stderr (a panic message, usually), lossily decoded.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim_end().to_owned()
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_replace_cap_truncate_and_render() {
        let a = Annotations::default();
        let ai: Arc<str> = Arc::from("ai");
        let auth: Arc<str> = Arc::from("auth");
        a.set(&ai, "tokens_in".into(), "12".into());
        a.set(&auth, "method".into(), "jwt".into());
        a.set(&ai, "tokens_in".into(), "15".into());
        a.set(&ai, "note".into(), "two words".into());
        assert_eq!(a.to_string(), "ai.tokens_in=15 auth.method=jwt ai.note=\"two words\"");
        assert_eq!(a.get("ai", "tokens_in").as_deref(), Some("15"));

        a.set(&ai, "long".into(), "é".repeat(200));
        let long = a.get("ai", "long").unwrap();
        assert!(long.len() <= Annotations::MAX_VALUE && long.chars().all(|c| c == 'é'), "{long}");

        for i in 0..100 {
            a.set(&ai, format!("k{i}"), "v".into());
        }
        assert_eq!(a.0.lock().unwrap().len(), Annotations::MAX_KEYS, "keys are capped");
    }
}
