//! Calls `url` with outbound HTTP and answers with what came back (or the error).
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export, http};

#[derive(serde::Deserialize)]
struct HttpCaller {
    url: String,
}

impl Plugin for HttpCaller {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, _req: &mut Request<'_>) -> Decision {
        match http::get(&self.url) {
            Ok(r) => Decision::respond(200, r.body).with_header("x-outbound-status", r.status.to_string()),
            Err(http::HttpError::NotAllowed(m)) => Decision::respond(403, format!("not-allowed: {m}")),
            Err(e) => Decision::respond(502, format!("{e:?}")),
        }
    }
}

export!(HttpCaller);
