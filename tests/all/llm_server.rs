//! A small LLM server for the AI gateway tests: OpenAI chat completions, Anthropic
//! Messages and Gemini `generateContent` / `streamGenerateContent?alt=sse`, each
//! non-streamed and streamed, on 127.0.0.1:0. It records every request it receives
//! (so tests can assert the gateway's translation) and answers deterministically:
//!
//! - the answer is `echo: <last user text>` (or `<answer>` for `RAW <answer>`); `usage` is 12 prompt tokens and one
//!   completion token per word of the answer;
//! - a last user text `ERROR <status>` answers that status with the provider's error body;
//!   `FAIL <apis> <status>` does so only on the listed APIs (`openai,anthropic,gemini`);
//! - a last user text containing `weather`, with tools offered, calls the first tool
//!   with `{"city":"Paris"}`;
//! - `NOUSAGE` leaves usage out; `ENDLESS` streams until the client goes away (the
//!   server then counts a disconnect); `LINGER` keeps a stream open for half a second
//!   after its last event before ending it (as some servers do after `[DONE]`).
//!
//! Streams send every event as two body frames split mid-line, so the gateway's line
//! buffering is exercised over the wire.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::harness::{TestBody, TestServer, full};

/// Prompt tokens every answer reports.
pub const PROMPT_TOKENS: u64 = 12;

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    disconnects: AtomicUsize,
}

/// The server.
pub struct LlmServer {
    pub server: TestServer,
    state: Arc<State>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    OpenAi,
    Anthropic,
    Gemini,
}

impl LlmServer {
    pub async fn start() -> LlmServer {
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        let server = TestServer::start(move |req| handle(Arc::clone(&st), req)).await;
        LlmServer { server, state }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the LLM server received a request")
    }

    /// Streams whose client went away before the end.
    pub fn disconnects(&self) -> usize {
        self.state.disconnects.load(Ordering::SeqCst)
    }
}

