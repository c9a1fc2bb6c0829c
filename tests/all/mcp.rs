//! The MCP target: routes exposed as tools over MCP's Streamable HTTP transport, each
//! call going through its route's plugins; driven by hand (JSON-RPC over raw HTTP) and
//! by the official MCP Python SDK's client.

use serde_json::{Value, json};

use crate::harness::{AccessLog, Client, Reply, full, gateway, url};

/// A gateway with an MCP endpoint at `/mcp` and two tools: `echo` (the echo target,
/// open) and `whoami` (behind an API key, limited to two calls a minute per consumer).
/// The tool routes are named `tool-echo-{tag}` and `tool-whoami-{tag}`.
async fn start(tag: &str) -> sluice::Gateway {
    gateway(
        &r#"version: 1
listeners:
  - name: public
    address: 127.0.0.1:0
routes:
  - name: mcp
    match: { path: /mcp }
    target:
      mcp:
        name: test-tools
        instructions: Two tools.
        allowed_origins: [https://app.example]
        tools:
          - name: echo
            description: Describes the request it got.
            path: /tools/echo
            input_schema: { type: object, properties: { text: { type: string } }, required: [text] }
          - name: whoami
            description: Names the caller.
            path: /tools/whoami
  - name: tool-echo-TAG
    match: { path: /tools/echo }
    target: { echo: {} }
  - name: tool-whoami-TAG
    match: { path: /tools/whoami }
    target: { echo: {} }
    plugins:
      - name: auth
        config: { api_key: { sources: [{ bearer: authorization }], keys: [{ key: k-ann, consumer: ann }] } }
      - name: rate-limit
        config: { key: [consumer], limits: [{ name: per_minute, rate: 2, per: 1m, burst: 2 }] }
        grants: { kv: true }
"#
        .replace("TAG", tag),
    )
    .await
}

/// Posts one JSON-RPC message to `/mcp` with `headers`.
async fn rpc(gw: &sluice::Gateway, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut req = http::Request::post(url(gw.addr("public"), "/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Client::http1().send(req.body(full(body.to_owned())).unwrap()).await
}

/// `initialize`, then `notifications/initialized`: the session id.
async fn session(gw: &sluice::Gateway) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let reply = rpc(gw, &[], &init.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let id = reply.header("mcp-session-id").expect("a session id").to_owned();
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply =
        rpc(gw, &[("mcp-session-id", &id), ("mcp-protocol-version", "2025-06-18")], &done.to_string()).await;
    assert_eq!(reply.status, 202, "a notification is accepted: {}", reply.text());
    id
}

#[tokio::test]
async fn initialize_negotiates_the_version_and_gives_a_session() {
    let gw = start("init").await;
    for (asked, given) in
        [("2025-06-18", "2025-06-18"), ("2024-11-05", "2024-11-05"), ("1999-01-01", "2025-11-25")]
    {
        let init = json!({"jsonrpc": "2.0", "id": "a", "method": "initialize", "params": {"protocolVersion": asked}});
        let reply = rpc(&gw, &[], &init.to_string()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let r = reply.json();
        assert_eq!(r["id"], "a");
        assert_eq!(r["result"]["protocolVersion"], given, "asked {asked}");
        assert_eq!(r["result"]["serverInfo"]["name"], "test-tools");
        assert_eq!(r["result"]["instructions"], "Two tools.");
        assert_eq!(r["result"]["capabilities"]["tools"]["listChanged"], false);
        assert_eq!(reply.header("mcp-session-id").map(str::len), Some(96));
    }
}

#[tokio::test]
async fn tools_are_listed_and_a_call_runs_the_tools_route() {
    let gw = start("list").await;
    let log = AccessLog::get();
    let id = session(&gw).await;
    let s = [("mcp-session-id", id.as_str()), ("mcp-protocol-version", "2025-06-18")];

    let list = rpc(&gw, &s, r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#).await.json();
    let tools = list["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.iter().map(|t| t["name"].as_str().unwrap()).collect::<Vec<_>>(), ["echo", "whoami"]);
    assert_eq!(tools[0]["inputSchema"]["required"], json!(["text"]));
    assert_eq!(tools[1]["inputSchema"], json!({"type": "object"}), "the default schema");

    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"text": "hi there"}}});
    let reply = rpc(&gw, &s, &call.to_string()).await.json();
    assert_eq!(reply["id"], 3);
    assert_eq!(reply["result"]["isError"], false, "{reply}");
    let answer: Value =
        serde_json::from_str(reply["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    // The route got a POST of the arguments, as JSON.
    assert_eq!(answer["route"], "tool-echo-list");
    assert_eq!(answer["method"], "POST");
    assert_eq!(answer["headers"]["content-type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(answer["body"].as_str().unwrap()).unwrap(),
        json!({"text": "hi there"})
    );
    // The call is a request of its own in the access log.
    let lines = log.wait_for(1, |l| l.get("route").is_some_and(|r| r == "tool-echo-list")).await;
    assert_eq!(lines.len(), 1, "one line for the one call");
    assert_eq!(lines[0]["status"], "200");
    // And the endpoint's own line names the method and the tool.
    let outer = log
        .wait_for(1, |l| l.get("annotations").is_some_and(|a| a.contains("mcp.tool=echo mcp.args_bytes=19")))
        .await;
    assert!(outer.iter().any(|l| l["annotations"].starts_with("mcp.method=tools/call")), "{outer:?}");
}

#[tokio::test]
async fn a_tool_call_carries_the_callers_key_through_the_tools_auth_and_limits() {
    let gw = start("auth").await;
    let id = session(&gw).await;
    let call =
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "whoami"}}).to_string();
    // Without a key, the tool's route refuses: an error result, not a protocol error.
    let anonymous = rpc(&gw, &[("mcp-session-id", &id)], &call).await.json();
    assert_eq!(anonymous["result"]["isError"], true, "{anonymous}");
    assert!(
        anonymous["result"]["content"][0]["text"].as_str().unwrap().contains("unauthorized"),
        "{anonymous}"
    );
    // With the caller's key, the route sees the consumer, and its limit counts the calls.
    let keyed = [("mcp-session-id", id.as_str()), ("authorization", "Bearer k-ann")];
    for n in 1..=2 {
        let r = rpc(&gw, &keyed, &call).await.json();
        assert_eq!(r["result"]["isError"], false, "call {n}: {r}");
        let seen: Value = serde_json::from_str(r["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(seen["headers"]["x-consumer"], "ann", "{seen}");
    }
    let limited = rpc(&gw, &keyed, &call).await.json();
    assert_eq!(limited["result"]["isError"], true, "the third call in the minute: {limited}");
    assert!(limited["result"]["content"][0]["text"].as_str().unwrap().contains("rate_limited"), "{limited}");
}

#[tokio::test]
async fn bad_messages_get_json_rpc_errors_and_sessions_are_checked() {
    let gw = start("bad").await;
    let id = session(&gw).await;
    let s = [("mcp-session-id", id.as_str())];
    let code = |r: &Reply| r.json()["error"]["code"].as_i64().unwrap();

    let r = rpc(&gw, &s, "{not json").await;
    assert_eq!((r.status.as_u16(), code(&r)), (400, -32700), "parse error");
    let r = rpc(&gw, &s, r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).await;
    assert_eq!((r.status.as_u16(), code(&r)), (400, -32600), "no batches");
    let r = rpc(&gw, &s, r#"{"id":1,"method":"ping"}"#).await;
    assert_eq!((r.status.as_u16(), code(&r)), (400, -32600), "no jsonrpc member");
    let r = rpc(&gw, &s, r#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#).await;
    assert_eq!((r.status.as_u16(), code(&r)), (200, -32601), "unknown method");
    let r = rpc(&gw, &s, r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"nope"}}"#).await;
    assert_eq!((r.status.as_u16(), code(&r)), (200, -32602), "unknown tool");
    let r = rpc(
        &gw,
        &s,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":[1]}}"#,
    )
    .await;
    assert_eq!(code(&r), -32602, "arguments are an object");
    let r = rpc(&gw, &s, r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#).await;
    assert_eq!(r.json(), json!({"jsonrpc": "2.0", "id": 9, "result": {}}));

    // Sessions: none, forged, and a protocol version nobody negotiated.
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    assert_eq!(rpc(&gw, &[], ping).await.status, 400);
    let forged = format!("{}0", &id[..95]);
    let r = rpc(&gw, &[("mcp-session-id", if id.ends_with('0') { "x" } else { &forged })], ping).await;
    assert_eq!((r.status.as_u16(), code(&r)), (404, -32001));
    let r = rpc(&gw, &[("mcp-session-id", &id), ("mcp-protocol-version", "1999-01-01")], ping).await;
    assert_eq!(r.status, 400);

    // Only POST; an Origin must be listed.
    let get = Client::http1().get(&url(gw.addr("public"), "/mcp")).await;
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
    let r = rpc(&gw, &[("mcp-session-id", &id), ("origin", "https://evil.example")], ping).await;
    assert_eq!(r.status, 403);
    let r = rpc(&gw, &[("mcp-session-id", &id), ("origin", "https://app.example")], ping).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn the_official_mcp_python_client_lists_and_calls_the_tools() {
    let present = sluice_tests::runs("python3", &["-c", "import mcp.client.streamable_http"]);
    if !sluice_tests::have(present, "python3 with the `mcp` package", "pip install mcp==2.3.0") {
        return;
    }
    let gw = start("py").await;
    let script = r#"
import sys, json, asyncio, httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

async def main(url):
    http = httpx2.AsyncClient(headers={"authorization": "Bearer k-ann"})
    async with streamable_http_client(url, http_client=http) as (read, write, *_):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            print("server", init.server_info.name, init.protocol_version)
            tools = await session.list_tools()
            print("tools", ",".join(t.name for t in tools.tools))
            r = await session.call_tool("echo", {"text": "from python"})
            seen = json.loads(r.content[0].text)
            print("echo", r.is_error, json.loads(seen["body"])["text"])
            r = await session.call_tool("whoami", {})
            print("whoami", r.is_error, json.loads(r.content[0].text)["headers"]["x-consumer"])

asyncio.run(main(sys.argv[1]))
"#;
    let endpoint = url(gw.addr("public"), "/mcp");
    let stdout = python(script, endpoint).await;
    // The SDK probed for a later revision, then fell back to the handshake.
    assert!(stdout.contains("server test-tools 2025-11-25"), "{stdout}");
    assert!(stdout.contains("tools echo,whoami"), "{stdout}");
    assert!(stdout.contains("echo False from python"), "{stdout}");
    assert!(stdout.contains("whoami False ann"), "{stdout}");
}

/// An MCP server written with the official Python SDK, on a port of its own; killed
/// when dropped.
struct PyServer(std::process::Child, std::net::SocketAddr);

impl PyServer {
    /// Tools `add`, `shout` and `delete_everything`, at `/mcp`.
    async fn start() -> PyServer {
        let script = r#"
import sys
from mcp.server.mcpserver import MCPServer
server = MCPServer("upstream-tools")

@server.tool()
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b

@server.tool()
def shout(text: str) -> str:
    """Upper-cases a text."""
    return text.upper()

@server.tool()
def delete_everything() -> str:
    """Deletes everything."""
    return "deleted"

server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
"#;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = std::process::Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return PyServer(child, addr);
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the Python MCP server exited ({status}) before listening");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the Python MCP server did not listen on {addr} within 30 s");
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An MCP server behind the gateway (the official SDK's server, called by the official
/// SDK's client): the route's `mcp` plugin hides and refuses the tools not allowed, a
/// rate limit keyed on the tool counts each tool apart, and the access log names each
/// call's tool.
#[tokio::test]
async fn an_mcp_server_behind_the_gateway_has_its_tools_filtered_limited_and_logged() {
    let present =
        sluice_tests::runs("python3", &["-c", "import mcp.server.mcpserver, mcp.client.streamable_http"]);
    if !sluice_tests::have(present, "python3 with the `mcp` package", "pip install mcp==2.3.0") {
        return;
    }
    let upstream = PyServer::start().await;
    let log = AccessLog::get();
    let gw = gateway(&format!(
        r#"version: 1
listeners:
  - name: public
    address: 127.0.0.1:0
upstreams:
  tool-server:
    targets: [{{ address: "{}" }}]
routes:
  - name: proxied-mcp
    match: {{ path: /mcp }}
    target: {{ upstream: tool-server }}
    plugins:
      - name: auth
        config: {{ api_key: {{ sources: [{{ bearer: authorization }}], keys: [{{ key: k-ann, consumer: ann }}] }} }}
      - name: mcp
        config: {{ allow_tools: [add, shout] }}
      - name: rate-limit
        grants: {{ kv: true }}
        config:
          key: [consumer]
          limits:
            - {{ name: per_tool, rate: 2, per: 1m, key: [consumer, {{ header: x-mcp-tool }}], skip_absent: true }}
"#,
        upstream.1
    ))
    .await;
    let script = r#"
import sys, asyncio, httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

async def main(url):
    http = httpx2.AsyncClient(headers={"authorization": "Bearer k-ann"})
    async with streamable_http_client(url, http_client=http) as (read, write, *_):
        async with ClientSession(read, write) as session:
            await session.initialize()
            print("tools", ",".join(t.name for t in (await session.list_tools()).tools))
            r = await session.call_tool("add", {"a": 2, "b": 3})
            print("add", r.is_error, r.content[0].text)
            for i in range(3):
                try:
                    r = await session.call_tool("shout", {"text": "hi"})
                    print("shout", i, r.is_error, r.content[0].text)
                except Exception as e:
                    print("shout", i, "refused", type(e).__name__, str(e)[:200].replace("\n", " "))
            try:
                r = await session.call_tool("delete_everything", {})
                print("delete", r.is_error, r.content[0].text if r.content else "")
            except Exception as e:
                print("delete", "refused", type(e).__name__, str(e)[:200].replace("\n", " "))

asyncio.run(main(sys.argv[1]))
"#;
    let endpoint = url(gw.addr("public"), "/mcp");
    let stdout = python(script, endpoint).await;
    assert!(stdout.contains("tools add,shout\n"), "delete_everything is hidden: {stdout}");
    assert!(stdout.contains("add False 5"), "{stdout}");
    assert!(stdout.contains("shout 0 False HI") && stdout.contains("shout 1 False HI"), "{stdout}");
    assert!(stdout.contains("shout 2 refused"), "the third shout in a minute: {stdout}");
    assert!(stdout.contains("delete refused") && stdout.contains("not allowed"), "{stdout}");
    // The access log names each call's tool, and the server never saw the refused one.
    let calls = log
        .wait_for(5, |l| {
            l.get("route").is_some_and(|r| r == "proxied-mcp")
                && l.get("annotations").is_some_and(|a| a.contains("mcp.tool="))
        })
        .await;
    let noted =
        |tool: &str| calls.iter().filter(|l| l["annotations"].contains(&format!("mcp.tool={tool}"))).count();
    assert_eq!((noted("add"), noted("shout"), noted("delete_everything")), (1, 3, 1), "{calls:?}");
}

/// Runs `script` with `python3 -c` and `arg`; its stdout, once it succeeded.
async fn python(script: &'static str, arg: String) -> String {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").args(["-c", script, &arg]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}
