//! `clock`: wall-clock and monotonic time.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::plugins::bindings::sluice::plugin::clock::Host;
use crate::plugins::state::PluginState;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Host for PluginState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        if !self.env.grants.clock {
            return Ok(0);
        }
        Ok(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
    }

    fn monotonic_ns(&mut self) -> wasmtime::Result<u64> {
        if !self.env.grants.clock {
            return Ok(0);
        }
        Ok(origin().elapsed().as_nanos() as u64)
    }
}
