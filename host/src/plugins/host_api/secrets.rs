//! `secrets`: values the operator granted to the plugin, read from the environment or
//! files when the config is loaded.

use crate::plugins::bindings::sluice::plugin::secrets::Host;
use crate::plugins::state::PluginState;

impl Host for PluginState {
    fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.env.grants.secrets.get(&name).cloned())
    }
}
