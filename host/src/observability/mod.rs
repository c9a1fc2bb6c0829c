//! Observability: what operators see of the gateway.
//!
//! - [`access`]: the end of a request. When its response body ends (or is abandoned;
//!   a streamed one's last chunk call included) its record counts it in the route's
//!   [`metrics`], writes the access-log event (`sluice::access`), queues it for the
//!   [`call_log`] and ends its [`trace`] span.
//! - [`metrics`]: request, connection and upstream counters (atomics resolved at
//!   snapshot build); [`prom`]: the Prometheus text format they are written in.
//! - [`trace`]: W3C trace context in and out, request and plugin-call spans.
//! - [`call_log`]: every call in SQLite, its queries, and its OTLP log records.
//! - [`otlp`]: the one exporter (bounded queue, batches, protobuf over HTTP) that
//!   spans and call-log records go out through.
//! - [`admin`]: the admin listener: status, `/metrics`, reload, the call-log API and
//!   the dashboard (`dashboard/`), behind the admin token.
//!
//! Logs go through `tracing`; with debug logging each request runs in a `request`
//! span.

pub mod access;
pub mod admin;
pub mod call_log;
pub mod metrics;
pub mod otlp;
pub mod prom;
pub mod trace;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber: `RUST_LOG` style filtering (default `info`), text or
/// JSON lines on stderr. Calling it twice is harmless (the second call does nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}
