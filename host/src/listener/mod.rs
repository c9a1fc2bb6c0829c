//! Listeners: the first step of a request's way through the gateway.
//!
//! A listener binds a socket (one per worker), accepts connections (up to its
//! connection limit), terminates TLS when configured, speaks HTTP/1.1 (`h1.rs`, which
//! parks idle connections without their buffers) and HTTP/2 (ALPN on TLS, prior
//! knowledge — h2c — on plaintext), enforces the header-read and idle timeouts
//! (`activity.rs`), and hands each request to [`crate::proxy::handle`] together with
//! the snapshot that is current at that moment. On shutdown it stops accepting and
//! lets in-flight requests finish (graceful drain).

mod activity;
mod canned;
mod h1;
mod lot;
mod serve;
mod spec;
mod tls;
mod upgrade;

pub(crate) use h1::Rewind;
pub use serve::{ConnInfo, serve};
pub use spec::{Limits, ListenerSpec, RequestIdSpec};
pub use upgrade::{ClientUpgrade, Upgraded, UpgradedIo};

/// Binds a listener's address `copies` times (one socket per worker, `SO_REUSEPORT`
/// when more than one, so the kernel spreads connections over them), each with room
/// for `max_connections` connections waiting to be accepted (the kernel caps the
/// backlog at `net.core.somaxconn`; tokio's default of 1024 drops the SYNs of a larger
/// burst, and each dropped client waits a second or more for its retransmit).
///
/// The sockets are returned unregistered: each becomes a tokio listener on the
/// runtime that accepts from it, so its readiness wakes that runtime only. Port 0
/// binds the first copy to a free port and the others to the same one.
pub fn bind(
    address: std::net::SocketAddr,
    max_connections: usize,
    copies: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut sockets = Vec::with_capacity(copies.max(1));
    let mut address = address;
    for _ in 0..copies.max(1) {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(address),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        // As `TcpListener::bind` does: a restart may bind while old connections linger.
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        if copies > 1 {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        socket.listen(i32::try_from(max_connections).unwrap_or(i32::MAX).clamp(1, 65_535))?;
        let listener = std::net::TcpListener::from(socket);
        address = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}
