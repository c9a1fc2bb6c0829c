//! The phase driver: takes a request from a listener through routing, (the plugin
//! chain,) the target and back.

pub mod error;
