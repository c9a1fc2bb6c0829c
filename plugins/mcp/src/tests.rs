//! Native unit tests through the SDK's testing module.

use serde_json::{Value, json};
use sluice_plugin_sdk::testing::{self, FakeRequest};
use sluice_plugin_sdk::{Decision, Plugin};

use crate::filter::{ListFilter, MAX_BYTES};
use crate::{Mcp, McpConfig};

fn plugin(config: Value) -> Mcp {
    testing::configure(&config.to_string()).unwrap_or_else(|e| panic!("config rejected: {e}"))
}

fn call(tool: &str) -> FakeRequest {
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": tool, "arguments": {"q": "x"}}});
    FakeRequest::new("POST", "/mcp").with_header("x-mcp-tool", "spoofed").with_body(body.to_string())
}

#[test]
fn an_allowed_call_goes_on_named_in_the_tool_header_and_annotated() {
    let mcp = plugin(json!({"allow_tools": ["search"]}));
    let mut req = call("search");
    assert!(mcp.on_request(&mut req.as_request()).is_continue());
    assert_eq!(req.header("x-mcp-tool").as_deref(), Some("search"), "the client's own value is replaced");
    let notes = testing::annotations();
    for (k, v) in [("method", "tools/call"), ("tool", "search"), ("args_bytes", "9")] {
        assert!(notes.contains(&(k.to_owned(), v.to_owned())), "{k}={v} in {notes:?}");
    }
}

#[test]
fn a_call_of_a_tool_not_allowed_is_a_json_rpc_error_from_the_gateway() {
    let mcp = plugin(json!({"allow_tools": ["search"]}));
    let mut req = call("delete_everything");
    let Decision::Respond(r) = mcp.on_request(&mut req.as_request()) else {
        panic!("answered by the gateway")
    };
    assert_eq!(r.status, 200);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["id"], 5);
    assert_eq!(body["error"]["code"], -32602);
    assert!(body["error"]["message"].as_str().unwrap().contains("delete_everything"));
}

#[test]
fn without_an_allow_list_every_call_goes_on_and_nothing_is_filtered() {
    let mcp = plugin(json!({}));
    assert!(mcp.on_request(&mut call("anything").as_request()).is_continue());
    assert!(!mcp.phases().contains(sluice_plugin_sdk::Phases::RESPONSE_CHUNK), "no answer is read");
    // Other messages and methods pass; a spoofed tool header never does.
    let mut get = FakeRequest::new("GET", "/mcp").with_header("x-mcp-tool", "spoofed");
    assert!(mcp.on_request(&mut get.as_request()).is_continue());
    assert_eq!(get.header("x-mcp-tool"), None);
}

#[test]
fn a_bad_tool_header_is_a_config_error() {
    for h in ["bad header", "content-length"] {
        let err = testing::configure::<Mcp>(&json!({"tool_header": h}).to_string()).err().unwrap();
        assert!(err.contains("tool_header"), "{err}");
    }
    let err = testing::configure::<Mcp>(&json!({"allow_tool": ["x"]}).to_string()).err().unwrap();
    assert!(err.contains("allow_tool"), "{err}");
}

fn listed(names: &[&str]) -> Value {
    let tools: Vec<Value> =
        names.iter().map(|n| json!({"name": n, "inputSchema": {"type": "object"}})).collect();
    json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": tools}})
}

fn names(v: &Value) -> Vec<&str> {
    v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect()
}

#[test]
fn a_json_tools_list_is_filtered_whole_at_its_end() {
    let mut f = ListFilter::new(vec!["b".into()], false);
    let doc = listed(&["a", "b", "c"]).to_string().into_bytes();
    let (head, tail) = doc.split_at(10);
    assert!(f.push(head, false).is_empty(), "held until the end");
    let out: Value = serde_json::from_slice(&f.push(tail, true)).unwrap();
    assert_eq!(names(&out), ["b"]);
    // Not a listing: unchanged.
    let mut f = ListFilter::new(vec!["b".into()], false);
    assert_eq!(
        f.push(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", true),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}"
    );
}

#[test]
fn an_event_stream_tools_list_is_filtered_line_by_line_across_chunks() {
    let mut f = ListFilter::new(vec!["a".into(), "c".into()], true);
    let stream = format!("event: message\r\ndata: {}\r\n\r\n", listed(&["a", "b", "c"]));
    let mut out = Vec::new();
    // Split anywhere, the lines come out whole and filtered.
    for piece in stream.as_bytes().chunks(7) {
        out.extend(f.push(piece, false));
    }
    out.extend(f.push(b"", true));
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("event: message\r\ndata: "), "{text:?}");
    assert!(text.ends_with("\r\n\r\n"), "{text:?}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    assert_eq!(names(&serde_json::from_str(data).unwrap()), ["a", "c"]);
}

#[test]
fn an_answer_too_large_to_filter_becomes_an_error_not_an_unfiltered_list() {
    let mut f = ListFilter::new(vec!["a".into()], false);
    assert!(f.push(&vec![b' '; MAX_BYTES + 1], false).is_empty());
    let out: Value = serde_json::from_slice(&f.push(b"", true)).unwrap();
    assert_eq!(out["error"]["code"], -32603);
}

#[test]
fn tools_list_answers_are_filtered_through_the_plugins_phases() {
    let mcp = plugin(json!({"allow_tools": ["a"]}));
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let mut req = FakeRequest::new("POST", "/mcp").with_body(list);
    assert!(mcp.on_request(&mut req.as_request()).is_continue());
    let mut resp = req.response(200).with_header("content-type", "application/json");
    assert!(mcp.on_response(&mut resp.as_response()).is_continue());
    let out = mcp.on_response_chunk(listed(&["a", "b"]).to_string().into_bytes(), true);
    assert_eq!(names(&serde_json::from_slice(&out).unwrap()), ["a"]);
    // The next answer on this instance is not a listing: passed on as it is.
    let mut req = call("a");
    assert!(mcp.on_request(&mut req.as_request()).is_continue());
    let mut resp = req.response(200);
    assert!(mcp.on_response(&mut resp.as_response()).is_continue());
    assert_eq!(mcp.on_response_chunk(b"untouched".to_vec(), true), b"untouched");
}

/// The JSON Schema of the config, kept in `schema.json` (rewrite with `SLUICE_BLESS=1`).
#[test]
fn schema_json_is_up_to_date() {
    let schema = serde_json::to_string_pretty(&schemars::schema_for!(McpConfig)).unwrap() + "\n";
    testing::golden(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json"), &schema);
}
