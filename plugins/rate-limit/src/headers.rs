//! What clients see: the `RateLimit-Policy` and `RateLimit` header fields of
//! draft-ietf-httpapi-ratelimit-headers (structured-field lists, one item per limit),
//! and the `429` / `503` answers in the gateway's JSON error shape.
//!
//! ```text
//! RateLimit-Policy: "per_second";q=10;w=1, "per_day";q=10000;w=86400
//! RateLimit: "per_second";r=9;t=1, "per_day";r=9999;t=9
//! ```
//!
//! `q`/`w` are the configured `rate` and `per` (seconds); `r` is how many requests
//! would be admitted right now (it can exceed `q` when `burst` does); `t` is the
//! seconds until the whole quota is back, rounded up.

use std::fmt::Write;

use sluice_plugin_sdk::{Decision, serde_json};

use crate::config::Limit;
use crate::gcra::ceil_secs;

/// Lowercase response header names.
pub const POLICY: &str = "ratelimit-policy";
/// See [`POLICY`].
pub const STATE: &str = "ratelimit";

/// The `RateLimit-Policy` value of `limits`.
pub fn policy(limits: &[Limit]) -> String {
    let mut out = String::new();
    for l in limits {
        if !out.is_empty() {
            out.push_str(", ");
        }
        // Names are checked to be [A-Za-z0-9_.-]: no escaping needed in an sf-string.
        #[expect(clippy::let_underscore_must_use, reason = "writing to a String cannot fail")]
        let _ = write!(out, "\"{}\";q={};w={}", l.name, l.gcra.rate, l.gcra.per_secs);
    }
    out
}

/// Appends one limit's item to a `RateLimit` value.
pub fn push_state(out: &mut String, name: &str, remaining: u64, reset_ns: u64) {
    if !out.is_empty() {
        out.push_str(", ");
    }
    #[expect(clippy::let_underscore_must_use, reason = "writing to a String cannot fail")]
    let _ = write!(out, "\"{name}\";r={remaining};t={}", ceil_secs(reset_ns));
}

/// The gateway's error body: `{"error": {"status", "code", "message", "request_id"}}`.
fn error_body(status: u16, code: &str, message: &str, request_id: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": { "status": status, "code": code, "message": message, "request_id": request_id }
    });
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn json(status: u16, body: Vec<u8>) -> Decision {
    Decision::respond(status, body).with_header("content-type", "application/json")
}

/// `429 rate_limited` from limit `name`, retry after `retry_after_ns`.
pub fn too_many(name: &str, retry_after_ns: u64, request_id: &str) -> Decision {
    let secs = ceil_secs(retry_after_ns).max(1);
    let message = format!("rate limit `{name}` exceeded: retry in {secs}s");
    json(429, error_body(429, "rate_limited", &message, request_id))
        .with_header("retry-after", secs.to_string())
}

/// `503 rate_limit_unavailable`: the limiter's state cannot be read (fail closed).
pub fn unavailable(request_id: &str) -> Decision {
    let message = "the rate limiter is unavailable: retry later";
    json(503, error_body(503, "rate_limit_unavailable", message, request_id)).with_header("retry-after", "1")
}
