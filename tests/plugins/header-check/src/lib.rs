//! The benchmarks' header-only plugin: reads one header and sets another. `mode`
//! takes the work apart for the crossing-cost breakdown: `noop` makes no host call,
//! `read` only reads the header, `read-set` (the default) reads it and sets another.
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

#[derive(serde::Deserialize, Default, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    Noop,
    Read,
    #[default]
    ReadSet,
}

#[derive(serde::Deserialize)]
struct HeaderCheck {
    #[serde(default)]
    mode: Mode,
}

impl Plugin for HeaderCheck {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        if self.mode == Mode::Noop {
            return Decision::Continue;
        }
        let seen = if req.header("x-api-key").is_some() { "yes" } else { "no" };
        if self.mode == Mode::ReadSet {
            let _ = req.set_header("x-key-seen", seen);
        }
        Decision::Continue
    }
}

export!(HeaderCheck);
