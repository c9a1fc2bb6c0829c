//! Uppercases the request body (a body phase) and every chunk of the response body
//! (the streaming phase); chooses the upstream named in `x-upstream` if given.
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

#[derive(serde::Deserialize)]
struct BodyUpper {}

impl Plugin for BodyUpper {
    const PHASES: Phases = Phases::REQUEST.union(Phases::REQUEST_BODY).union(Phases::RESPONSE_CHUNK);

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let body = req.body().expect("the body phase was declared");
        req.set_body(&body.to_ascii_uppercase()).expect("the body phase was declared");
        if let Some(name) = req.header("x-upstream")
            && req.set_upstream(&name).is_err()
        {
            return Decision::respond(400, format!("unknown upstream {name}"));
        }
        Decision::Continue
    }

    fn on_response_chunk(&self, chunk: Vec<u8>, last: bool) -> Vec<u8> {
        let mut out = chunk.to_ascii_uppercase();
        if last {
            out.extend_from_slice(b"!");
        }
        out
    }
}

export!(BodyUpper);
