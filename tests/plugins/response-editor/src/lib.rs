//! Makes response-header edits in the request phase (`request.edit-response-header`)
//! and has no response phase; optionally answers the request itself. An edit the host
//! refuses is reported in a `500` answer naming the error.
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

#[derive(serde::Deserialize)]
struct ResponseEditor {
    /// `[op, name, value]` with op `set`, `append` or `remove`.
    edits: Vec<(String, String, String)>,
    /// Answer with this status after making the edits.
    #[serde(default)]
    respond: Option<u16>,
}

impl Plugin for ResponseEditor {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        for (op, name, value) in &self.edits {
            let done = match op.as_str() {
                "set" => req.set_response_header(name, value),
                "append" => req.append_response_header(name, value),
                "remove" => req.remove_response_header(name),
                other => panic!("unknown op {other}"),
            };
            if let Err(e) = done {
                return Decision::respond(500, format!("{op} {name}: {}", e.name()));
            }
        }
        match self.respond {
            Some(status) => Decision::respond(status, "answered"),
            None => Decision::Continue,
        }
    }
}

export!(ResponseEditor);
