//! Resource limits of one plugin entry, resolved from its config with the defaults
//! of [`crate::config::plugins`].

use std::time::Duration;

use crate::config::{
    DEFAULT_PLUGIN_CONFIGURE_DEADLINE, DEFAULT_PLUGIN_DEADLINE, DEFAULT_PLUGIN_IDLE_TIMEOUT,
    DEFAULT_PLUGIN_MAX_BODY, DEFAULT_PLUGIN_MAX_INSTANCES, DEFAULT_PLUGIN_MEMORY, DEFAULT_PLUGIN_WARM,
    PluginLimitsConfig,
};

/// Most table elements an instance may have.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Spare header slots reserved before a request meets plugins, so a `set-header`
/// rarely grows the map on the hot path.
pub const HEADER_HEADROOM: usize = 8;

/// The limits of one plugin entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Per call (`on-request`, `on-response`, a chunk).
    pub deadline: Duration,
    /// For `info` + `configure` at load.
    pub configure_deadline: Duration,
    /// Linear memory cap per instance.
    pub memory: usize,
    /// Largest body buffered for a body phase.
    pub max_body: u64,
    /// Instances at once, idle and in use.
    pub max_instances: usize,
    /// Instances made at load and never swept.
    pub warm: usize,
    /// Idle instances kept.
    pub max_idle: usize,
    /// How long idle instances beyond `warm` may go unneeded before they are dropped.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_config(&PluginLimitsConfig::default())
    }
}

impl Limits {
    /// Resolves `c`, applying defaults.
    pub fn from_config(c: &PluginLimitsConfig) -> Self {
        let max_instances = c.max_instances.unwrap_or(DEFAULT_PLUGIN_MAX_INSTANCES).max(1);
        Self {
            deadline: c.deadline.unwrap_or(DEFAULT_PLUGIN_DEADLINE).get(),
            configure_deadline: c.configure_deadline.map_or_else(
                || {
                    DEFAULT_PLUGIN_CONFIGURE_DEADLINE
                        .get()
                        .max(c.deadline.map_or(Duration::ZERO, |d| d.get()))
                },
                |d| d.get(),
            ),
            memory: c.memory.unwrap_or(DEFAULT_PLUGIN_MEMORY).bytes() as usize,
            max_body: c.max_body.unwrap_or(DEFAULT_PLUGIN_MAX_BODY).bytes(),
            max_instances,
            warm: c.warm.unwrap_or(DEFAULT_PLUGIN_WARM),
            max_idle: c.max_idle.unwrap_or(max_instances),
            idle_timeout: c.idle_timeout.unwrap_or(DEFAULT_PLUGIN_IDLE_TIMEOUT).get(),
        }
    }
}
