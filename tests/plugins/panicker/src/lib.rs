//! Panics in the request phase.
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

#[derive(serde::Deserialize)]
struct Panicker {}

impl Plugin for Panicker {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        panic!("boom on {}", req.path());
    }
}

export!(Panicker);
