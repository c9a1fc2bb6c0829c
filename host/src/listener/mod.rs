//! Listeners: accept loops, TLS, HTTP/1 + HTTP/2, connection limits, graceful drain.

use crate::config::{ListenerConfig, LoadedConfig, Problem};

/// A listener's resolved settings.
#[derive(Debug)]
pub struct ListenerSpec {}

impl ListenerSpec {
    /// Resolves a listener's config (defaults, certificates).
    pub fn build(
        _index: usize,
        _config: &ListenerConfig,
        _loaded: &LoadedConfig,
    ) -> Result<ListenerSpec, Vec<Problem>> {
        Ok(ListenerSpec {})
    }
}