/// The answer's text for a request's last user text: `echo: <text>`, or for `RAW
/// <answer>` the answer itself (to make the model return JSON).
pub fn answer_for(text: &str) -> String {
    match text.strip_prefix("RAW ") {
        Some(raw) => raw.to_owned(),
        None => format!("echo: {text}"),
    }
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<TestBody> {
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        query: query.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let (api, stream) = if path == "/v1/chat/completions" {
        (Api::OpenAi, body["stream"] == true)
    } else if path == "/v1/messages" {
        (Api::Anthropic, body["stream"] == true)
    } else if path.starts_with("/v1beta/models/") && path.ends_with(":generateContent") {
        (Api::Gemini, false)
    } else if path.starts_with("/v1beta/models/") && path.ends_with(":streamGenerateContent") {
        (Api::Gemini, query.as_deref() == Some("alt=sse"))
    } else {
        return json_reply(404, json!({"error": "no such endpoint"}));
    };
    let text = last_user_text(api, &body);
    if let Some(status) = text.strip_prefix("ERROR ").and_then(|s| s.trim().parse::<u16>().ok()) {
        return json_reply(status, error_body(api, status));
    }
    if let Some(status) = failing_status(api, &text) {
        return json_reply(status, error_body(api, status));
    }
    let tool = has_tools(api, &body).then_some(()).filter(|_| text.contains("weather"));
    let answer = answer_for(&text);
    let usage = !text.contains("NOUSAGE");
    let model = match api {
        Api::Gemini => path.trim_start_matches("/v1beta/models/").split(':').next().unwrap_or("").to_owned(),
        _ => body["model"].as_str().unwrap_or("").to_owned(),
    };
    if !stream {
        return json_reply(200, complete(api, &model, &answer, tool.is_some(), usage));
    }
    let (events, tail) = stream_events(api, &model, &answer, tool.is_some(), usage, &body);
    let end = match (text.contains("ENDLESS"), text.contains("LINGER")) {
        (true, _) => End::Never,
        (_, true) => End::After(Duration::from_millis(500)),
        _ => End::AtOnce,
    };
    sse_reply(state, events, tail, end, api)
}

/// When a stream's body ends after its events.
#[derive(Clone, Copy, PartialEq)]
enum End {
    AtOnce,
    After(Duration),
    /// Never by itself: more events until the client goes away.
    Never,
}

/// `FAIL <apis> <status>`: that status from the listed APIs only (`anthropic,gemini`).
fn failing_status(api: Api, text: &str) -> Option<u16> {
    let mut words = text.strip_prefix("FAIL ")?.split_whitespace();
    let which = words.next()?;
    let status = words.next()?.parse().ok()?;
    let name = match api {
        Api::OpenAi => "openai",
        Api::Anthropic => "anthropic",
        Api::Gemini => "gemini",
    };
    which.split(',').any(|w| w == name).then_some(status)
}

fn last_user_text(api: Api, body: &Value) -> String {
    let list = match api {
        Api::Gemini => body["contents"].as_array(),
        _ => body["messages"].as_array(),
    };
    let last = list.into_iter().flatten().rfind(|m| m["role"] == "user");
    let Some(m) = last else { return String::new() };
    let parts = match api {
        Api::Gemini => &m["parts"],
        _ => &m["content"],
    };
    match parts {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

fn has_tools(api: Api, body: &Value) -> bool {
    match api {
        Api::Gemini => body["tools"][0]["functionDeclarations"].as_array().is_some_and(|a| !a.is_empty()),
        _ => body["tools"].as_array().is_some_and(|a| !a.is_empty()),
    }
}

fn tool_name(api: Api, body: &Value) -> String {
    let v = match api {
        Api::OpenAi => &body["tools"][0]["function"]["name"],
        Api::Anthropic => &body["tools"][0]["name"],
        Api::Gemini => &body["tools"][0]["functionDeclarations"][0]["name"],
    };
    v.as_str().unwrap_or("tool").to_owned()
}

fn error_body(api: Api, status: u16) -> Value {
    let message = format!("test error {status}");
    match api {
        Api::OpenAi => {
            json!({"error": {"message": message, "type": "test_error", "param": null, "code": "test_code"}})
        }
        Api::Anthropic => {
            let kind = if status == 429 { "rate_limit_error" } else { "api_error" };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Api::Gemini => json!({"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT"}}),
    }
}

fn complete(api: Api, model: &str, answer: &str, tool: bool, usage: bool) -> Value {
    let out = words(answer);
    let mut v = match (api, tool) {
        (Api::OpenAi, _) => {
            let message = if tool {
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
            } else {
                json!({"role": "assistant", "content": answer})
            };
            json!({"id": "chatcmpl-test", "object": "chat.completion", "created": 1, "model": model,
                   "choices": [{"index": 0, "message": message, "finish_reason": if tool { "tool_calls" } else { "stop" }}],
                   "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": out, "total_tokens": PROMPT_TOKENS + out}})
        }
        (Api::Anthropic, _) => {
            let content = if tool {
                json!([{"type": "text", "text": "Checking."},
                       {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}])
            } else {
                json!([{"type": "text", "text": answer}])
            };
            json!({"id": "msg_test", "type": "message", "role": "assistant", "model": model, "content": content,
                   "stop_reason": if tool { "tool_use" } else { "end_turn" }, "stop_sequence": null,
                   "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": out}})
        }
        (Api::Gemini, _) => {
            let part = if tool {
                json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}})
            } else {
                json!({"text": answer})
            };
            json!({"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": out,
                                     "totalTokenCount": PROMPT_TOKENS + out},
                   "modelVersion": model, "responseId": "gem-test"})
        }
    };
    if !usage && let Some(o) = v.as_object_mut() {
        o.remove("usage");
        o.remove("usageMetadata");
    }
    v
}

