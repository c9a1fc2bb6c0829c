//! OpenAI chat completions ↔ Anthropic Messages (`POST /v1/messages`): requests,
//! responses, errors. The streamed events are translated in `stream`.

use serde_json::{Map, Value, json};

use crate::openai::{self, ApiError, Usage};

/// OpenAI finish reason for an Anthropic `stop_reason`.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Anthropic content blocks for an OpenAI message `content`.
fn blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(parts) => parts.iter().filter_map(part).collect(),
        _ => Vec::new(),
    }
}

fn part(p: &Value) -> Option<Value> {
    match p.get("type").and_then(Value::as_str)? {
        "text" => Some(json!({"type": "text", "text": p.get("text")?.as_str()?})),
        "image_url" => {
            let url = p.pointer("/image_url/url")?.as_str()?;
            Some(match url.strip_prefix("data:").and_then(|d| d.split_once(";base64,")) {
                Some((media, data)) => {
                    json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
                }
                None => json!({"type": "image", "source": {"type": "url", "url": url}}),
            })
        }
        _ => None,
    }
}

/// Appends a message, merging it into the previous one of the same role (Anthropic
/// wants user and assistant turns to alternate; tool results become user turns).
fn push(messages: &mut Vec<Value>, role: &str, content: Vec<Value>) {
    if content.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(existing) = last["content"].as_array_mut()
    {
        existing.extend(content);
        return;
    }
    messages.push(json!({"role": role, "content": content}));
}

/// The Anthropic request for an OpenAI chat-completions request.
pub fn to_provider(req: &Value, model: &str, default_max_tokens: u64) -> Result<Value, ApiError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("`messages` must be a list", Some("messages")))?;
    if req.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(ApiError::invalid("this model's provider supports only n = 1", Some("n")));
    }
    let mut system: Vec<String> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for m in messages {
        let content = m.get("content").unwrap_or(&Value::Null);
        match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => system.push(openai::content_text(content)),
            Some("user") => push(&mut out, "user", blocks(content)),
            Some("assistant") => {
                let mut b = blocks(content);
                for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
                    let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
                    b.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(Value::Null),
                        "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                        "input": input,
                    }));
                }
                push(&mut out, "assistant", b);
            }
            Some("tool") => {
                let result = json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "content": openai::content_text(content),
                });
                push(&mut out, "user", vec![result]);
            }
            other => {
                return Err(ApiError::invalid(
                    format!("unsupported message role {other:?}"),
                    Some("messages"),
                ));
            }
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert("messages".into(), out.into());
    let max = req.get("max_completion_tokens").or_else(|| req.get("max_tokens")).and_then(Value::as_u64);
    body.insert("max_tokens".into(), max.unwrap_or(default_max_tokens).into());
    match req.pointer("/response_format/type").and_then(Value::as_str) {
        Some("json_object") => system.push("Answer with a single JSON object and nothing else.".into()),
        Some("json_schema") => {
            let schema = req.pointer("/response_format/json_schema/schema").cloned().unwrap_or(Value::Null);
            system.push(format!(
                "Answer with a single JSON value matching this JSON Schema and nothing else: {schema}"
            ));
        }
        _ => {}
    }
    if !system.is_empty() {
        body.insert("system".into(), system.join("\n\n").into());
    }
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            body.insert(key.into(), v.clone());
        }
    }
    match req.get("stop") {
        Some(Value::String(s)) => {
            body.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            body.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                json!({
                    "name": f.get("name").cloned().unwrap_or(Value::Null),
                    "description": f.get("description").cloned().unwrap_or_else(|| "".into()),
                    "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
                })
            })
            .collect();
        body.insert("tools".into(), tools.into());
    }
    let mut choice = match req.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(v @ Value::Object(_)) => v.pointer("/function/name").map(|n| json!({"type": "tool", "name": n})),
        _ => None,
    };
    if req.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        c["disable_parallel_tool_use"] = Value::Bool(true);
    }
    if let Some(c) = choice {
        body.insert("tool_choice".into(), c);
    }
    Ok(Value::Object(body))
}

