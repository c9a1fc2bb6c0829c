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

/// Binds a listener's socket with room for `max_connections` connections waiting to
/// be accepted (the kernel caps the backlog at `net.core.somaxconn`). tokio's default
/// backlog of 1024 drops the SYNs of a larger burst, and each dropped client waits a
/// second or more for its retransmit.
pub fn bind(
    address: std::net::SocketAddr,
    max_connections: usize,
) -> std::io::Result<tokio::net::TcpListener> {
    let socket =
        if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restart may bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(u32::try_from(max_connections).unwrap_or(u32::MAX).clamp(1, 65_535))
}
