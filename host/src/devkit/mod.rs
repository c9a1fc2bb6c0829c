//! Tools for plugin authors, behind `sluice plugin …`: the offline test [`harness`]
//! and the project scaffolder ([`scaffold`]). None of it is on the request path.

pub mod arena;
pub mod bindgen;
pub mod command;
pub mod componentize;
pub mod harness;
pub mod scaffold;
