//! Wasm plugins: the runtime and the per-route chains.
//!
//! The lifecycle, in types:
//!
//! 1. once per process: the [`engine`] (pooling allocator, epoch ticker) and the
//!    [`host_api::linker`] (WASI p2 with no authority + every `sluice:plugin`
//!    interface);
//! 2. once per config generation ([`load::build_chains`], called by
//!    `Snapshot::build`): find each plugin in the [`registry`], compile it
//!    ([`cache`]: memory and disk, by content hash), check its imports against its
//!    grants, and build an [`pool::InstancePool`] whose first instance is
//!    instantiated and configured — any fault is a config problem naming route and
//!    plugin;
//! 3. per request: [`Chain::on_request`] / [`Chain::on_response`] check out warm
//!    instances, move the request head into the store's slot, call the phase under
//!    the entry's deadline and memory cap, and return the instance (or drop it if it
//!    faulted).
//!
//! The WIT contract is `wit/plugin.wit`; [`bindings`] holds the one `bindgen!`.

pub mod bindings;
pub mod builtin;
pub mod cache;
pub mod chain;
pub mod compat;
pub mod deadline;
pub mod engine;
pub mod error;
pub mod host_api;
pub mod limits;
pub mod load;
pub mod output;
pub mod pool;
pub mod registry;
pub mod state;
pub mod stats;

pub use chain::{Chain, ChainEntry, PluginBody, PluginBodyError, UpstreamOverride};
pub use engine::engine;
pub use error::{Phase, PluginError, PluginErrorKind};
pub use load::{LoadOptions, build_chains};
pub use state::{Annotations, Consumer, RequestContext};
