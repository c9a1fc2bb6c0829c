//! Loops forever in the request phase.
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

#[derive(serde::Deserialize)]
struct Looper {}

impl Plugin for Looper {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
            if n == u64::MAX {
                let _ = req.set_header("x-never", "1");
            }
        }
    }
}

export!(Looper);
