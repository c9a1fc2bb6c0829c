//! Built-in plugin `mcp`: an MCP server behind the gateway (Model Context Protocol,
//! Streamable HTTP), with its tools under the route's policies.
//!
//! ```yaml
//! routes:
//!   - name: tools
//!     match: { path: /mcp }
//!     target: { upstream: tool-server }
//!     plugins:
//!       - name: auth
//!         config: { api_key: { sources: [{ bearer: authorization }], keys: [...] } }
//!       - name: mcp
//!         config: { allow_tools: [search, get_weather] }
//!       - name: rate-limit                 # per consumer and per tool
//!         grants: { kv: true }
//!         config: { key: [consumer, { header: x-mcp-tool }], limits: [...] }
//! ```
//!
//! - **Every JSON-RPC request is read** (its `POST` body): the access log, the call log
//!   and the span get `mcp.method`, and for `tools/call` `mcp.tool` and
//!   `mcp.args_bytes` (the size of the arguments).
//! - **`tools/call`** of a tool not in `allow_tools` is answered by the gateway with a
//!   JSON-RPC error (`-32602`, HTTP 200, as the server itself would refuse an unknown
//!   tool) and never reaches the server; an allowed one goes on with the tool's name in
//!   `tool_header` (`x-mcp-tool`), which later plugins key on (a rate limit per tool)
//!   and the server may read. The client's own `x-mcp-tool` is always removed.
//! - **`tools/list`** answers are filtered to `allow_tools`, whether the server answers
//!   with JSON or with an event stream, so an agent never sees a tool it may not call.
//! - Everything else (`initialize`, notifications, the server's `GET` event stream,
//!   `DELETE`) passes through untouched and unbuffered.
#![deny(clippy::let_underscore_must_use)]

mod filter;

use std::cell::RefCell;

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, Response, export, log};

use filter::ListFilter;

/// Default `tool_header`.
pub const DEFAULT_TOOL_HEADER: &str = "x-mcp-tool";
/// The context key under which the request phase leaves the method for the response.
const METHOD_KEY: &str = "method";

/// The `mcp` plugin's config.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The tools clients may see and call (exact names). Default: every tool the
    /// server has.
    #[serde(default)]
    pub allow_tools: Option<Vec<String>>,
    /// The request header that carries the called tool's name on `tools/call`, for
    /// later plugins (`rate-limit`'s `{ header: x-mcp-tool }` key part) and the
    /// server. Default `x-mcp-tool`.
    #[serde(default = "default_tool_header")]
    pub tool_header: String,
}

fn default_tool_header() -> String {
    DEFAULT_TOOL_HEADER.to_owned()
}

/// The plugin: its config, and the `tools/list` answer being filtered.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct Mcp {
    cfg: McpConfig,
    #[serde(skip)]
    listing: RefCell<Option<ListFilter>>,
}

impl Plugin for Mcp {
    fn phases(&self) -> Phases {
        let base = Phases::REQUEST | Phases::REQUEST_BODY;
        match self.cfg.allow_tools {
            Some(_) => base | Phases::RESPONSE | Phases::RESPONSE_CHUNK,
            None => base,
        }
    }

    fn init(&mut self) -> Result<(), String> {
        let h = &self.cfg.tool_header;
        if !sluice_plugin_sdk::is_header_name(h) || sluice_plugin_sdk::is_managed_header(h) {
            return Err(format!("tool_header: `{h}` is not a header a plugin may set"));
        }
        Ok(())
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        if let Err(e) = req.remove_header(&self.cfg.tool_header) {
            return Decision::fault(format_args!("could not remove `{}`: {e}", self.cfg.tool_header));
        }
        if req.method() != "POST" {
            return Decision::Continue;
        }
        let Ok(body) = req.body() else { return Decision::Continue };
        // Not JSON-RPC: the server answers it as it sees fit.
        let Ok(message) = serde_json::from_slice::<Value>(&body) else { return Decision::Continue };
        let Some(method) = message.get("method").and_then(Value::as_str) else { return Decision::Continue };
        log::annotate("method", method);
        req.set_context(METHOD_KEY, method);
        if method != "tools/call" {
            return Decision::Continue;
        }
        let params = message.get("params").unwrap_or(&Value::Null);
        let tool = params.get("name").and_then(Value::as_str).unwrap_or_default();
        let args = params.get("arguments").map_or(0, |a| a.to_string().len());
        log::annotate("tool", tool);
        log::annotate("args_bytes", &args.to_string());
        if !self.allowed(tool) {
            let id = message.get("id").cloned().unwrap_or(Value::Null);
            let refusal = json!({"jsonrpc": "2.0", "id": id,
                                 "error": {"code": -32602, "message": format!("tool `{tool}` is not allowed here")}});
            log::annotate("refused", "not_allowed");
            return Decision::respond_json(200, &refusal);
        }
        match req.set_header(&self.cfg.tool_header, tool) {
            Ok(()) => Decision::Continue,
            // A name that is no header value (a control character) is no tool name.
            Err(_) => Decision::respond_json(
                200,
                &json!({"jsonrpc": "2.0", "id": message.get("id").cloned().unwrap_or(Value::Null),
                        "error": {"code": -32602, "message": "invalid tool name"}}),
            ),
        }
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        let listing = resp.context(METHOD_KEY).as_deref() == Some("tools/list");
        *self.listing.borrow_mut() = match (&self.cfg.allow_tools, listing) {
            (Some(allow), true) => {
                let stream = resp.header("content-type").is_some_and(|t| t.starts_with("text/event-stream"));
                Some(ListFilter::new(allow.clone(), stream))
            }
            _ => None,
        };
        Decision::Continue
    }

    fn on_response_chunk(&self, chunk: Vec<u8>, last: bool) -> Vec<u8> {
        let mut slot = self.listing.borrow_mut();
        let Some(filter) = slot.as_mut() else { return chunk };
        let out = filter.push(&chunk, last);
        if last {
            *slot = None;
        }
        out
    }
}

impl Mcp {
    fn allowed(&self, tool: &str) -> bool {
        self.cfg.allow_tools.as_ref().is_none_or(|allow| allow.iter().any(|t| t == tool))
    }
}

export!(Mcp);

#[cfg(test)]
mod tests;
