//! Sets a request header (seen by the upstream) and a response header (seen by the client).
use sluice_plugin_sdk::{Decision, Plugin, Request, Response, export};

#[derive(serde::Deserialize)]
struct HeaderAdder {
    request_header: String,
    response_header: String,
    value: String,
}

impl Plugin for HeaderAdder {
    // A plugin-swap test gives this plugin and another one config: each ignores the
    // other's fields (the SDK's opt-out of rejecting unknown fields).
    const ACCEPT_UNKNOWN_FIELDS: bool = true;

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        req.set_header(&self.request_header, &self.value).expect("valid header");
        Decision::Continue
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        resp.set_header(&self.response_header, &self.value).expect("valid header");
        Decision::Continue
    }
}

export!(HeaderAdder);
