//! `metrics`: counters and histograms a plugin defines, kept in its
//! [`PluginStats`](crate::plugins::stats::PluginStats).

use crate::plugins::bindings::sluice::plugin::metrics::Host;
use crate::plugins::state::PluginState;

impl Host for PluginState {
    fn counter_add(&mut self, name: String, value: u64) -> wasmtime::Result<()> {
        if self.env.grants.metrics {
            self.env.stats.custom_counter_add(&name, value);
        }
        Ok(())
    }

    fn counter_add_labeled(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: u64,
    ) -> wasmtime::Result<()> {
        if self.env.grants.metrics {
            self.env.stats.custom_counter_add_labeled(&name, &labels, value);
        }
        Ok(())
    }

    fn histogram_record(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
        if self.env.grants.metrics {
            self.env.stats.custom_histogram_record(&name, value);
        }
        Ok(())
    }
}
