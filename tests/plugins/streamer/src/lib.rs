//! Numbers the chunks of each streamed response: `on-response` starts a count in the
//! instance (from the request's context, so the tag names the request), every chunk
//! becomes `<tag>#<n>:<chunk>;`, and the last call appends `<tag>:total=<n>`. It
//! only works if one instance serves the whole response. It also counts chunks in a
//! labeled metric and annotates the access log with the total.
use std::cell::RefCell;

use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, Response, export, log, metrics};

#[derive(serde::Deserialize)]
struct Streamer {
    #[serde(skip)]
    state: RefCell<Option<(String, u32)>>,
}

impl Plugin for Streamer {
    const PHASES: Phases = Phases::REQUEST.union(Phases::RESPONSE).union(Phases::RESPONSE_CHUNK);

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let tag = req.header("x-tag").unwrap_or_else(|| "-".into());
        req.set_context("tag", &tag);
        Decision::Continue
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        let tag = resp.context("tag").unwrap_or_else(|| "?".into());
        *self.state.borrow_mut() = Some((tag, 0));
        Decision::Continue
    }

    fn on_response_chunk(&self, chunk: Vec<u8>, last: bool) -> Vec<u8> {
        let mut state = self.state.borrow_mut();
        let Some((tag, n)) = state.as_mut() else {
            return b"no-stream-state;".to_vec();
        };
        let mut out = Vec::new();
        if !chunk.is_empty() {
            out.extend_from_slice(format!("{tag}#{n}:").as_bytes());
            out.extend_from_slice(&chunk);
            out.push(b';');
            *n += 1;
        }
        if last {
            out.extend_from_slice(format!("{tag}:total={n}").as_bytes());
            metrics::counter_add_labeled("chunks", &[("tag", tag.as_str())], u64::from(*n));
            log::annotate("chunks", &n.to_string());
            *state = None;
        }
        out
    }
}

export!(Streamer);
