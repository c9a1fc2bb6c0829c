//! The host side of the `sluice:plugin` WIT world: the crate's two `bindgen!`s, one
//! per call path.
//!
//! - The asynchronous path (this module's root): exports are called with
//!   `call_async` on a fiber, and `http.send` and `kv` are async imports, because a
//!   plugin granted outbound HTTP or a Redis-backed kv waits on the network.
//! - The synchronous path ([`sync`]): exports are plain `call`s on the caller's stack
//!   (no fiber), and every import is a host function that returns at once. A plugin
//!   is put on this path when nothing it imports can wait (see
//!   [`super::host_api::sync_blocker`]): most plugins, and every built-in but `ai`.
//!
//! Every import other than `kv` and `http` is the same synchronous host function on
//! both paths: the [`sync`] world reuses this module's interfaces. Imports return
//! `wasmtime::Result` so a host bug can trap instead of panicking; plugin mistakes
//! never trap: they are WIT `result` errors.
//!
//! The `request` and `response` resources map to marker types: each store has one
//! request slot and one response slot, and the resource handle is a fixed rep.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "sluice:plugin/http.send": async | trappable,
        "sluice:plugin/kv": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "sluice:plugin/types.request": super::state::RequestHandle,
        "sluice:plugin/types.response": super::state::ResponseHandle,
    },
});

pub use self::sluice::plugin::types::{
    BodyError, HeaderError, PathError, Phases, ResponseSpec, StatusError, UpstreamError,
};

/// The synchronous path's world: sync exports, and sync `kv` and `http` imports
/// (the in-process kv; `http.send` refuses, since a plugin granted `http` takes the
/// asynchronous path).
pub mod sync {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: trappable },
        with: {
            "sluice:plugin/types": super::sluice::plugin::types,
            "sluice:plugin/log": super::sluice::plugin::log,
            "sluice:plugin/clock": super::sluice::plugin::clock,
            "sluice:plugin/secrets": super::sluice::plugin::secrets,
            "sluice:plugin/metrics": super::sluice::plugin::metrics,
            "sluice:plugin/crypto": super::sluice::plugin::crypto,
            "sluice:plugin/tokens": super::sluice::plugin::tokens,
        },
    });
}
