//! The plugin's phases end to end over the SDK's fakes.

use serde_json::{Value, json};
use sluice_plugin_sdk::testing::{self, FakeRequest};
use sluice_plugin_sdk::{Phases, Plugin};

use crate::Ai;

fn chat_config() -> Ai {
    testing::set_secret("anthropic-key", "sk-ant");
    testing::set_secret("gemini-key", "g-key");
    testing::configure(
        &json!({
            "providers": [
                {"name": "oa", "kind": "openai", "upstream": "oa-pool", "models": {"fast": "gpt-4o-mini"},
                 "price": {"input_per_1k": 1.0, "output_per_1k": 2.0}},
                {"name": "claude", "kind": "anthropic", "upstream": "ant-pool", "api_key_secret": "anthropic-key",
                 "models": {"smart": "claude-3-5-haiku"}},
                {"name": "gem", "kind": "gemini", "upstream": "gem-pool", "api_key_secret": "gemini-key",
                 "models": {"gem": "gemini-2.0-flash"}}
            ],
            "budgets": {"tokens_per_minute": 100}
        })
        .to_string(),
    )
    .unwrap()
}

fn chat(model: &str, stream: bool) -> FakeRequest {
    let body = json!({"model": model, "stream": stream, "stream_options": {"include_usage": true},
                      "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}]});
    FakeRequest::new("POST", "/v1/chat/completions")
        .with_header("authorization", "Bearer gateway-key")
        .with_header("accept-encoding", "gzip")
        .with_body(body.to_string())
        .with_consumer("ann", &[])
}

/// Runs a response through `on_response` and the chunk phase, `split` bytes a chunk.
fn respond(
    ai: &Ai,
    req: &FakeRequest,
    status: u16,
    body: &str,
    split: usize,
) -> (u16, Option<String>, Vec<u8>) {
    let mut resp = req.response(status);
    assert!(ai.on_response(&mut resp.as_response()).is_continue());
    let mut out = Vec::new();
    for c in body.as_bytes().chunks(split) {
        out.extend(ai.on_response_chunk(c.to_vec(), false));
    }
    out.extend(ai.on_response_chunk(Vec::new(), true));
    (resp.status, resp.header("content-type"), out)
}

#[test]
fn phases_follow_the_mode() {
    let ai = chat_config();
    assert!(ai.phases().contains(Phases::RESPONSE_CHUNK));
    assert!(!ai.phases().contains(Phases::RESPONSE_BODY), "streams must not be buffered");
}

#[test]
fn an_anthropic_call_is_translated_both_ways() {
    let ai = chat_config();
    let mut req = chat("smart", false);
    assert!(ai.on_request(&mut req.as_request()).is_continue());
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.upstream.as_deref(), Some("ant-pool"));
    assert_eq!(req.header("x-api-key").as_deref(), Some("sk-ant"));
    assert_eq!(req.header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(req.header("authorization"), None, "the gateway's credentials never reach the provider");
    assert_eq!(req.header("accept-encoding"), None);
    let sent: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(sent["system"], "sys");
    assert_eq!(sent["model"], "claude-3-5-haiku");

    let answer = json!({"id": "msg_1", "type": "message", "model": "claude-3-5-haiku",
        "content": [{"type": "text", "text": "hi!"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 2}});
    let (status, ctype, out) = respond(&ai, &req, 200, &answer.to_string(), 7);
    assert_eq!((status, ctype.as_deref()), (200, Some("application/json")));
    let c: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(c["choices"][0]["message"]["content"], "hi!");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(c["usage"]["total_tokens"], 7);
    let counters = testing::counters();
    let tokens: u64 = counters.iter().filter(|(n, ..)| n == "ai_tokens").map(|(_, _, v)| v).sum();
    assert_eq!(tokens, 7);
    assert!(testing::annotations().contains(&("tokens_in".to_owned(), "5".to_owned())));
}

#[test]
fn an_anthropic_error_becomes_an_openai_error() {
    let ai = chat_config();
    let mut req = chat("smart", true);
    assert!(ai.on_request(&mut req.as_request()).is_continue());
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let (status, _, out) = respond(&ai, &req, 529, body, 5);
    assert_eq!(status, 503);
    let e: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(e["error"]["message"], "Overloaded");
}

#[test]
fn a_gemini_stream_is_translated_chunk_by_chunk() {
    let ai = chat_config();
    let mut req = chat("gem", true);
    assert!(ai.on_request(&mut req.as_request()).is_continue());
    assert_eq!(req.path, "/v1beta/models/gemini-2.0-flash:streamGenerateContent");
    assert_eq!(req.query.as_deref(), Some("alt=sse"));
    assert_eq!(req.header("x-goog-api-key").as_deref(), Some("g-key"));
    let body = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hello\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":1}}\n\n";
    let (status, ctype, out) = respond(&ai, &req, 200, body, 3);
    assert_eq!((status, ctype.as_deref()), (200, Some("text/event-stream")));
    let events = crate::stream::payloads(&out);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 4);
}

#[test]
fn unknown_models_and_bad_bodies_are_openai_errors() {
    let ai = chat_config();
    let mut req = chat("nope", false);
    let d = ai.on_request(&mut req.as_request());
    assert_eq!(d.status(), Some(404));
    let mut req = FakeRequest::new("POST", "/v1/chat/completions").with_body("{}");
    assert_eq!(ai.on_request(&mut req.as_request()).status(), Some(400));
    let mut req = FakeRequest::new("GET", "/v1/models");
    let sluice_plugin_sdk::Decision::Respond(r) = ai.on_request(&mut req.as_request()) else { panic!() };
    let list: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
}

#[test]
fn a_used_up_token_budget_is_a_429() {
    let ai = chat_config();
    let mut req = chat("fast", false);
    assert!(ai.on_request(&mut req.as_request()).is_continue());
    let answer = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 60, "completion_tokens": 50}});
    respond(&ai, &req, 200, &answer.to_string(), 100);
    let mut req = chat("fast", false);
    let d = ai.on_request(&mut req.as_request());
    assert_eq!(d.status(), Some(429));
    let sluice_plugin_sdk::Decision::Respond(r) = d else { panic!() };
    assert!(r.headers.iter().any(|(k, _)| k == "retry-after"));
}