/// The SSE events of a streamed answer (one word per delta), and the event to repeat
/// for `ENDLESS` streams.
fn stream_events(
    api: Api,
    model: &str,
    answer: &str,
    tool: bool,
    usage: bool,
    body: &Value,
) -> (Vec<String>, String) {
    let pieces: Vec<String> = answer.split_inclusive(' ').map(str::to_owned).collect();
    let out = words(answer);
    let data = |v: Value| format!("data: {v}\n\n");
    let mut events = Vec::new();
    let tail;
    match api {
        Api::OpenAi => {
            let chunk = |delta: Value, finish: Value| {
                data(
                    json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
                )
            };
            events.push(chunk(json!({"role": "assistant", "content": ""}), Value::Null));
            if tool {
                let name = tool_name(api, body);
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                  "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                ));
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}),
                    Value::Null,
                ));
            } else {
                for p in &pieces {
                    events.push(chunk(json!({"content": p}), Value::Null));
                }
            }
            events.push(chunk(json!({}), json!(if tool { "tool_calls" } else { "stop" })));
            if usage && body["stream_options"]["include_usage"] == true {
                events.push(data(json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [], "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": out, "total_tokens": PROMPT_TOKENS + out}})));
            }
            events.push("data: [DONE]\n\n".to_owned());
            tail = chunk(json!({"content": "more "}), Value::Null);
        }
        Api::Anthropic => {
            let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
            let input = if usage { PROMPT_TOKENS } else { 0 };
            events.push(ev(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_s", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "usage": {"input_tokens": input, "output_tokens": 1}}}),
            ));
            events.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            events.push(ev("ping", json!({"type": "ping"})));
            for p in &pieces {
                events.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})));
            }
            events.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
            if tool {
                events.push(ev("content_block_start", json!({"type": "content_block_start", "index": 1,
                    "content_block": {"type": "tool_use", "id": "toolu_1", "name": tool_name(api, body), "input": {}}})));
                events.push(ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
                ));
                events.push(ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
                ));
                events.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 1})));
            }
            let stop = if tool { "tool_use" } else { "end_turn" };
            let delta_usage = if usage { json!({"output_tokens": out}) } else { json!({}) };
            events.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": delta_usage})));
            events.push(ev("message_stop", json!({"type": "message_stop"})));
            tail = ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "more "}}),
            );
        }
        Api::Gemini => {
            let n = pieces.len();
            for (i, p) in pieces.iter().enumerate() {
                let mut v = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}],
                                   "modelVersion": model});
                if i + 1 == n && !tool {
                    v["candidates"][0]["finishReason"] = json!("STOP");
                }
                if usage {
                    v["usageMetadata"] =
                        json!({"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": i as u64 + 1});
                }
                events.push(format!("data: {v}\r\n\r\n"));
            }
            if tool {
                let v = json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                                "finishReason": "STOP", "index": 0}]});
                events.push(format!("data: {v}\r\n\r\n"));
            }
            tail = format!(
                "data: {}\r\n\r\n",
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "more "}]}}]})
            );
        }
    }
    (events, tail)
}

fn json_reply(status: u16, v: Value) -> Response<TestBody> {
    let mut resp = Response::new(full(serde_json::to_vec(&v).unwrap()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    resp
}

type FrameResult = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;

fn sse_reply(state: Arc<State>, events: Vec<String>, tail: String, end: End, api: Api) -> Response<TestBody> {
    let (tx, rx) = mpsc::channel::<FrameResult>(1);
    tokio::spawn(async move {
        let send = |s: String| {
            let tx = tx.clone();
            async move {
                // Each event in two frames, split mid-line.
                let b = Bytes::from(s);
                let mid = b.len() / 2;
                tx.send(Ok(Frame::data(b.slice(..mid)))).await.is_ok()
                    && tx.send(Ok(Frame::data(b.slice(mid..)))).await.is_ok()
            }
        };
        if end == End::Never {
            // The head of the stream, then more until the client is gone (at most ~60s).
            let head = events.into_iter().take(if api == Api::Gemini { 0 } else { 2 });
            for e in head {
                if !send(e).await {
                    state.disconnects.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            for _ in 0..3000 {
                if !send(tail.clone()).await {
                    state.disconnects.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return;
        }
        for e in events {
            if !send(e).await {
                return;
            }
        }
        if let End::After(wait) = end {
            tokio::time::sleep(wait).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
    resp
}
