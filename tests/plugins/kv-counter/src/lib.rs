//! Counts requests in the kv store and answers with the new count.
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export, kv};

#[derive(serde::Deserialize)]
struct KvCounter {
    key: String,
}

impl Plugin for KvCounter {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, _req: &mut Request<'_>) -> Decision {
        match kv::increment(&self.key, 1, None) {
            Ok(n) => Decision::respond(200, n.to_string()),
            Err(e) => Decision::respond(500, format!("{e:?}")),
        }
    }
}

export!(KvCounter);
