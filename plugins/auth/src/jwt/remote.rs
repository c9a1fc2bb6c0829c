//! A JWKS document fetched from a URL through the host's `http` capability, kept in
//! the instance's memory. Fetched when first needed, again after the cache TTL, and
//! when a token names an unknown `kid` — never more often than the minimum refresh
//! interval, which doubles after every further failed fetch (up to the TTL).
//!
//! The host refuses outbound calls during `configure`, so the first fetch happens in
//! the first request that needs the keys. A fetch runs inside that request's plugin
//! deadline: give JWKS routes a `limits.deadline` above the `http` grant's timeout.

use std::cell::RefCell;

use sluice_plugin_sdk::{http, log};

use super::keys::{self, Key};

/// The remote key set and its fetch schedule.
pub struct RemoteJwks {
    url: String,
    ttl_ms: u64,
    min_refresh_ms: u64,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    keys: Vec<Key>,
    /// When the keys were last fetched successfully.
    fetched_ms: Option<u64>,
    /// When a fetch was last tried.
    attempted_ms: Option<u64>,
    /// Failed fetches since the last success.
    failures: u32,
}

impl RemoteJwks {
    /// A key set at `url`, not fetched yet.
    pub fn new(url: String, ttl_ms: u64, min_refresh_ms: u64) -> Self {
        Self { url, ttl_ms, min_refresh_ms, state: RefCell::new(State::default()) }
    }

    /// Runs `f` over the current keys.
    pub fn with_keys<R>(&self, f: impl FnOnce(&[Key]) -> R) -> R {
        f(&self.state.borrow().keys)
    }

    /// Fetches the keys if they were never fetched or are older than the TTL (and the
    /// backoff allows). True if the keys were replaced.
    pub fn refresh_if_stale(&self, now_ms: u64) -> bool {
        let stale = self.state.borrow().fetched_ms.is_none_or(|t| now_ms.saturating_sub(t) >= self.ttl_ms);
        stale && self.refresh(now_ms)
    }

    /// Fetches the keys if the backoff allows. True if the keys were replaced.
    pub fn refresh(&self, now_ms: u64) -> bool {
        {
            let s = self.state.borrow();
            if let Some(t) = s.attempted_ms {
                let wait = self
                    .min_refresh_ms
                    .saturating_mul(1u64 << s.failures.saturating_sub(1).min(16))
                    .min(self.ttl_ms.max(self.min_refresh_ms));
                if now_ms.saturating_sub(t) < wait {
                    return false;
                }
            }
        }
        let result = self.fetch();
        let mut s = self.state.borrow_mut();
        s.attempted_ms = Some(now_ms);
        match result {
            Ok(keys) => {
                s.keys = keys;
                s.fetched_ms = Some(now_ms);
                s.failures = 0;
                true
            }
            Err(e) => {
                s.failures = s.failures.saturating_add(1);
                log::warn(&format!("fetching the JWKS at {} failed: {e}", self.url));
                false
            }
        }
    }

    fn fetch(&self) -> Result<Vec<Key>, String> {
        let resp = http::get(&self.url).map_err(|e| format!("{e:?}"))?;
        if resp.status != 200 {
            return Err(format!("status {}", resp.status));
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&resp.body).map_err(|e| format!("not JSON: {e}"))?;
        let found = keys::from_jwks(&doc, false)?;
        for s in &found.invalid {
            log::warn(&format!("JWKS at {}: skipped {s}", self.url));
        }
        for k in &found.private {
            log::warn(&format!(
                "JWKS at {}: {k} is a private key (it has `d`); only its public part is used, \
                 but the identity provider is publishing a private key",
                self.url
            ));
        }
        if found.keys.is_empty() {
            return Err(found.no_keys());
        }
        Ok(found.keys)
    }
}
