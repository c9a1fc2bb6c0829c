//! Observability: process-wide logging setup and the access log.
//!
//! Logs go through `tracing`. Each request runs in a `request` span; when its response
//! body is finished (or abandoned) one access-log event is emitted on the
//! `sluice::access` target with structured fields.

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
