//! Answers every request itself (the upstream is never called).
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

#[derive(serde::Deserialize)]
struct Responder {
    status: u16,
    body: String,
}

impl Plugin for Responder {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        Decision::respond(self.status, self.body.as_bytes()).with_header("x-responder-path", &req.path())
    }
}

export!(Responder);