/// Anthropic `usage` (cached prompt tokens count as prompt tokens).
pub fn usage(u: &Value) -> Option<Usage> {
    let u = u.as_object()?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        input: n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens"),
        output: n("output_tokens"),
        estimated: false,
    })
}

/// The OpenAI completion for an Anthropic message (a `2xx` body).
pub fn from_provider(v: &Value, created: u64) -> (Value, Option<Usage>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in v.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }});
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    let finish = finish_reason(v.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn"));
    let usage = v.get("usage").and_then(usage);
    let id = format!("chatcmpl-{}", v.get("id").and_then(Value::as_str).unwrap_or("anthropic"));
    let model = v.get("model").and_then(Value::as_str).unwrap_or("");
    (openai::completion(&id, created, model, message, finish, usage.unwrap_or_default()), usage)
}

/// The OpenAI error for an Anthropic error body.
pub fn error(status: u16, v: &Value) -> ApiError {
    let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("the provider failed");
    let kind = v.pointer("/error/type").and_then(Value::as_str);
    let code = match kind {
        Some("rate_limit_error") => Some("rate_limit_exceeded"),
        Some("overloaded_error") => Some("overloaded"),
        _ => None,
    };
    let status = openai::client_status(status);
    ApiError::new(status, kind.unwrap_or(openai::error_type(status)), code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_splits_the_system_prompt_and_maps_tools_stops_and_results() {
        let req = json!({
            "model": "claude", "temperature": 0.2, "top_p": 0.9, "stop": "END", "max_tokens": 50,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "user", "content": [{"type": "text", "text": "Thanks"}]}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "w", "parameters": {"type": "object"}}}],
            "tool_choice": "required"
        });
        let out = to_provider(&req, "claude-3-5-haiku", 1024).unwrap();
        assert_eq!(out["model"], "claude-3-5-haiku");
        assert_eq!(out["system"], "Be brief.");
        assert_eq!(out["max_tokens"], 50);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["temperature"], 0.2);
        assert_eq!(out["tools"][0]["input_schema"], json!({"type": "object"}));
        assert_eq!(out["tool_choice"], json!({"type": "any"}));
        let msgs = out["messages"].as_array().unwrap();
        assert_eq!(
            msgs.len(),
            3,
            "the tool result and the next user text merge into one user turn: {msgs:?}"
        );
        assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
        assert_eq!(msgs[1]["content"][0]["input"]["city"], "Paris");
        assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
        assert_eq!(msgs[2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(msgs[2]["content"][1]["text"], "Thanks");
        let dflt = to_provider(&json!({"messages": [{"role": "user", "content": "x"}]}), "m", 1024).unwrap();
        assert_eq!(dflt["max_tokens"], 1024, "max_tokens is required by Anthropic");
        assert!(dflt.get("system").is_none());
    }

    #[test]
    fn the_response_becomes_a_chat_completion() {
        let msg = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 3}
        });
        let (c, u) = from_provider(&msg, 5);
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["choices"][0]["message"]["content"], "Let me check.");
        let call = &c["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "toolu_1");
        assert_eq!(
            serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap()["city"],
            "Paris"
        );
        assert_eq!(u, Some(Usage { input: 15, output: 7, estimated: false }));
        assert_eq!(c["usage"]["total_tokens"], 22);
        assert_eq!(finish_reason("max_tokens"), "length");
        assert_eq!(finish_reason("stop_sequence"), "stop");
    }

    #[test]
    fn errors_keep_the_message_and_map_overloaded() {
        let e =
            error(529, &json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}));
        assert_eq!((e.status, e.kind.as_str(), e.message.as_str()), (503, "overloaded_error", "busy"));
    }
}
