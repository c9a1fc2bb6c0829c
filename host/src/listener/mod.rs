//! Listeners: the first step of a request's way through the gateway.
//!
//! A listener binds a socket, accepts connections (up to its connection limit),
//! terminates TLS when configured, speaks HTTP/1.1 and HTTP/2 (ALPN on TLS, prior
//! knowledge — h2c — on plaintext), enforces the header-read and idle timeouts, and
//! hands each request to [`crate::proxy::handle`] together with the snapshot that is
//! current at that moment. On shutdown it stops accepting and lets in-flight requests
//! finish (graceful drain).

mod canned;
mod serve;
mod spec;
mod tls;

pub use serve::{ConnInfo, serve};
pub use spec::{Limits, ListenerSpec, RequestIdSpec};
