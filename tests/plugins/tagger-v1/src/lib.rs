//! Tags what it touches with its own version — the package name, so `tagger-v1` and
//! `tagger-v2` (one source, two packages) are two builds of "the same plugin" with
//! different behaviour, for hot-reload tests: the request header `x-tagger-request`,
//! the response header `x-tagger`, and every response chunk wrapped as `<VERSION:chunk>`.
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, Response, export};

const VERSION: &str = env!("CARGO_PKG_NAME");

#[derive(serde::Deserialize)]
struct Tagger {}

impl Plugin for Tagger {
    const PHASES: Phases = Phases::REQUEST.union(Phases::RESPONSE).union(Phases::RESPONSE_CHUNK);

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        req.set_header("x-tagger-request", VERSION).expect("valid header");
        Decision::Continue
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        resp.set_header("x-tagger", VERSION).expect("valid header");
        Decision::Continue
    }

    fn on_response_chunk(&self, chunk: Vec<u8>, _last: bool) -> Vec<u8> {
        if chunk.is_empty() {
            return chunk;
        }
        let mut out = Vec::with_capacity(chunk.len() + VERSION.len() + 3);
        out.push(b'<');
        out.extend_from_slice(VERSION.as_bytes());
        out.push(b':');
        out.extend_from_slice(&chunk);
        out.push(b'>');
        out
    }
}

export!(Tagger);
