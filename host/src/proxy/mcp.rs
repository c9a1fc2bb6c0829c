//! The MCP target: an endpoint of the Model Context Protocol's Streamable HTTP
//! transport whose tools are the gateway's own routes.
//!
//! ```text
//! POST (JSON-RPC 2.0) ─ Origin check ─ session ─┬─ initialize → version, session id
//!                                               ├─ ping, tools/list
//!                                               └─ tools/call → a request to the
//!                                                  tool's path, through [`super::handle`]
//!                                                  (routing, that route's plugins,
//!                                                  its target, its log line)
//! ```
//!
//! It speaks the protocol revisions of the `initialize` handshake ([`VERSIONS`]); a
//! client probing for a later revision first (`server/discover`) gets "method not
//! found" and falls back to the handshake, as the spec says. Sessions are stateless:
//! the id is a nonce and its HMAC under a key of the process, so any config
//! generation accepts it (a reload ends no session) and nothing is stored per
//! session. The server opens no stream of its own, so `GET` (and `DELETE`) answer
//! `405`.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use crate::body::{self, Body};
use crate::config::{DEFAULT_MCP_NAME, McpConfig};
use crate::error::ProxyError;
use crate::exchange::Exchange;
use crate::listener::ConnInfo;
use crate::observability::trace::{hex, id_hex};
use crate::plugins::Annotations;
use crate::snapshot::Snapshot;

/// The protocol revisions spoken, newest first.
pub const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The session header.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The header naming the revision a session speaks, on every request after
/// `initialize`.
const VERSION_HEADER: &str = "mcp-protocol-version";
/// The most of a tool's answer passed back to the agent.
const MAX_RESULT_BYTES: usize = 8 << 20;
/// The caller's headers a tool call carries, so the tool's route sees who calls.
const CREDENTIALS: [header::HeaderName; 3] =
    [header::AUTHORIZATION, header::HeaderName::from_static("x-api-key"), header::COOKIE];

/// An endpoint, built from its config.
#[derive(Debug)]
pub struct McpEndpoint {
    name: String,
    instructions: Option<String>,
    origins: Vec<String>,
    tools: Vec<Tool>,
}

#[derive(Debug)]
struct Tool {
    name: String,
    description: String,
    method: Method,
    path: String,
    /// Its own input schema; without one, the route's (a prompt template's), else
    /// `{"type": "object"}`.
    schema: Option<Value>,
}

impl McpEndpoint {
    /// The endpoint of a validated config.
    pub fn new(cfg: &McpConfig) -> McpEndpoint {
        let tools = cfg
            .tools
            .iter()
            .map(|t| Tool {
                name: t.name.clone(),
                description: t.description.clone(),
                method: t.method.as_deref().and_then(|m| m.parse().ok()).unwrap_or(Method::POST),
                path: t.path.clone(),
                schema: t.input_schema.clone(),
            })
            .collect();
        McpEndpoint {
            name: cfg.name.clone().unwrap_or_else(|| DEFAULT_MCP_NAME.to_owned()),
            instructions: cfg.instructions.clone(),
            origins: cfg.allowed_origins.clone(),
            tools,
        }
    }
}

/// Marks a request made by a tool call: it may not reach an MCP endpoint again.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall;

/// JSON-RPC error codes.
mod code {
    pub const PARSE: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    /// The session id is not one this gateway gave.
    pub const UNKNOWN_SESSION: i64 = -32001;
}

