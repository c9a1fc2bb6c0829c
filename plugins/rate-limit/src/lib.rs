//! Built-in plugin `rate-limit`: GCRA limits with burst, several per route, keyed by
//! consumer, client IP, a header, the path or a path parameter (or a combination), with
//! state in the host kv store — in process, or on Redis so several gateways share one
//! limit. Refused requests get `429` with `Retry-After`; every response carries the
//! IETF `RateLimit-Policy` and `RateLimit` headers.
//!
//! ```yaml
//! plugins:
//!   - name: rate-limit
//!     grants: { kv: true }
//!     config:
//!       key: [consumer]
//!       fallback_key: [ip]
//!       limits:
//!         - { name: per_second, rate: 10, per: 1s, burst: 20 }
//!         - { name: per_day, rate: 10000, per: 1d }
//!       on_kv_error: fail_open
//! ```
//!
//! One request: build each limit's client key → for each limit in order, read its TAT
//! and compare-and-swap the new one ([`store::admit`]) → the first refusal answers
//! `429` and gives the earlier limits their unit back → otherwise the `RateLimit-Policy`
//! and `RateLimit` values become response-header edits, which the gateway applies to
//! the response itself: the plugin has no response phase to call. An edit the host
//! refuses is a plugin fault (the route's `on_error` applies); none can be, the values
//! being names and numbers only.
#![deny(clippy::let_underscore_must_use)]

mod config;
mod gcra;
mod headers;
mod store;
#[cfg(test)]
mod tests;

use std::cell::Cell;

use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, clock, export, log, metrics};

use config::{Compiled, KeyPart, KeySpec};
pub use config::{Config, KeyPartConfig, KvErrorPolicyConfig, LimitConfig};
use store::{HostKv, Outcome, Store};

/// Stands for an absent key part when there is no usable fallback.
const ABSENT: &str = "-";
/// Separates the parts of a kv key (never in header values, IPs or paths).
const SEP: char = '\u{0}';
/// Starts a key made from `fallback_key`.
const FALLBACK_MARK: char = '\u{1}';
/// At most one warning per instance this often while the kv store fails.
const WARN_EVERY_MS: u64 = 10_000;

/// The plugin: its config and the compiled form [`Plugin::init`] builds from it.
#[derive(serde::Deserialize)]
#[serde(from = "Config")]
pub struct RateLimit {
    config: Config,
    compiled: Compiled,
    /// When this instance last logged a kv failure (ms since the epoch).
    last_warning_ms: Cell<u64>,
}

impl From<Config> for RateLimit {
    fn from(config: Config) -> Self {
        RateLimit { config, compiled: Compiled::default(), last_warning_ms: Cell::new(0) }
    }
}

impl Plugin for RateLimit {
    // The headers are response edits made in the request phase.
    const PHASES: Phases = Phases::REQUEST;

    fn init(&mut self) -> Result<(), String> {
        self.compiled = self.config.compile()?;
        Ok(())
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        self.check(req, &HostKv, now_ns())
    }
}

fn now_ns() -> u64 {
    clock::now_ms().saturating_mul(1_000_000)
}

impl RateLimit {
    /// The request phase against `store` at `now` (nanoseconds since the epoch).
    fn check(&self, req: &mut Request<'_>, store: &impl Store, now: u64) -> Decision {
        let scope = match &self.config.scope {
            Some(s) => s.clone(),
            None => req.route(),
        };
        let clients: Vec<Option<String>> = self.compiled.keys.iter().map(|k| client_key(k, req)).collect();
        let mut state = String::new();
        let mut taken: Vec<(usize, String)> = Vec::with_capacity(self.compiled.limits.len());
        for (i, limit) in self.compiled.limits.iter().enumerate() {
            // A request without this limit's key, under `skip_absent`.
            let Some(client) = &clients[limit.key] else { continue };
            let key = kv_key(&scope, &limit.name, client);
            let refused = match store::admit(store, &limit.gcra, &key, now) {
                Ok(Outcome::Admitted { remaining, reset_ns }) => {
                    headers::push_state(&mut state, &limit.name, remaining, reset_ns);
                    taken.push((i, key));
                    continue;
                }
                Ok(Outcome::Refused { retry_after_ns, reset_ns }) => (retry_after_ns, reset_ns),
                Ok(Outcome::Contended) => {
                    log::warn(&format!(
                        "rate limit `{}`: state changed by concurrent requests {} times in a row; refusing",
                        limit.name,
                        store::MAX_SWAPS
                    ));
                    metrics::counter_add("contended", 1);
                    (limit.gcra.interval_ns, limit.gcra.interval_ns)
                }
                Err(why) => {
                    // No refunds: the store is failing, and more calls would only
                    // push the request towards the plugin's deadline.
                    return self.kv_failed(req, &why, now);
                }
            };
            self.give_back(store, &taken, now);
            metrics::counter_add("rejected", 1);
            let (retry_after_ns, reset_ns) = refused;
            let request_id = req.request_id();
            let mut answer = headers::too_many(&limit.name, retry_after_ns, &request_id);
            if self.config.headers {
                let mut refusal = String::new();
                headers::push_state(&mut refusal, &limit.name, 0, reset_ns);
                answer = answer
                    .with_header(headers::POLICY, self.compiled.policy_header.clone())
                    .with_header(headers::STATE, refusal);
            }
            return answer;
        }
        if self.config.headers
            && let Err(fault) = self.rate_headers(req, Some(&state))
        {
            return Decision::fault(fault);
        }
        Decision::Continue
    }

