//! Counts requests in the kv store and answers with the new count (`ttl_ms`: the
//! counter expires that long after its first request). With `start_at`, `configure`
//! sets the counter first (a load-time kv call, which waits on Redis).
use std::time::Duration;

use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export, kv};

#[derive(serde::Deserialize)]
struct KvCounter {
    key: String,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    start_at: Option<i64>,
}

impl Plugin for KvCounter {
    const PHASES: Phases = Phases::REQUEST;

    fn init(&mut self) -> Result<(), String> {
        if let Some(n) = self.start_at {
            kv::set(&self.key, n.to_string().as_bytes(), None).map_err(|e| format!("kv: {e:?}"))?;
        }
        Ok(())
    }

    fn on_request(&self, _req: &mut Request<'_>) -> Decision {
        match kv::increment(&self.key, 1, self.ttl_ms.map(Duration::from_millis)) {
            Ok(n) => Decision::respond(200, n.to_string()),
            Err(e) => Decision::respond(500, format!("{e:?}")),
        }
    }
}

export!(KvCounter);