/// Answers one request to the endpoint `ep` (body limited to `max_body`).
pub async fn respond<B>(
    req: Request<B>,
    conn: &Arc<ConnInfo>,
    snapshot: &Arc<Snapshot>,
    ep: &McpEndpoint,
    max_body: u64,
    ex: &mut Exchange,
) -> Result<Response<Body>, ProxyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<crate::body::BoxError>,
{
    if req.extensions().get::<ToolCall>().is_some() {
        return Err(ProxyError::BadRequest("a tool call cannot reach an MCP endpoint"));
    }
    if let Some(origin) = req.headers().get(header::ORIGIN)
        && !ep.origins.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    {
        return Ok(error(
            StatusCode::FORBIDDEN,
            Value::Null,
            code::INVALID_REQUEST,
            "this Origin may not call the endpoint",
        ));
    }
    if req.method() != Method::POST {
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            Value::Null,
            code::INVALID_REQUEST,
            "the endpoint takes POST only",
        );
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let limited = Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX));
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ProxyError::BodyTooLarge { limit: max_body });
        }
        Err(e) => return Err(ProxyError::ClientBody(e)),
    };
    let Ok(message) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(error(StatusCode::BAD_REQUEST, Value::Null, code::PARSE, "the body is not JSON"));
    };
    let Some(obj) = message.as_object() else {
        let why = if message.is_array() { "batches are not supported" } else { "a message is a JSON object" };
        return Ok(error(StatusCode::BAD_REQUEST, Value::Null, code::INVALID_REQUEST, why));
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    let method = obj.get("method").and_then(Value::as_str);
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Ok(error(StatusCode::BAD_REQUEST, id, code::INVALID_REQUEST, "`jsonrpc` must be \"2.0\""));
    }
    if !(id.is_null() || id.is_string() || id.is_i64() || id.is_u64()) {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            code::INVALID_REQUEST,
            "an id is a string or an integer",
        ));
    }

    if method == Some("initialize") {
        if id.is_null() {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                id,
                code::INVALID_REQUEST,
                "initialize is a request (it has an id)",
            ));
        }
        let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
        let version = VERSIONS.iter().find(|v| **v == asked).unwrap_or(&VERSIONS[0]);
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": ep.name, "version": env!("CARGO_PKG_VERSION")},
        });
        if let Some(i) = &ep.instructions {
            result["instructions"] = Value::String(i.clone());
        }
        let mut resp = ok(id, result);
        let session = HeaderValue::from_str(&new_session()).expect("hex is a valid header value");
        resp.headers_mut().insert(SESSION_HEADER, session);
        return Ok(resp);
    }
    match parts.headers.get(SESSION_HEADER) {
        None => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                id,
                code::INVALID_REQUEST,
                "no Mcp-Session-Id: send initialize first",
            ));
        }
        Some(s) if !valid_session(s.as_bytes()) => {
            return Ok(error(
                StatusCode::NOT_FOUND,
                id,
                code::UNKNOWN_SESSION,
                "unknown session: send initialize again",
            ));
        }
        Some(_) => {}
    }
    if let Some(v) = parts.headers.get(VERSION_HEADER)
        && !VERSIONS.iter().any(|known| known.as_bytes() == v.as_bytes())
    {
        let why = format!("unsupported protocol version; supported: {}", VERSIONS.join(", "));
        return Ok(error(StatusCode::BAD_REQUEST, id, code::INVALID_REQUEST, &why));
    }
    if let Some(m) = method {
        note(ex, "method", m);
    }
    // A notification, or the client's answer to a request: nothing to say back.
    let Some(method) = method.filter(|_| !id.is_null()) else {
        return Ok(accepted());
    };
    match method {
        "ping" => Ok(ok(id, json!({}))),
        "tools/list" => {
            let tools: Vec<Value> = ep
                .tools
                .iter()
                .map(|t| {
                    let schema = t.schema.clone().unwrap_or_else(|| route_schema(t, &parts, snapshot, ex));
                    json!({"name": t.name, "description": t.description, "inputSchema": schema})
                })
                .collect();
            Ok(ok(id, json!({ "tools": tools })))
        }
        "tools/call" => {
            let Some(tool) = params
                .get("name")
                .and_then(Value::as_str)
                .and_then(|n| ep.tools.iter().find(|t| t.name == n))
            else {
                return Ok(error(StatusCode::OK, id, code::INVALID_PARAMS, "unknown tool"));
            };
            let arguments = params.get("arguments").cloned().unwrap_or_else(|| json!({}));
            note(ex, "tool", &tool.name);
            note(ex, "args_bytes", &arguments.to_string().len().to_string());
            if !arguments.is_object() {
                return Ok(error(StatusCode::OK, id, code::INVALID_PARAMS, "`arguments` is an object"));
            }
            let result = call(tool, &arguments, &parts.headers, conn, snapshot).await;
            Ok(ok(id, result))
        }
        _ => Ok(error(StatusCode::OK, id, code::METHOD_NOT_FOUND, "method not found")),
    }
}

