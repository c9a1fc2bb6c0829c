//! The `mcp` route target: an MCP endpoint (Model Context Protocol, Streamable HTTP
//! transport) whose tools are the gateway's own routes. Checked by [`validate_mcp`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Problem;

/// Default `serverInfo.name` of an MCP endpoint.
pub const DEFAULT_MCP_NAME: &str = "sluice";

/// An MCP endpoint: `target: { mcp: { tools: [...] } }`. Agents connect with any MCP
/// client (Streamable HTTP: JSON-RPC 2.0 over `POST`), list the tools and call them;
/// a call is a request to the tool's `path` on this gateway, through that route's
/// plugins (auth, rate limits, logging) like any other request.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The name the endpoint gives in `initialize` (`serverInfo.name`). Default
    /// `sluice`.
    #[serde(default)]
    pub name: Option<String>,
    /// What `initialize` tells the agent about these tools (`instructions`).
    #[serde(default)]
    pub instructions: Option<String>,
    /// Web origins (`https://app.example.com`) whose pages may call the endpoint. A
    /// request with any other `Origin` header is refused `403` (DNS rebinding); one
    /// without is a server-side client and goes on. Default: none.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The tools, in the order `tools/list` gives them.
    pub tools: Vec<McpToolConfig>,
}

/// One tool: a request the gateway makes to itself when the tool is called.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpToolConfig {
    /// The tool's name (1 to 64 of `A-Z a-z 0-9 _ - .`), unique in the endpoint.
    pub name: String,
    /// What the tool does, for the model choosing it.
    #[serde(default)]
    pub description: String,
    /// The path a call requests (`/api/summarize/en`), with the call's arguments as
    /// its JSON body. The request goes through routing like any other: the route it
    /// lands on runs its plugins and target. The caller's `authorization`,
    /// `x-api-key` and `cookie` headers go with it.
    pub path: String,
    /// The method of that request. Default `POST`.
    #[serde(default)]
    pub method: Option<String>,
    /// The JSON Schema of the arguments (`inputSchema`), an object schema. Default:
    /// the input schema of the route the path leads to when it is a prompt template
    /// (the `ai` plugin's `prompt.input_schema`), else `{"type": "object"}`.
    #[serde(default)]
    pub input_schema: Option<serde_json::Value>,
}

/// Every problem of the MCP target of `routes[i]`.
pub fn validate_mcp(m: &McpConfig, at: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    if m.tools.is_empty() {
        problems.push(Problem::new(format!("{at}.tools"), "an MCP endpoint needs at least one tool"));
    }
    for (k, origin) in m.allowed_origins.iter().enumerate() {
        if !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.ends_with('/') {
            problems.push(Problem::new(
                format!("{at}.allowed_origins[{k}]"),
                format!("`{origin}` is not an origin (scheme://host[:port], no path)"),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (k, t) in m.tools.iter().enumerate() {
        let here = format!("{at}.tools[{k}]");
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if t.name.is_empty() || t.name.len() > 64 || !t.name.chars().all(valid) {
            problems.push(Problem::new(
                format!("{here}.name"),
                format!("`{}` is not a tool name (1 to 64 of A-Z a-z 0-9 _ - .)", t.name),
            ));
        } else if !seen.insert(t.name.as_str()) {
            problems.push(Problem::new(format!("{here}.name"), format!("a second tool named `{}`", t.name)));
        }
        if !t.path.starts_with('/') || t.path.parse::<http::uri::PathAndQuery>().is_err() {
            problems.push(Problem::new(
                format!("{here}.path"),
                format!("`{}` is not a request path (it starts with `/`)", t.path),
            ));
        }
        if let Some(m) = &t.method
            && m.parse::<http::Method>().is_err()
        {
            problems.push(Problem::new(format!("{here}.method"), format!("`{m}` is not an HTTP method")));
        }
        if let Some(s) = &t.input_schema
            && s.get("type").and_then(serde_json::Value::as_str) != Some("object")
        {
            problems.push(Problem::new(
                format!("{here}.input_schema"),
                "an input schema is an object schema (`type: object`)",
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, path: &str) -> McpToolConfig {
        McpToolConfig {
            name: name.into(),
            description: String::new(),
            path: path.into(),
            method: None,
            input_schema: None,
        }
    }

    #[test]
    fn every_problem_of_an_endpoint_is_reported_at_its_field() {
        let m = McpConfig {
            allowed_origins: vec!["https://ok.example".into(), "ok.example".into()],
            tools: vec![
                tool("a", "/a"),
                tool("a", "/b"),
                tool("bad name", "no-slash"),
                McpToolConfig {
                    method: Some("G T".into()),
                    input_schema: Some(serde_json::json!({"type": "string"})),
                    ..tool("c", "/c")
                },
            ],
            ..McpConfig::default()
        };
        let paths: Vec<String> =
            validate_mcp(&m, "routes[0].target.mcp").into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "routes[0].target.mcp.allowed_origins[1]",
                "routes[0].target.mcp.tools[1].name",
                "routes[0].target.mcp.tools[2].name",
                "routes[0].target.mcp.tools[2].path",
                "routes[0].target.mcp.tools[3].method",
                "routes[0].target.mcp.tools[3].input_schema",
            ]
        );
        let empty = McpConfig::default();
        assert_eq!(validate_mcp(&empty, "t")[0].path, "t.tools");
    }
}