    /// Puts `RateLimit-Policy` on the response, and `RateLimit` with `state` when it is
    /// known. `Err` with the fault's message when the host refuses.
    fn rate_headers(&self, req: &mut Request<'_>, state: Option<&str>) -> Result<(), String> {
        let policy = Some(self.compiled.policy_header.as_str());
        for (name, value) in [(headers::POLICY, policy), (headers::STATE, state)] {
            if let Some(value) = value {
                req.append_response_header(name, value)
                    .map_err(|e| format!("could not add the response header `{name}`: {e}"))?;
            }
        }
        Ok(())
    }

    /// Gives back the units a request took from earlier limits.
    fn give_back(&self, store: &impl Store, taken: &[(usize, String)], now: u64) {
        for (i, key) in taken {
            store::refund(store, &self.compiled.limits[*i].gcra, key, now);
        }
    }

    /// The kv store failed: apply `on_kv_error`.
    fn kv_failed(&self, req: &mut Request<'_>, why: &str, now: u64) -> Decision {
        metrics::counter_add("kv_errors", 1);
        let now_ms = now / 1_000_000;
        let policy = self.config.on_kv_error;
        if now_ms.saturating_sub(self.last_warning_ms.get()) >= WARN_EVERY_MS {
            self.last_warning_ms.set(now_ms);
            let action = match policy {
                KvErrorPolicyConfig::FailOpen => "letting requests through (fail_open)",
                KvErrorPolicyConfig::FailClosed => "refusing requests with 503 (fail_closed)",
            };
            log::warn(&format!("rate limit state unavailable, {action}: {why}"));
        }
        match policy {
            KvErrorPolicyConfig::FailOpen => {
                // The policy still holds; the state is unknown.
                if self.config.headers
                    && let Err(fault) = self.rate_headers(req, None)
                {
                    return Decision::fault(fault);
                }
                Decision::Continue
            }
            KvErrorPolicyConfig::FailClosed => {
                let request_id = req.request_id();
                let answer = headers::unavailable(&request_id);
                if self.config.headers {
                    answer.with_header(headers::POLICY, self.compiled.policy_header.clone())
                } else {
                    answer
                }
            }
        }
    }
}

/// The client's key under `spec`: its parts joined, or the fallback's when a part is
/// absent, or the parts with [`ABSENT`] for the absent ones; `None` when a part is
/// absent under `skip_absent`.
fn client_key(spec: &KeySpec, req: &Request<'_>) -> Option<String> {
    let (key, complete) = join_parts(&spec.parts, req);
    if complete {
        return Some(key);
    }
    if let Some(fallback) = &spec.fallback {
        let (fb, fb_complete) = join_parts(fallback, req);
        if fb_complete {
            // Marked with a control character no header value, IP or path holds, so a
            // fallback key never collides with a primary one.
            return Some(format!("{FALLBACK_MARK}{fb}"));
        }
    }
    (!spec.skip_absent).then_some(key)
}

fn join_parts(parts: &[KeyPart], req: &Request<'_>) -> (String, bool) {
    let mut out = String::new();
    let mut complete = true;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        let value = match part {
            KeyPart::Consumer => req.consumer().map(|c| c.name),
            KeyPart::Ip => Some(req.client_ip()),
            KeyPart::Path => Some(req.path()),
            KeyPart::Header(h) => req.header(h),
            KeyPart::PathParam(p) => req.path_param(p),
        };
        match value {
            Some(v) => out.push_str(&v),
            None => {
                complete = false;
                out.push_str(ABSENT);
            }
        }
    }
    (out, complete)
}

/// `scope NUL limit NUL client`.
fn kv_key(scope: &str, limit: &str, client: &str) -> String {
    let mut k = String::with_capacity(scope.len() + limit.len() + client.len() + 2);
    k.push_str(scope);
    k.push(SEP);
    k.push_str(limit);
    k.push(SEP);
    k.push_str(client);
    k
}

export!(RateLimit);