/// The input schema of the route `tool`'s path leads to on this listener, when it is
/// a prompt template; else any object.
fn route_schema(tool: &Tool, caller: &http::request::Parts, snapshot: &Snapshot, ex: &Exchange) -> Value {
    let (path, query) = match tool.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tool.path.as_str(), None),
    };
    let host = super::headers::request_host(&caller.uri, &caller.headers);
    ex.served
        .as_deref()
        .and_then(|s| s.router.find_with_query(host, &tool.method, path, query, &caller.headers))
        .and_then(|found| snapshot.routes[found.route].input_schema.as_deref().cloned())
        .unwrap_or_else(|| json!({"type": "object"}))
}

/// Notes `mcp.key=value` for the request's access-log line, call log and span.
fn note(ex: &mut Exchange, key: &str, value: &str) {
    static PLUGIN: OnceLock<Arc<str>> = OnceLock::new();
    let plugin = PLUGIN.get_or_init(|| Arc::from("mcp"));
    ex.annotations.get_or_insert_with(Annotations::default).set(plugin, key.to_owned(), value.to_owned());
}

/// Runs `tool` with `arguments`: a request to its path on this gateway, with the
/// caller's host and credentials. The route's answer is the tool's result, an error
/// result for a status of 400 or more.
async fn call(
    tool: &Tool,
    arguments: &Value,
    caller: &http::HeaderMap,
    conn: &Arc<ConnInfo>,
    snapshot: &Arc<Snapshot>,
) -> Value {
    let body = Bytes::from(serde_json::to_vec(arguments).unwrap_or_default());
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = tool.method.clone();
    *req.uri_mut() = tool.path.parse().unwrap_or_default();
    let headers = req.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    for name in std::iter::once(header::HOST).chain(CREDENTIALS) {
        for v in caller.get_all(&name) {
            headers.append(name.clone(), v.clone());
        }
    }
    req.extensions_mut().insert(ToolCall);
    let resp = super::handle_own(req, Arc::clone(conn), Arc::clone(snapshot)).await;
    let status = resp.status();
    let failed = status.as_u16() >= 400;
    let text = match read_answer(resp.into_body()).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(why) => return json!({"content": [{"type": "text", "text": why}], "isError": true}),
    };
    let text = if failed && text.is_empty() { format!("the tool answered {status}") } else { text };
    json!({"content": [{"type": "text", "text": text}], "isError": failed})
}

/// A tool's answer, up to [`MAX_RESULT_BYTES`]. (Read frame by frame: a `Limited`
/// over the boxed body would not be `Send` inside this future.)
async fn read_answer(mut body: Body) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the tool's answer failed: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_RESULT_BYTES {
                return Err(format!("the tool's answer is larger than {MAX_RESULT_BYTES} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

fn json_response(status: StatusCode, doc: &Value) -> Response<Body> {
    let mut resp = Response::new(body::full(serde_json::to_vec(doc).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn ok(id: Value, result: Value) -> Response<Body> {
    json_response(StatusCode::OK, &json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn error(status: StatusCode, id: Value, code: i64, message: &str) -> Response<Body> {
    json_response(status, &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
}

fn accepted() -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// The process's key for session ids.
fn session_key() -> &'static ring::hmac::Key {
    static KEY: OnceLock<ring::hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).expect("the system's random source works")
    })
}

/// A new session id: 16 random bytes and their HMAC, in hex.
fn new_session() -> String {
    let mut nonce = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .expect("the system's random source works");
    let tag = ring::hmac::sign(session_key(), &nonce);
    format!("{}{}", id_hex(&nonce), id_hex(tag.as_ref()))
}

/// True for an id [`new_session`] made in this process.
fn valid_session(id: &[u8]) -> bool {
    let Some((nonce, tag)) = id.split_at_checked(32) else { return false };
    match (hex::<16>(nonce), hex::<32>(tag)) {
        (Some(nonce), Some(tag)) => ring::hmac::verify(session_key(), &nonce, &tag).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_the_processs_own_and_nothing_else_passes() {
        let id = new_session();
        assert_eq!(id.len(), 96);
        assert!(valid_session(id.as_bytes()));
        assert_ne!(id, new_session(), "each initialize gets its own");
        let mut forged = id.clone().into_bytes();
        forged[0] = if forged[0] == b'0' { b'1' } else { b'0' };
        assert!(!valid_session(&forged));
        assert!(!valid_session(b"not-a-session"));
        assert!(!valid_session(&[b'z'; 96]));
    }
}
