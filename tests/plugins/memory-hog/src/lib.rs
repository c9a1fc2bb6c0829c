//! Allocates without bound in the request phase, or (with `leak_kib`) leaks that
//! much per request and lets it through.
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

#[derive(serde::Deserialize)]
struct MemoryHog {
    #[serde(default)]
    leak_kib: Option<usize>,
}

impl Plugin for MemoryHog {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, _req: &mut Request<'_>) -> Decision {
        if let Some(kib) = self.leak_kib {
            std::hint::black_box(Box::leak(vec![1u8; kib << 10].into_boxed_slice()));
            return Decision::Continue;
        }
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export!(MemoryHog);
