//! Allocates without bound in the request phase.
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

#[derive(serde::Deserialize)]
struct MemoryHog {}

impl Plugin for MemoryHog {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, _req: &mut Request<'_>) -> Decision {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export!(MemoryHog);
