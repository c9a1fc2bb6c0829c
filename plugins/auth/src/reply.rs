//! The plugin's answers: the gateway's JSON error shape
//! (`{"error":{"status":401,"code":"unauthorized","message":"...","request_id":"..."}}`)
//! and RFC 7235 / RFC 6750 `WWW-Authenticate` challenges.

use sluice_plugin_sdk::{Decision, Request};

/// Why a presented credential was refused, per method.
pub enum Challenge {
    /// A bad API key.
    Key(&'static str),
    /// Bad Basic credentials.
    Basic(&'static str),
    /// A bad bearer token, with the description.
    Bearer(String),
}

impl Challenge {
    /// The message for the JSON body.
    pub fn message(&self) -> String {
        match self {
            Challenge::Key(m) | Challenge::Basic(m) => (*m).to_owned(),
            Challenge::Bearer(d) => format!("invalid token: {d}"),
        }
    }

    /// The `WWW-Authenticate` value.
    pub fn header(&self, realm: &str) -> String {
        match self {
            Challenge::Key(_) => format!("Key realm=\"{realm}\""),
            Challenge::Basic(_) => format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
            Challenge::Bearer(d) => {
                let d: String = d.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect();
                format!("Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{d}\"")
            }
        }
    }
}

/// A JSON error answer with `WWW-Authenticate` challenges (one header each).
pub fn error(req: &Request<'_>, status: u16, code: &str, message: &str, challenges: &[String]) -> Decision {
    let mut error = serde_json::json!({ "status": status, "code": code, "message": message });
    // The id the gateway gave the request (generated, or the client's when trusted),
    // under whatever header the listener uses.
    let id = req.request_id();
    if !id.is_empty() {
        error["request_id"] = serde_json::Value::String(id);
    }
    sluice_plugin_sdk::metrics::counter_add(if status == 401 { "unauthorized" } else { "forbidden" }, 1);
    let mut d = Decision::respond_json(status, &serde_json::json!({ "error": error }));
    for c in challenges {
        d = d.with_header("www-authenticate", c.as_str());
    }
    d.with_header("cache-control", "no-store")
}
