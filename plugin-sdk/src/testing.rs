//! Native unit tests for plugins, without Wasm: fake requests and responses with the
//! gateway's header rules, config parsing as the gateway does it, and in-memory
//! stand-ins for the capabilities (kv, secrets, log, clock; outbound HTTP is refused).
//!
//! ```
//! use sluice_plugin_sdk::testing::{self, FakeRequest};
//! use sluice_plugin_sdk::{Decision, Plugin, Request};
//!
//! #[derive(serde::Deserialize)]
//! struct Tag { value: String }
//! impl Plugin for Tag {
//!     fn on_request(&self, req: &mut Request<'_>) -> Decision {
//!         req.set_header("x-tag", &self.value).unwrap();
//!         Decision::Continue
//!     }
//! }
//!
//! let tag: Tag = testing::configure(r#"{"value": "a"}"#).unwrap();
//! let mut req = FakeRequest::new("GET", "/").with_header("accept", "*/*");
//! assert!(tag.on_request(&mut req.as_request()).is_continue());
//! assert_eq!(req.header("x-tag").as_deref(), Some("a"));
//! ```

use std::cell::RefCell;
use std::collections::HashMap;

use crate::{Consumer, HeaderError, Plugin, Request, Response};

/// Parses a JSON config into `P` and runs [`Plugin::init`], exactly as the gateway's
/// `configure` does.
pub fn configure<P: Plugin>(config_json: &str) -> Result<P, String> {
    crate::rt::parse::<P>(config_json)
}

/// Headers with the gateway's rules: case-insensitive names, validated names and
/// values, gateway-managed headers refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeHeaders(Vec<(String, String)>);

fn valid_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

impl FakeHeaders {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub(crate) fn list(&self) -> Vec<(String, Vec<u8>)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())).collect()
    }

    fn check(name: &str) -> Result<String, HeaderError> {
        if !crate::is_header_name(name) {
            return Err(HeaderError::InvalidName);
        }
        let lower = name.to_ascii_lowercase();
        if crate::is_managed_header(&lower) {
            return Err(HeaderError::Forbidden);
        }
        Ok(lower)
    }

    pub(crate) fn set(&mut self, name: &str, value: &str, append: bool) -> Result<(), HeaderError> {
        let name = Self::check(name)?;
        if !valid_value(value) {
            return Err(HeaderError::InvalidValue);
        }
        if !append {
            self.0.retain(|(k, _)| *k != name);
        }
        self.0.push((name, value.to_owned()));
        Ok(())
    }

    pub(crate) fn remove(&mut self, name: &str) -> Result<(), HeaderError> {
        let name = Self::check(name)?;
        self.0.retain(|(k, _)| *k != name);
        Ok(())
    }
}

/// A request for native tests.
#[derive(Debug, Clone, Default)]
pub struct FakeRequest {
    /// Method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Query without `?`.
    pub query: Option<String>,
    /// Headers.
    pub headers: FakeHeaders,
    /// Body.
    pub body: Vec<u8>,
    /// Upstream chosen by the plugin.
    pub upstream: Option<String>,
    /// Route name reported to the plugin.
    pub route: String,
    /// Client IP reported to the plugin (default `127.0.0.1`).
    pub client_ip: String,
    /// Request id reported to the plugin (default `test-request-id`).
    pub request_id: String,
    /// Path parameters.
    pub params: Vec<(String, String)>,
    /// The consumer (as set by an earlier plugin, or by this one).
    pub consumer: Option<Consumer>,
    /// Values the plugin stored with `set_context`.
    pub context: HashMap<String, String>,
    /// Response-header changes the plugin made with
    /// [`Request::set_response_header`](crate::Request::set_response_header) and its
    /// siblings, in order. [`FakeRequest::response`] applies them.
    pub response_edits: Vec<ResponseEdit>,
}

/// A response-header change made in the request phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseEdit {
    /// Set the header (lower-cased name) to the value.
    Set(String, String),
    /// Add the value after the header's existing values.
    Append(String, String),
    /// Remove the header.
    Remove(String),
}

impl FakeRequest {
    /// A request with `method` and `target` (`/path?query`).
    pub fn new(method: &str, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        Self {
            method: method.to_owned(),
            path,
            query,
            route: "test".into(),
            client_ip: "127.0.0.1".into(),
            request_id: "test-request-id".into(),
            ..Self::default()
        }
    }

    /// Sets the client IP.
    pub fn with_client_ip(mut self, ip: &str) -> Self {
        self.client_ip = ip.to_owned();
        self
    }

