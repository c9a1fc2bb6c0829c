//! Shared helpers for the end-to-end tests live in `all/`; this library exposes the
//! test plugins compiled by `build.rs` and [`RedisServer`], a real `redis-server`.

mod redis_server;

pub use redis_server::RedisServer;

/// Paths of the test plugin components (`tests/plugins/*`) and the example plugin
/// (`examples/plugins/guard`), built for `wasm32-wasip2`.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}
