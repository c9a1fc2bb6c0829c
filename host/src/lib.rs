//! Sluice: a programmable HTTP API gateway.
//!
//! A request travels one way through the modules of this crate:
//!
//! ```text
//! listener  → accept TCP/TLS, HTTP/1 + HTTP/2, limits, graceful drain
//!   router  → host + method + path + headers → Route (from the current Snapshot)
//!   proxy   → the phase driver: request id, limits, (plugin chain), target, access log
//!   function→ or: a wasi:http component run inside the gateway as the target
//!   upstream→ pick a target (balancing, health, circuit breaker), pooled connection,
//!             timeouts, safe retries
//! ```
//!
//! [`Gateway`] ties them together; tests and benches drive it through
//! [`Gateway::builder`].

#[cfg(feature = "mimalloc")]
pub mod allocator;
pub mod body;
pub mod cache;
pub mod cli;
pub mod config;
pub mod devkit;
pub mod error;
pub mod exchange;
pub mod function;
pub mod gateway;
pub mod listener;
pub mod observability;
pub mod openapi;
pub mod plugins;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod snapshot;
pub mod trim;
pub mod upstream;
pub mod workers;

pub use gateway::{Gateway, GatewayBuilder};
