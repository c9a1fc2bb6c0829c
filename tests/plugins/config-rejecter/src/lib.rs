//! Rejects any config whose `limit` is not positive.
use sluice_plugin_sdk::{Phases, Plugin, export};

#[derive(serde::Deserialize)]
struct ConfigRejecter {
    limit: i64,
}

impl Plugin for ConfigRejecter {
    const PHASES: Phases = Phases::REQUEST;

    fn init(&mut self) -> Result<(), String> {
        if self.limit <= 0 {
            return Err(format!("limit must be positive, got {}", self.limit));
        }
        Ok(())
    }
}

export!(ConfigRejecter);
