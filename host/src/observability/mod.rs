//! Logging, the access log and (later) metrics.
