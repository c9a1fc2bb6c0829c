//! The benchmarks' header-only plugin: reads one header and sets another.
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

#[derive(serde::Deserialize)]
struct HeaderCheck {}

impl Plugin for HeaderCheck {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let seen = if req.header("x-api-key").is_some() { "yes" } else { "no" };
        let _ = req.set_header("x-key-seen", seen);
        Decision::Continue
    }
}

export!(HeaderCheck);
