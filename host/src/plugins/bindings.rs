//! The host side of the `sluice:plugin` WIT world: the crate's only `bindgen!`.
//!
//! Exports are async (a plugin may wait on an outbound HTTP call, which is the one
//! async import); every other import is a plain synchronous host function that
//! returns `wasmtime::Result` so a host bug can trap instead of panicking. Plugin
//! mistakes never trap: they are WIT `result` errors.
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
