//! `guard`: adds a header to every request and answers `403` for a blocked path prefix.
//!
//! ```yaml
//! plugins:
//!   - name: guard
//!     config: { blocked_prefix: /admin, header: x-guarded }
//! ```

use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

/// The plugin's config (and the plugin itself).
#[derive(serde::Deserialize)]
struct Guard {
    /// Requests whose path starts with this are refused with 403.
    blocked_prefix: String,
    /// Header set to `1` on every request that passes. Default `x-guarded`.
    #[serde(default = "default_header")]
    header: String,
}

fn default_header() -> String {
    "x-guarded".into()
}

impl Plugin for Guard {
    const PHASES: Phases = Phases::REQUEST;

    fn init(&mut self) -> Result<(), String> {
        if !self.blocked_prefix.starts_with('/') {
            return Err(format!("blocked_prefix must start with `/`, got `{}`", self.blocked_prefix));
        }
        Ok(())
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        if req.path().starts_with(&self.blocked_prefix) {
            return Decision::respond_json(403, &serde_json_error("blocked by policy"));
        }
        match req.set_header(&self.header, "1") {
            Ok(()) => Decision::Continue,
            Err(e) => Decision::respond(500, format!("guard: cannot set header: {e:?}")),
        }
    }
}

fn serde_json_error(message: &str) -> sluice_plugin_sdk::serde_json::Value {
    sluice_plugin_sdk::serde_json::json!({ "error": message })
}

export!(Guard);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::{self, FakeRequest};

    #[test]
    fn blocks_the_prefix_and_tags_the_rest() {
        let guard: Guard = testing::configure(r#"{"blocked_prefix": "/admin"}"#).unwrap();
        let mut blocked = FakeRequest::new("GET", "/admin/users");
        assert_eq!(guard.on_request(&mut blocked.as_request()).status(), Some(403));
        let mut ok = FakeRequest::new("GET", "/api");
        assert!(guard.on_request(&mut ok.as_request()).is_continue());
        assert_eq!(ok.header("x-guarded").as_deref(), Some("1"));
    }

    #[test]
    fn rejects_a_relative_prefix() {
        let err = testing::configure::<Guard>(r#"{"blocked_prefix": "admin"}"#).err().unwrap();
        assert!(err.contains("must start with"), "{err}");
    }
}