fn prompt_config(output: &str) -> Ai {
    testing::configure(
        &json!({
            "mode": "prompt",
            "providers": [{"name": "oa", "kind": "openai", "upstream": "oa-pool", "models": {"fast": "gpt-4o-mini"}}],
            "prompt": {
                "model": "fast",
                "system": "Summarize in {{params.lang}} for {{consumer}}.",
                "user": "{{text}}",
                "input_schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
                "output": output,
                "params": {"temperature": 0}
            }
        })
        .to_string(),
    )
    .unwrap()
}

#[test]
fn a_prompt_route_renders_validates_and_shapes_the_answer() {
    let ai = prompt_config("text");
    assert!(ai.phases().contains(Phases::RESPONSE_BODY));
    let mut req = FakeRequest::new("POST", "/api/summarize/fr")
        .with_param("lang", "fr")
        .with_consumer("ann", &[])
        .with_body(r#"{"text": "long text"}"#);
    assert!(ai.on_request(&mut req.as_request()).is_continue());
    let sent: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(sent["messages"][0]["content"], "Summarize in fr for ann.");
    assert_eq!(sent["messages"][1]["content"], "long text");
    assert_eq!(sent["temperature"], 0);
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(req.path, "/v1/chat/completions");

    let mut resp = req.response(200);
    resp.body = json!({"choices": [{"message": {"content": "court"}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
        .to_string()
        .into_bytes();
    assert!(ai.on_response(&mut resp.as_response()).is_continue());
    assert_eq!(resp.body, b"court");
    assert_eq!(resp.header("content-type").as_deref(), Some("text/plain; charset=utf-8"));

    let mut bad = FakeRequest::new("POST", "/api/summarize/fr").with_body(r#"{"txt": "x"}"#);
    let sluice_plugin_sdk::Decision::Respond(r) = ai.on_request(&mut bad.as_request()) else { panic!() };
    assert_eq!(r.status, 400);
    let e: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(e["error"]["param"], "text");
    assert_eq!(e["error"]["message"], "missing required field `text`");
}

#[test]
fn configs_are_checked_at_load() {
    let bad = |v: Value| testing::configure::<Ai>(&v.to_string()).err().unwrap();
    assert!(bad(json!({"providers": []})).contains("at least one provider"));
    assert!(bad(json!({"providers": [{"name": "a", "kind": "cohere", "upstream": "u"}]})).contains("cohere"));
    let p = json!([{"name": "a", "kind": "openai", "upstream": "u", "models": {"m": "x"}}]);
    assert!(bad(json!({"providers": p, "mode": "prompt"})).contains("prompt"));
    assert!(bad(json!({"providers": p, "default_model": "zz"})).contains("zz"));
    assert!(
        bad(json!({"providers": p, "mode": "prompt", "prompt": {"model": "m", "user": "{{x"}}))
            .contains("unclosed")
    );
    assert!(bad(json!({"providers": p, "extra": 1})).contains("extra"));
}

#[test]
fn fallbacks_are_checked_at_load_and_a_failed_fallback_keeps_the_error() {
    let providers = json!([
        {"name": "a", "kind": "anthropic", "upstream": "u", "models": {"claude": "c"}},
        {"name": "b", "kind": "openai", "upstream": "u", "models": {"gpt": "g"}}
    ]);
    let err = testing::configure::<Ai>(
        &json!({"providers": providers, "fallbacks": {"claude": ["gpt"]}}).to_string(),
    );
    assert!(err.err().unwrap().contains("needs a `url`"));
    let err = testing::configure::<Ai>(
        &json!({"providers": providers, "fallbacks": {"claude": ["nope"]}}).to_string(),
    );
    assert!(err.err().unwrap().contains("nope"));

    let mut providers = providers;
    providers[1]["url"] = json!("http://127.0.0.1:9");
    let ai: Ai =
        testing::configure(&json!({"providers": providers, "fallbacks": {"claude": ["gpt"]}}).to_string())
            .unwrap();
    let mut req = chat("claude", false);
    assert!(ai.on_request(&mut req.as_request()).is_continue());
    assert!(req.context.contains_key("chat"), "the request is kept for the fallback");
    // Native tests refuse outbound HTTP: the fallback fails and the error stays.
    let (status, _, out) =
        respond(&ai, &req, 503, r#"{"type":"error","error":{"type":"api_error","message":"down"}}"#, 4);
    assert_eq!(status, 503);
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["error"]["message"], "down");
}

#[test]
fn the_schema_matches_the_config() {
    let schema: Value = serde_json::from_str(include_str!("../schema.json")).unwrap();
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    // A config using every field the schema lists is accepted.
    let provider = json!({"name": "p", "kind": "openai", "upstream": "u", "api_key_secret": "k", "base_path": "/v1",
        "url": "http://x", "models": {"m": "model", "n": "model-2"}, "price": {"input_per_1k": 1, "output_per_1k": 2},
        "default_max_tokens": 10, "anthropic_version": "2023-06-01"});
    let prompt = json!({"model": "m", "system": "s", "user": "{{text}}", "input_schema": {"type": "object"},
        "output": "json", "output_schema": {"type": "object"}, "params": {"temperature": 0}});
    let config = json!({"mode": "prompt", "providers": [provider], "default_model": "m",
        "budgets": {"tokens_per_minute": 1, "cost_per_day": 1.0, "shared": "team"}, "prompt": prompt,
        "fallbacks": {"m": ["n"]}, "fallback_on": [503]});
    testing::set_secret("k", "v");
    testing::configure::<Ai>(&config.to_string()).unwrap();
    assert_eq!(keys(&schema["properties"]), keys(&config));
    assert_eq!(keys(&schema["$defs"]["Provider"]["properties"]), keys(&provider));
    assert_eq!(keys(&schema["$defs"]["Prompt"]["properties"]), keys(&prompt));
    assert_eq!(keys(&schema["properties"]["budgets"]["properties"]), keys(&config["budgets"]));
}
