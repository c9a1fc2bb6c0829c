//! Loops forever in the request phase, or with `in: configure` while it is
//! configured (at load).
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

#[derive(serde::Deserialize)]
struct Looper {
    #[serde(default, rename = "in")]
    place: Option<String>,
}

fn spin() -> u64 {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
        if n == u64::MAX {
            return n;
        }
    }
}

impl Plugin for Looper {
    const PHASES: Phases = Phases::REQUEST;

    fn init(&mut self) -> Result<(), String> {
        if self.place.as_deref() == Some("configure") {
            spin();
        }
        Ok(())
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        if spin() == 0 {
            let _ = req.set_header("x-never", "1");
        }
        Decision::Continue
    }
}

export!(Looper);
