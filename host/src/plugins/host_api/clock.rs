//! `clock`: wall-clock and monotonic time — the system's, or a fixed instant for the
//! offline harness.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::plugins::bindings::sluice::plugin::clock::Host;
use crate::plugins::state::PluginState;

/// What a plugin's `clock` import reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PluginClock {
    /// The system's clocks.
    #[default]
    System,
    /// Time stands still at this Unix time in milliseconds (the monotonic clock reads
    /// zero), so a harness run is reproducible.
    Fixed {
        /// Milliseconds since the Unix epoch.
        now_ms: u64,
    },
}

impl PluginClock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms(self) -> u64 {
        match self {
            Self::System => {
                SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
            }
            Self::Fixed { now_ms } => now_ms,
        }
    }

    /// Nanoseconds since an arbitrary origin.
    pub fn monotonic_ns(self) -> u64 {
        match self {
            Self::System => origin().elapsed().as_nanos() as u64,
            Self::Fixed { .. } => 0,
        }
    }
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Host for PluginState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        if !self.env.grants.clock {
            return Ok(0);
        }
        Ok(self.env.clock.now_ms())
    }

    fn monotonic_ns(&mut self) -> wasmtime::Result<u64> {
        if !self.env.grants.clock {
            return Ok(0);
        }
        Ok(self.env.clock.monotonic_ns())
    }
}