    /// Adds a path parameter.
    pub fn with_param(mut self, name: &str, value: &str) -> Self {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the consumer, as an earlier authentication plugin would.
    pub fn with_consumer(mut self, name: &str, groups: &[&str]) -> Self {
        self.consumer = Some(Consumer {
            name: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        });
        self
    }

    /// A [`FakeResponse`] with `status` that carries this request's consumer and
    /// context into the response phase, with this request's response edits applied,
    /// as the gateway does.
    pub fn response(&self, status: u16) -> FakeResponse {
        let mut resp = FakeResponse {
            status,
            consumer: self.consumer.clone(),
            context: self.context.clone(),
            ..FakeResponse::default()
        };
        self.apply_response_edits(&mut resp);
        resp
    }

    /// Applies this request's response edits to `resp` (an upstream response built
    /// with [`FakeResponse::new`]), as the gateway does before the plugin's response
    /// phase.
    pub fn apply_response_edits(&self, resp: &mut FakeResponse) {
        for edit in &self.response_edits {
            // Checked when they were made.
            let _ = match edit {
                ResponseEdit::Set(n, v) => resp.headers.set(n, v, false),
                ResponseEdit::Append(n, v) => resp.headers.set(n, v, true),
                ResponseEdit::Remove(n) => resp.headers.remove(n),
            };
        }
    }

    pub(crate) fn edit_response_header(
        &mut self,
        op: crate::bindings::sluice::plugin::types::HeaderOp,
        name: &str,
        value: &str,
    ) -> Result<(), HeaderError> {
        use crate::bindings::sluice::plugin::types::HeaderOp;
        let name = FakeHeaders::check(name)?;
        if op != HeaderOp::Remove && !valid_value(value) {
            return Err(HeaderError::InvalidValue);
        }
        self.response_edits.push(match op {
            HeaderOp::Set => ResponseEdit::Set(name, value.to_owned()),
            HeaderOp::Append => ResponseEdit::Append(name, value.to_owned()),
            HeaderOp::Remove => ResponseEdit::Remove(name),
        });
        Ok(())
    }

    /// Adds a header (panics on an invalid one: it is a test).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.set(name, value, true).expect("valid test header");
        self
    }

    /// Sets the request's id (what `Request::request_id` returns; the gateway's is
    /// generated or taken from the client, under the listener's id header).
    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = id.to_owned();
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(str::to_owned)
    }

    /// A [`Request`] over this fake, to pass to [`Plugin::on_request`].
    pub fn as_request(&mut self) -> Request<'_> {
        Request::fake(self)
    }
}

/// A response for native tests.
#[derive(Debug, Clone, Default)]
pub struct FakeResponse {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: FakeHeaders,
    /// Body.
    pub body: Vec<u8>,
    /// The request's consumer.
    pub consumer: Option<Consumer>,
    /// Values stored during the request phase.
    pub context: HashMap<String, String>,
}

impl FakeResponse {
    /// A response with `status`.
    pub fn new(status: u16) -> Self {
        Self { status, ..Self::default() }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.set(name, value, true).expect("valid test header");
        self
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(str::to_owned)
    }

    /// A [`Response`] over this fake, to pass to [`Plugin::on_response`].
    pub fn as_response(&mut self) -> Response<'_> {
        Response::fake(self)
    }
}

thread_local! {
    pub(crate) static KV: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
    pub(crate) static SECRETS: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
    pub(crate) static LOGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    pub(crate) static CLOCK_MS: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    pub(crate) static ANNOTATIONS: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
    pub(crate) static COUNTERS: RefCell<Vec<Counted>> = const { RefCell::new(Vec::new()) };
}

/// One counter addition a plugin made: name, labels, value.
pub type Counted = (String, Vec<(String, String)>, u64);

/// Fixes `clock::now_ms()` at `ms` (milliseconds since the Unix epoch) in this test
/// thread, or with `None` lets it follow the system clock again: expiry, windows and
/// rate limits become deterministic.
pub fn set_now_ms(ms: Option<u64>) {
    CLOCK_MS.with(|c| c.set(ms));
}

/// Runs `phase` (a call of one of the plugin's phases) and returns what it returned,
/// or `Err` with the message of the plugin fault it raised with
/// [`Decision::fault`](crate::Decision::fault). Any other panic goes on unwinding.
///
/// ```
/// use sluice_plugin_sdk::Decision;
/// use sluice_plugin_sdk::testing::catch_fault;
///
/// assert_eq!(catch_fault(|| Decision::fault("no header")), Err::<Decision, _>("no header".into()));
/// assert_eq!(catch_fault(|| 7), Ok(7));
/// ```
pub fn catch_fault<R>(phase: impl FnOnce() -> R) -> Result<R, String> {
    let payload = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(phase)) {
        Ok(r) => return Ok(r),
        Err(payload) => payload,
    };
    let fault = payload
        .downcast_ref::<String>()
        .and_then(|m| m.strip_prefix(crate::decision::FAULT_PREFIX))
        .map(str::to_owned);
    match fault {
        Some(message) => Err(message),
        None => std::panic::resume_unwind(payload),
    }
}

/// Checks `text` against the golden file at `path` (a config's JSON Schema, a
/// fixture), or writes it there when `SLUICE_BLESS=1` is set.
pub fn golden(path: impl AsRef<std::path::Path>, text: &str) {
    let path = path.as_ref();
    if std::env::var_os("SLUICE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(on_disk == text, "{} is stale: run the test with SLUICE_BLESS=1 to rewrite it", path.display());
}

/// Makes `secrets::get(name)` return `value` in this test thread.
pub fn set_secret(name: &str, value: &str) {
    SECRETS.with(|s| s.borrow_mut().insert(name.to_owned(), value.to_owned()));
}

/// The fake kv store's value of `key` in this test thread.
pub fn kv_value(key: &str) -> Option<Vec<u8>> {
    KV.with(|k| k.borrow().get(key).cloned())
}

/// Log lines written so far in this test thread (`level: message`).
pub fn logs() -> Vec<String> {
    LOGS.with(|l| l.borrow().clone())
}

/// Access-log annotations made so far in this test thread (`log::annotate`).
pub fn annotations() -> Vec<(String, String)> {
    ANNOTATIONS.with(|a| a.borrow().clone())
}

/// Counter additions made so far in this test thread (`metrics::counter_add*`;
/// unlabeled ones have no labels).
pub fn counters() -> Vec<Counted> {
    COUNTERS.with(|c| c.borrow().clone())
}
