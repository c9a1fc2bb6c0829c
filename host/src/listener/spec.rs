//! `ListenerSpec`: a listener's settings with every default applied and its
//! certificates loaded, built once per snapshot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::config::{
    DEFAULT_BODY_READ_TIMEOUT, DEFAULT_CLIENT_IDLE_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_URI_BYTES,
    DEFAULT_MIN_BODY_RATE, DEFAULT_REQUEST_ID_HEADER, ForwardedConfig, HttpVersion, ListenerConfig,
    LoadedConfig, Name, PathsConfig, Problem, UnderscoreHeaders,
};

/// A listener's resolved settings.
#[derive(Debug)]
pub struct ListenerSpec {
    /// The listener's name.
    pub name: Name,
    /// The configured bind address (port may be 0).
    pub address: SocketAddr,
    /// Serve HTTP/1.x.
    pub http1: bool,
    /// Serve HTTP/2.
    pub http2: bool,
    /// TLS settings, when the listener terminates TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Request and connection limits.
    pub limits: Limits,
    /// Forwarding headers to add.
    pub forwarded: ForwardedConfig,
    /// Request id settings.
    pub request_id: RequestIdSpec,
    /// Path normalisation before routing.
    pub paths: PathsConfig,
    /// What to do with underscored header names.
    pub underscore_headers: UnderscoreHeaders,
    /// Connection and in-flight request counts (process-wide by listener name).
    pub metrics: Arc<crate::observability::metrics::ListenerMetrics>,
}

/// Limits with defaults applied.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: u64,
    /// Longest request target in bytes.
    pub max_uri_bytes: usize,
    /// Time allowed to receive a request head.
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_read_timeout: Duration,
    /// Lowest average body rate in bytes per second of waiting (0: off).
    pub min_body_rate: u64,
    /// Idle keep-alive connections close after this.
    pub idle_timeout: Duration,
    /// Concurrent connections.
    pub max_connections: usize,
}

/// Request id settings, resolved.
#[derive(Debug, Clone)]
pub struct RequestIdSpec {
    /// Header carrying the id.
    pub header: HeaderName,
    /// Keep a well-formed client-sent id.
    pub trust_incoming: bool,
}

impl ListenerSpec {
    /// Resolves the listener at `index` of the config.
    pub fn build(
        index: usize,
        config: &ListenerConfig,
        loaded: &LoadedConfig,
        metrics: &crate::observability::metrics::Registry,
    ) -> Result<ListenerSpec, Vec<Problem>> {
        let mut problems = Vec::new();
        let protocols =
            config.protocols.clone().unwrap_or_else(|| vec![HttpVersion::Http1, HttpVersion::Http2]);
        let http1 = protocols.contains(&HttpVersion::Http1);
        let http2 = protocols.contains(&HttpVersion::Http2);
        if !http1 && !http2 {
            problems.push(Problem::new(
                format!("listeners[{index}].protocols"),
                "at least one protocol is required",
            ));
        }
        let l = &config.limits;
        let limits = Limits {
            max_header_bytes: l.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES).bytes() as usize,
            max_body_bytes: l.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES).bytes(),
            max_uri_bytes: l.max_uri_bytes.unwrap_or(DEFAULT_MAX_URI_BYTES).bytes() as usize,
            header_read_timeout: l.header_read_timeout.unwrap_or(DEFAULT_HEADER_READ_TIMEOUT).get(),
            body_read_timeout: l.body_read_timeout.unwrap_or(DEFAULT_BODY_READ_TIMEOUT).get(),
            min_body_rate: l.min_body_rate.unwrap_or(DEFAULT_MIN_BODY_RATE).bytes(),
            idle_timeout: l.idle_timeout.unwrap_or(DEFAULT_CLIENT_IDLE_TIMEOUT).get(),
            max_connections: l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS).max(1),
        };
        let header = config.request_id.header.as_deref().unwrap_or(DEFAULT_REQUEST_ID_HEADER);
        let header = match HeaderName::from_bytes(header.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                problems.push(Problem::new(
                    format!("listeners[{index}].request_id.header"),
                    format!("invalid header name `{header}`"),
                ));
                HeaderName::from_static(DEFAULT_REQUEST_ID_HEADER)
            }
        };
        let tls = match &config.tls {
            Some(t) => match super::tls::server_config(index, t, http1, http2, loaded) {
                Ok(c) => Some(Arc::new(c)),
                Err(p) => {
                    problems.extend(p);
                    None
                }
            },
            None => None,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ListenerSpec {
            name: config.name.clone(),
            address: config.address.0,
            http1,
            http2,
            tls,
            limits,
            forwarded: config.forwarded.clone(),
            request_id: RequestIdSpec { header, trust_incoming: config.request_id.trust_incoming },
            paths: config.paths.clone(),
            underscore_headers: config.underscore_headers,
            metrics: metrics.listener(config.name.as_str()),
        })
    }
}
