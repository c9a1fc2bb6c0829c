//! A starting point: refuses requests that lack a header, and lets the rest through.
//! Change the config struct and the rule in `on_request`, run `./test.sh`.
//!
//! ```yaml
//! plugins:
//!   - name: starter
//!     config: { required_header: x-tenant }
//! ```

use sluice_plugin_sdk::serde_json::json;
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

/// The route's `config:`. A field this struct does not have is a config error (at
/// that field of the gateway's config file), so a typo cannot pass silently.
#[derive(serde::Deserialize)]
struct Starter {
    /// Requests without this header are answered `400`.
    #[serde(default = "default_header")]
    required_header: String,
}

fn default_header() -> String {
    "x-tenant".to_owned()
}

impl Plugin for Starter {
    /// Only the request phase is called.
    const PHASES: Phases = Phases::REQUEST;

    /// Checks the config once, when the gateway loads it.
    fn init(&mut self) -> Result<(), String> {
        if self.required_header.is_empty() {
            return Err("`required_header` must not be empty".into());
        }
        Ok(())
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        if req.header(&self.required_header).is_none() {
            let message = format!("missing {} header", self.required_header);
            return Decision::respond_json(400, &json!({ "error": message }));
        }
        Decision::Continue
    }
}

export!(Starter);

#[cfg(test)]
mod tests {
    use super::Starter;
    use sluice_plugin_sdk::Plugin;
    use sluice_plugin_sdk::testing::{FakeRequest, configure};

    #[test]
    fn requests_need_the_header() {
        let plugin: Starter = configure(r#"{"required_header": "x-tenant"}"#).unwrap();
        let mut without = FakeRequest::new("GET", "/orders");
        assert_eq!(plugin.on_request(&mut without.as_request()).status(), Some(400));
        let mut with = FakeRequest::new("GET", "/orders").with_header("x-tenant", "acme");
        assert!(plugin.on_request(&mut with.as_request()).is_continue());
        assert!(configure::<Starter>(r#"{"required_heder": "x"}"#).is_err(), "typos are errors");
    }
}
