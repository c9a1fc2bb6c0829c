//! `log`: plugin log lines go to `tracing` (target `sluice::plugin`), tagged with the
//! plugin and route.

use crate::plugins::bindings::sluice::plugin::log::{Host, Level};
use crate::plugins::state::PluginState;

/// The tracing target of plugin log lines.
pub const TARGET: &str = "sluice::plugin";

impl Host for PluginState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.env.grants.log {
            return Ok(());
        }
        let plugin = &*self.env.plugin;
        let route = &*self.route;
        match level {
            Level::Trace => tracing::trace!(target: TARGET, plugin, route, "{message}"),
            Level::Debug => tracing::debug!(target: TARGET, plugin, route, "{message}"),
            Level::Info => tracing::info!(target: TARGET, plugin, route, "{message}"),
            Level::Warn => tracing::warn!(target: TARGET, plugin, route, "{message}"),
            Level::Error => tracing::error!(target: TARGET, plugin, route, "{message}"),
        }
        Ok(())
    }

    fn annotate(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        if self.env.grants.log
            && let Some(a) = &self.annotations
        {
            a.set(&self.env.plugin, key, value);
        }
        Ok(())
    }
}
