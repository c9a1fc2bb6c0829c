//! Fallback to other model aliases when a provider fails.
//!
//! The gateway calls the first provider through its upstream pool (retries over the
//! pool's targets cover connection failures). When that provider answers a status of
//! `fallback_on`, the response phase calls the aliases of `fallbacks` in turn,
//! directly at their provider's `url` through the `http` capability, and the first
//! answer that is not a `fallback_on` status replaces the response. Such an answer
//! arrives whole, so a streamed fallback is sent as one burst of chunks.

use serde_json::Value;
use sluice_plugin_sdk::http::{self, OutgoingRequest};
use sluice_plugin_sdk::log;

use crate::call::{self, Call};
use crate::config::AiConfig;

/// A fallback's answer.
#[derive(Debug)]
pub struct Rescued {
    /// The call as made to the fallback.
    pub call: Call,
    /// Its status.
    pub status: u16,
    /// Its whole body.
    pub body: Vec<u8>,
}

/// Tries the fallbacks of `failed`'s alias for the client's request `chat`.
pub fn rescue(cfg: &AiConfig, failed: &Call, chat: &Value) -> Option<Rescued> {
    for alias in cfg.fallbacks.get(&failed.alias)? {
        let r = cfg.resolve(alias)?;
        let base = r.provider.url.as_deref()?.trim_end_matches('/');
        let out = match call::outgoing(r.provider, r.model, chat, failed.stream) {
            Ok(o) => o,
            Err(e) => {
                log::warn(&format!("fallback {alias}: {}", e.message));
                continue;
            }
        };
        let request = OutgoingRequest {
            method: "POST".into(),
            url: format!("{base}{}", out.path),
            headers: out.headers.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            body: out.body,
            timeout_ms: None,
        };
        match http::send(&request) {
            Ok(resp) if cfg.fallback_on.contains(&resp.status) => {
                log::warn(&format!("fallback {alias} answered {} too", resp.status));
            }
            Ok(resp) => {
                log::info(&format!("model {} failed; answered by fallback {alias}", failed.alias));
                let call = Call {
                    provider: r.index,
                    alias: alias.clone(),
                    model: r.model.to_owned(),
                    ..failed.clone()
                };
                return Some(Rescued { call, status: resp.status, body: resp.body });
            }
            Err(e) => log::warn(&format!("fallback {alias} failed: {e:?}")),
        }
    }
    None
}
