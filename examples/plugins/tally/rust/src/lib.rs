//! Requires a header, counts the calls per value of that header in `kv`, and reports
//! the count on the response as `x-calls`.
//!
//! ```yaml
//! plugins:
//!   - name: tally
//!     grants: { kv: true }
//!     config: { header: x-team }
//! ```

use sluice_plugin_sdk::serde_json::{Value, json};
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, Response, export, kv};

/// The header used when the config names none.
const DEFAULT_HEADER: &str = "x-team";

/// The context key that carries the count from the request to the response phase.
const CALLS: &str = "calls";

/// The plugin. It takes its config as any JSON value and checks it in `init`, so the
/// config errors read exactly as documented instead of as serde's messages.
#[derive(serde::Deserialize)]
#[serde(from = "Value")]
struct Counter {
    /// The config as the route gave it (consumed by `init`).
    config: Value,
    /// The header whose value is counted.
    header: String,
}

impl From<Value> for Counter {
    fn from(config: Value) -> Self {
        Counter { config, header: String::new() }
    }
}

/// A JSON error answer: `{"error":"..."}`.
fn error(status: u16, message: &str) -> Decision {
    Decision::respond_json(status, &json!({ "error": message }))
}

impl Plugin for Counter {
    const PHASES: Phases = Phases::REQUEST.union(Phases::RESPONSE);

    fn init(&mut self) -> Result<(), String> {
        let Value::Object(fields) = std::mem::take(&mut self.config) else {
            return Err("config must be a JSON object".into());
        };
        self.header = match fields.get("header") {
            None => DEFAULT_HEADER.to_owned(),
            Some(Value::String(h)) if !h.is_empty() => h.clone(),
            Some(_) => return Err("`header` must be a non-empty string".into()),
        };
        Ok(())
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let value = match req.header(&self.header) {
            Some(v) if !v.is_empty() => v,
            _ => return error(400, &format!("missing {} header", self.header)),
        };
        match kv::increment(&format!("calls:{value}"), 1, None) {
            Ok(n) => {
                req.set_context(CALLS, &n.to_string());
                Decision::Continue
            }
            Err(_) => error(503, "kv unavailable"),
        }
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        if let Some(calls) = resp.context(CALLS) {
            // A write the gateway refuses is a fault, never silently skipped.
            if let Err(e) = resp.set_header("x-calls", &calls) {
                return Decision::fault(format_args!("x-calls not set: {e}"));
            }
        }
        Decision::Continue
    }
}

export!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::{self, FakeRequest};

    fn body(d: &Decision) -> String {
        match d {
            Decision::Respond(r) => String::from_utf8(r.body.clone()).unwrap(),
            Decision::Continue => panic!("expected a response, got continue"),
        }
    }

    fn content_type(d: &Decision) -> Option<&str> {
        match d {
            Decision::Respond(r) => {
                r.headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str())
            }
            Decision::Continue => None,
        }
    }

    #[test]
    fn a_request_without_the_header_gets_400() {
        let p: Counter = testing::configure(r#"{"header": "x-team"}"#).unwrap();
        for mut req in
            [FakeRequest::new("GET", "/orders"), FakeRequest::new("GET", "/orders").with_header("x-team", "")]
        {
            let d = p.on_request(&mut req.as_request());
            assert_eq!(d.status(), Some(400));
            assert_eq!(content_type(&d), Some("application/json"));
            assert_eq!(body(&d), r#"{"error":"missing x-team header"}"#);
        }
    }

    #[test]
    fn calls_are_counted_per_value_and_reported() {
        let p: Counter = testing::configure(r#"{"header": "x-team"}"#).unwrap();
        for (team, expected) in [("blue", "1"), ("blue", "2"), ("red", "1")] {
            let mut req = FakeRequest::new("GET", "/orders").with_header("x-team", team);
            assert!(p.on_request(&mut req.as_request()).is_continue());
            let mut resp = req.response(200);
            assert!(p.on_response(&mut resp.as_response()).is_continue());
            assert_eq!(resp.header("x-calls").as_deref(), Some(expected), "{team}");
        }
        assert_eq!(testing::kv_value("calls:blue").as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn a_response_without_a_count_is_left_alone() {
        let p: Counter = testing::configure("{}").unwrap();
        let mut resp = FakeRequest::new("GET", "/").response(502);
        assert!(p.on_response(&mut resp.as_response()).is_continue());
        assert_eq!(resp.header("x-calls"), None);
    }

    #[test]
    fn the_header_defaults_to_x_team_and_can_be_changed() {
        let default: Counter = testing::configure("{}").unwrap();
        assert_eq!(default.header, "x-team");
        let other: Counter = testing::configure(r#"{"header": "x-tenant", "other": 1}"#).unwrap();
        let d =
            other.on_request(&mut FakeRequest::new("GET", "/").with_header("x-team", "blue").as_request());
        assert_eq!(body(&d), r#"{"error":"missing x-tenant header"}"#);
    }

    #[test]
    fn a_kv_error_gets_503() {
        let p: Counter = testing::configure("{}").unwrap();
        // `increment` fails on a value that is not a number.
        kv::set("calls:blue", b"not a number", None).unwrap();
        let mut req = FakeRequest::new("GET", "/").with_header("x-team", "blue");
        let d = p.on_request(&mut req.as_request());
        assert_eq!(d.status(), Some(503));
        assert_eq!(content_type(&d), Some("application/json"));
        assert_eq!(body(&d), r#"{"error":"kv unavailable"}"#);
    }

    #[test]
    fn bad_configs_are_refused() {
        for config in ["[]", "\"x-team\"", "3", "null"] {
            let err = testing::configure::<Counter>(config).err();
            assert_eq!(err.as_deref(), Some("config must be a JSON object"), "{config}");
        }
        for config in [r#"{"header": ""}"#, r#"{"header": 1}"#, r#"{"header": null}"#, r#"{"header": ["a"]}"#]
        {
            let err = testing::configure::<Counter>(config).err();
            assert_eq!(err.as_deref(), Some("`header` must be a non-empty string"), "{config}");
        }
    }
}
