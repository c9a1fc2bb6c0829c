//! `PluginError`: a plugin fault naming route, plugin and phase, and the one mapping
//! from plugin faults to client statuses.

use std::fmt;

use http::StatusCode;
use wasmtime::Trap;

use super::state::PluginState;

/// The phase a plugin was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Loading: compiling, linking, instantiating.
    Load = 0,
    /// `configure`.
    Configure = 1,
    /// `on-request`.
    Request = 2,
    /// `on-response`.
    Response = 3,
    /// `on-response-chunk`.
    ResponseChunk = 4,
}

impl Phase {
    /// Number of phases.
    pub const COUNT: usize = 5;

    /// The phase's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Configure => "configure",
            Self::Request => "on-request",
            Self::Response => "on-response",
            Self::ResponseChunk => "on-response-chunk",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginErrorKind {
    /// The guest trapped (a panic is an `unreachable` trap).
    #[error("trapped: {0}")]
    Trap(String),
    /// The call ran past its deadline and was stopped: the deadline and the setting
    /// that gave it (`limits.deadline`, or `limits.configure_deadline` at load).
    #[error("ran past {1} ({0:?}) and was stopped")]
    Deadline(std::time::Duration, &'static str),
    /// The guest tried to grow its memory past the cap.
    #[error("tried to grow its memory past limits.memory ({0} bytes)")]
    Memory(usize),
    /// The guest returned something invalid (a bad status or header in a response).
    #[error("returned an invalid value: {0}")]
    BadReturn(String),
    /// `configure` rejected the config.
    #[error("rejected its config: {0}")]
    Config(String),
    /// The component could not be loaded or instantiated.
    #[error("could not be loaded: {0}")]
    Load(String),
    /// A body to buffer for the plugin was larger than allowed.
    #[error("body is larger than the {0} bytes buffered for plugins")]
    BodyTooLarge(u64),
    /// Reading a body to buffer for the plugin failed.
    #[error("reading the body failed: {0}")]
    Body(String),
    /// No instance came free in time: the entry is at `limits.max_instances` (or the
    /// process at its engine-wide instance slots).
    #[error("is at capacity: {0}")]
    Busy(String),
    /// The plugin handed the host more than it takes for one request (see
    /// [`output`](super::output)).
    #[error("handed the host too much: {0}")]
    Output(String),
}

impl PluginErrorKind {
    /// Metric labels, indexed by [`PluginErrorKind::index`].
    pub const LABELS: [&'static str; 10] = [
        "trap",
        "deadline",
        "memory",
        "bad_return",
        "config",
        "load",
        "body_too_large",
        "body",
        "busy",
        "output",
    ];

    /// Index into [`PluginErrorKind::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            Self::Trap(_) => 0,
            Self::Deadline(..) => 1,
            Self::Memory(_) => 2,
            Self::BadReturn(_) => 3,
            Self::Config(_) => 4,
            Self::Load(_) => 5,
            Self::BodyTooLarge(_) => 6,
            Self::Body(_) => 7,
            Self::Busy(_) => 8,
            Self::Output(_) => 9,
        }
    }

    /// The metric label.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Whether the plugin's `on_error` policy applies (a plugin fault), as opposed to
    /// a problem with the request itself.
    pub fn is_fault(&self) -> bool {
        !matches!(self, Self::BodyTooLarge(_) | Self::Body(_))
    }

    /// Classifies an error from a call into `state`'s instance, which ran under
    /// `deadline` (given by the setting `limit`).
    pub fn from_call(
        err: wasmtime::Error,
        state: &PluginState,
        deadline: std::time::Duration,
        limit: &'static str,
    ) -> Self {
        if state.limiter.exceeded {
            return Self::Memory(state.limiter.cap);
        }
        if let Some(Trap::Interrupt) = err.downcast_ref::<Trap>() {
            return Self::Deadline(deadline, limit);
        }
        if let Some(crossed) = err.downcast_ref::<super::output::OutputLimit>() {
            return Self::Output(crossed.to_string());
        }
        let stderr = state.stderr();
        let trap = match err.downcast_ref::<Trap>() {
            Some(t) => t.to_string(),
            None => format!("{err:#}"),
        };
        if stderr.is_empty() { Self::Trap(trap) } else { Self::Trap(format!("{trap} ({stderr})")) }
    }
}

/// A plugin fault: which plugin, on which route, in which phase, and what.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin {plugin} on route {route} failed in {phase}: {kind}")]
pub struct PluginError {
    /// The route's name (`*` for the global chain at load).
    pub route: String,
    /// The plugin's name.
    pub plugin: String,
    /// The phase.
    pub phase: Phase,
    /// What went wrong.
    pub kind: PluginErrorKind,
}

impl PluginError {
    /// The status the client gets: this is the one place plugin faults become statuses.
    pub fn status(&self) -> StatusCode {
        match &self.kind {
            PluginErrorKind::Deadline(..) | PluginErrorKind::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            PluginErrorKind::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PluginErrorKind::Body(_) if self.phase == Phase::Request => StatusCode::BAD_REQUEST,
            PluginErrorKind::Body(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match &self.kind {
            PluginErrorKind::Deadline(..) => "plugin_timeout",
            PluginErrorKind::Busy(_) => "plugin_busy",
            PluginErrorKind::BodyTooLarge(_) => "body_too_large",
            PluginErrorKind::Body(_) => "bad_body",
            _ => "plugin_failed",
        }
    }

    /// What the client may see: no plugin internals.
    pub fn public_message(&self) -> String {
        match &self.kind {
            PluginErrorKind::Deadline(..) => "a gateway plugin timed out".to_owned(),
            PluginErrorKind::Busy(_) => "a gateway plugin is at capacity".to_owned(),
            PluginErrorKind::BodyTooLarge(n) => format!("body is larger than {n} bytes"),
            PluginErrorKind::Body(_) => "the body could not be read".to_owned(),
            _ => "a gateway plugin failed".to_owned(),
        }
    }

    /// The JSON error response for the client.
    pub fn to_response(&self) -> http::Response<crate::body::Body> {
        let body = serde_json::json!({ "error": { "code": self.code(), "message": self.public_message() } });
        let mut resp = http::Response::new(crate::body::full(body.to_string()));
        *resp.status_mut() = self.status();
        resp.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        resp
    }
}
