//! `ProxyError`: everything that can go wrong while proxying one request — in the proxy,
//! an upstream or a plugin chain — where it came from, whether a retry is safe, and the
//! one mapping from errors to HTTP statuses. It sits below `proxy` and `upstream` so both
//! use it without the upstream layer reaching back up into the proxy.

use std::time::Duration;

use http::StatusCode;

use crate::body::BoxError;

/// `code` as a status the gateway may answer with itself (a static or echo target,
/// a plugin's answer or `set-status`): a final status, 200 to 999. An informational
/// status is not an answer (a `101` would tell the client the connection switched
/// protocols when nothing was negotiated).
pub fn final_status(code: u16) -> Option<StatusCode> {
    StatusCode::from_u16(code).ok().filter(|s| !s.is_informational())
}

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something wrong (4xx).
    Client,
    /// An upstream failed or misbehaved (502/503/504).
    Upstream,
    /// The gateway itself (500).
    Internal,
}

/// An error while handling one request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matched the request.
    #[error("no route matches the request")]
    NoRoute,
    /// The request target is longer than the listener allows.
    #[error("request target is longer than {limit} bytes")]
    UriTooLong {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request head is larger than the listener allows.
    #[error("request headers are larger than {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request body is larger than the listener allows.
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request is malformed in a way hyper let through.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client sent its body too slowly: a gap longer than the listener's
    /// `body_read_timeout`, or a rate under its `min_body_rate`.
    #[error("the request body arrived too slowly ({0})")]
    BodyTimeout(&'static str),
    /// The upstream switched protocols (`101`) for a request whose upgrade the route
    /// does not allow.
    #[error("upstream {target} switched protocols without an allowed upgrade")]
    UnexpectedUpgrade {
        /// The target address.
        target: String,
    },
    /// Reading the client's body failed (client went away, bad chunking).
    #[error("reading the request body failed: {0}")]
    ClientBody(#[source] BoxError),
    /// Every target of the upstream is ejected, unhealthy or behind an open circuit.
    #[error("upstream {upstream} has no available target")]
    NoAvailableTarget {
        /// The upstream pool's name.
        upstream: String,
    },
    /// Connecting to a target failed; nothing was sent.
    #[error("connecting to {target} failed: {source}")]
    Connect {
        /// The target address.
        target: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Connecting to a target took too long; nothing was sent.
    #[error("connecting to {target} timed out after {after:?}")]
    ConnectTimeout {
        /// The target address.
        target: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The target did not answer in time.
    #[error("upstream {target} did not respond within {after:?}")]
    UpstreamTimeout {
        /// The target address.
        target: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The exchange with the target failed after the request (or part of it) was sent.
    #[error("upstream {target} failed: {source}")]
    Upstream {
        /// The target address.
        target: String,
        /// Why.
        #[source]
        source: BoxError,
        /// True when the request was certainly not processed (it was never written).
        nothing_sent: bool,
    },
    /// A bug or resource problem inside the gateway.
    #[error("internal error: {0}")]
    Internal(String),
    /// A plugin of the route's chain failed and its policy is `fail_closed`.
    #[error(transparent)]
    Plugin(crate::plugins::PluginError),
    /// The route's function target failed (trap, deadline, memory cap, no answer).
    #[error(transparent)]
    Function(crate::function::FunctionError),
}

impl ProxyError {
    /// Who caused this error.
    pub fn source_kind(&self) -> ErrorSource {
        match self {
            Self::NoRoute
            | Self::UriTooLong { .. }
            | Self::HeadersTooLarge { .. }
            | Self::BodyTooLarge { .. }
            | Self::BadRequest(_)
            | Self::BodyTimeout(_)
            | Self::ClientBody(_) => ErrorSource::Client,
            Self::NoAvailableTarget { .. }
            | Self::UnexpectedUpgrade { .. }
            | Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::UpstreamTimeout { .. }
            | Self::Upstream { .. }
            | Self::Function(_) => ErrorSource::Upstream,
            Self::Internal(_) => ErrorSource::Internal,
            Self::Plugin(e) if e.kind.is_fault() => ErrorSource::Internal,
            Self::Plugin(_) => ErrorSource::Client,
        }
    }

    /// Whether the request can be sent again to another target whatever its method:
    /// true only when the upstream certainly never saw it.
    pub fn nothing_sent(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::ConnectTimeout { .. } => true,
            Self::Upstream { nothing_sent, .. } => *nothing_sent,
            _ => false,
        }
    }

    /// The status the client gets. This is the one place errors become statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) | Self::ClientBody(_) => StatusCode::BAD_REQUEST,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UnexpectedUpgrade { .. } => StatusCode::BAD_GATEWAY,
            Self::NoAvailableTarget { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout { .. } | Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Plugin(e) => e.status(),
            Self::Function(e) => e.status(),
        }
    }

    /// A stable, machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::UriTooLong { .. } => "uri_too_long",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BadRequest(_) => "bad_request",
            Self::ClientBody(_) => "bad_request_body",
            Self::BodyTimeout(_) => "body_timeout",
            Self::UnexpectedUpgrade { .. } => "upstream_unexpected_upgrade",
            Self::NoAvailableTarget { .. } => "upstream_unavailable",
            Self::Connect { .. } => "upstream_connect_failed",
            Self::ConnectTimeout { .. } => "upstream_connect_timeout",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::Upstream { .. } => "upstream_failed",
            Self::Internal(_) => "internal_error",
            Self::Plugin(e) => e.code(),
            Self::Function(e) => e.code(),
        }
    }

    /// The message the client sees: safe to show, no addresses or internals.
    pub fn public_message(&self) -> String {
        if let Self::Plugin(e) = self {
            return e.public_message();
        }
        if let Self::Function(e) = self {
            return e.public_message().to_owned();
        }
        match self.source_kind() {
            ErrorSource::Client => self.to_string(),
            ErrorSource::Upstream => match self {
                Self::NoAvailableTarget { .. } => "no upstream server is available".to_owned(),
                Self::ConnectTimeout { .. } | Self::UpstreamTimeout { .. } => {
                    "the upstream server timed out".to_owned()
                }
                _ => "the upstream server failed".to_owned(),
            },
            ErrorSource::Internal => "internal gateway error".to_owned(),
        }
    }
}

/// The JSON body of [`error_response`], newline-terminated.
pub fn error_json(err: &ProxyError, request_id: &http::HeaderValue) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "status": err.status().as_u16(),
            "code": err.code(),
            "message": err.public_message(),
            "request_id": request_id.to_str().unwrap_or_default(),
        }
    });
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The JSON error response every gateway-generated error uses:
/// `{"error": {"status": 502, "code": "upstream_failed", "message": "…", "request_id": "…"}}`.
pub fn error_response(err: &ProxyError, request_id: &http::HeaderValue) -> http::Response<crate::body::Body> {
    let status = err.status();
    let bytes = error_json(err, request_id);
    let mut resp = http::Response::new(crate::body::full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    if matches!(
        err,
        ProxyError::BodyTooLarge { .. }
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::UriTooLong { .. }
            | ProxyError::BodyTimeout(_)
    ) {
        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    resp
}
