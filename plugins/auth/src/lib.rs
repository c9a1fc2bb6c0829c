//! Built-in plugin `auth` (work in progress: passes every request through).

use sluice_plugin_sdk::{Phases, Plugin, export};

/// The plugin's config.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

impl Plugin for Config {
    const PHASES: Phases = Phases::REQUEST;
}

export!(Config);
