//! Appends its name to `x-order` on the request and on the response, to observe
//! phase order across a chain.
use sluice_plugin_sdk::{Decision, Plugin, Request, Response, export};

#[derive(serde::Deserialize)]
struct Recorder {
    name: String,
}

impl Plugin for Recorder {
    // A plugin-swap test gives this plugin and another one config: each ignores the
    // other's fields (the SDK's opt-out of rejecting unknown fields).
    const ACCEPT_UNKNOWN_FIELDS: bool = true;

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        req.append_header("x-order", &self.name).expect("valid header");
        Decision::Continue
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        resp.append_header("x-order", &self.name).expect("valid header");
        Decision::Continue
    }
}

export!(Recorder);
