//! OpenAI chat completions ↔ Google Gemini (`models/{model}:generateContent`, and
//! `:streamGenerateContent?alt=sse`, whose events are translated in `stream`).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::openai::{self, ApiError, Usage};

/// OpenAI finish reason for a Gemini `finishReason`.
pub fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

/// The path (below the base path) of a call.
pub fn path(model: &str, stream: bool) -> String {
    if stream {
        format!("/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/models/{model}:generateContent")
    }
}

/// Gemini rejects some JSON Schema keywords in function parameters.
fn clean_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "additionalProperties" | "$schema" | "strict"))
                .map(|(k, v)| (k.clone(), clean_schema(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(clean_schema).collect()),
        other => other.clone(),
    }
}

fn parts(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => vec![json!({"text": s})],
        Value::Array(items) => items
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str)? {
                "text" => Some(json!({"text": p.get("text")?})),
                "image_url" => {
                    let url = p.pointer("/image_url/url")?.as_str()?;
                    Some(match url.strip_prefix("data:").and_then(|d| d.split_once(";base64,")) {
                        Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
                        None => json!({"fileData": {"fileUri": url}}),
                    })
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn push(contents: &mut Vec<Value>, role: &str, p: Vec<Value>) {
    if p.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut()
        && last["role"] == role
        && let Some(existing) = last["parts"].as_array_mut()
    {
        existing.extend(p);
        return;
    }
    contents.push(json!({"role": role, "parts": p}));
}

/// The Gemini request for an OpenAI chat-completions request.
pub fn to_provider(req: &Value) -> Result<Value, ApiError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("`messages` must be a list", Some("messages")))?;
    let mut system = Vec::new();
    let mut contents = Vec::new();
    // Tool results name the function; OpenAI's carry only the call's id.
    let mut call_names: HashMap<String, Value> = HashMap::new();
    for m in messages {
        let content = m.get("content").unwrap_or(&Value::Null);
        match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => system.push(json!({"text": openai::content_text(content)})),
            Some("user") => push(&mut contents, "user", parts(content)),
            Some("assistant") => {
                let mut p = parts(content);
                for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let name = call.pointer("/function/name").cloned().unwrap_or(Value::Null);
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.insert(id.to_owned(), name.clone());
                    }
                    let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
                    let args: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
                    p.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                push(&mut contents, "model", p);
            }
            Some("tool") => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let name = call_names.get(id).cloned().unwrap_or_else(|| id.into());
                let text = openai::content_text(content);
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": text}),
                };
                push(
                    &mut contents,
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
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
    body.insert("contents".into(), contents.into());
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let mut config = Map::new();
    let copy = |config: &mut Map<String, Value>, from: &str, to: &str| {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            config.insert(to.into(), v.clone());
        }
    };
    copy(&mut config, "temperature", "temperature");
    copy(&mut config, "top_p", "topP");
    copy(&mut config, "max_tokens", "maxOutputTokens");
    copy(&mut config, "max_completion_tokens", "maxOutputTokens");
    copy(&mut config, "n", "candidateCount");
    copy(&mut config, "seed", "seed");
    match req.get("stop") {
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            config.insert("stopSequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    match req.pointer("/response_format/type").and_then(Value::as_str) {
        Some("json_object") => {
            config.insert("responseMimeType".into(), "application/json".into());
        }
        Some("json_schema") => {
            config.insert("responseMimeType".into(), "application/json".into());
            if let Some(s) = req.pointer("/response_format/json_schema/schema") {
                config.insert("responseSchema".into(), clean_schema(s));
            }
        }
        _ => {}
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), config.into());
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let decls: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut d = json!({"name": f.get("name").cloned().unwrap_or(Value::Null)});
                if let Some(desc) = f.get("description") {
                    d["description"] = desc.clone();
                }
                if let Some(p) = f.get("parameters") {
                    d["parameters"] = clean_schema(p);
                }
                d
            })
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    let mode = match req.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => Some(json!({"mode": "AUTO"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"mode": "NONE"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"mode": "ANY"})),
        Some(v @ Value::Object(_)) => {
            v.pointer("/function/name").map(|n| json!({"mode": "ANY", "allowedFunctionNames": [n]}))
        }
        _ => None,
    };
    if let Some(mode) = mode {
        body.insert("toolConfig".into(), json!({"functionCallingConfig": mode}));
    }
    Ok(Value::Object(body))
}

/// Gemini `usageMetadata`.
pub fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usageMetadata")?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        input: n("promptTokenCount"),
        output: n("candidatesTokenCount") + n("thoughtsTokenCount"),
        estimated: false,
    })
}

/// The text and tool calls of one candidate's parts. `next_call` numbers the calls
/// (Gemini gives them no ids).
pub fn candidate_parts(c: &Value, next_call: &mut usize) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in c.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(f) = p.get("functionCall") {
            let id = f
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("call_{next_call}"), str::to_owned);
            calls.push(json!({
                "index": *next_call,
                "id": id,
                "type": "function",
                "function": {
                    "name": f.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": f.get("args").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            }));
            *next_call += 1;
        }
    }
    (text, calls)
}

/// The OpenAI completion for a Gemini response (a `2xx` body).
pub fn from_provider(v: &Value, id: &str, created: u64) -> (Value, Option<Usage>) {
    let candidate = v.pointer("/candidates/0").cloned().unwrap_or(Value::Null);
    let (text, mut calls) = candidate_parts(&candidate, &mut 0);
    for c in &mut calls {
        if let Some(o) = c.as_object_mut() {
            o.remove("index");
        }
    }
    let blocked = v.pointer("/promptFeedback/blockReason").is_some();
    let reason = candidate.get("finishReason").and_then(Value::as_str).unwrap_or(if blocked {
        "SAFETY"
    } else {
        "STOP"
    });
    let finish = finish_reason(reason, !calls.is_empty());
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }});
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    let usage = usage(v);
    let id = v
        .get("responseId")
        .and_then(Value::as_str)
        .map_or_else(|| id.to_owned(), |r| format!("chatcmpl-{r}"));
    let model = v.get("modelVersion").and_then(Value::as_str).unwrap_or("");
    (openai::completion(&id, created, model, message, finish, usage.unwrap_or_default()), usage)
}

/// The OpenAI error for a Gemini error body (`{"error": {"code", "message", "status"}}`).
pub fn error(status: u16, v: &Value) -> ApiError {
    let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("the provider failed");
    let code = v.pointer("/error/status").and_then(Value::as_str).map(str::to_ascii_lowercase);
    let mut e = ApiError::new(status, openai::error_type(status), None, message);
    e.code = code;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_has_contents_system_instruction_and_generation_config() {
        let req = json!({
            "model": "g", "temperature": 0.5, "max_tokens": 20, "stop": ["X"],
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"sky\":\"grey\"}"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "additionalProperties": false}}}]
        });
        let out = to_provider(&req).unwrap();
        assert_eq!(out["systemInstruction"], json!({"parts": [{"text": "Be brief."}]}));
        assert_eq!(out["contents"][0], json!({"role": "user", "parts": [{"text": "Weather?"}]}));
        assert_eq!(out["contents"][1]["role"], "model");
        assert_eq!(out["contents"][1]["parts"][0]["functionCall"]["args"]["city"], "Oslo");
        assert_eq!(out["contents"][2]["parts"][0]["functionResponse"]["name"], "weather");
        assert_eq!(out["contents"][2]["parts"][0]["functionResponse"]["response"]["sky"], "grey");
        let gc = &out["generationConfig"];
        assert_eq!((gc["temperature"].clone(), gc["maxOutputTokens"].clone()), (json!(0.5), json!(20)));
        assert_eq!(gc["stopSequences"], json!(["X"]));
        assert_eq!(gc["responseMimeType"], "application/json");
        assert_eq!(out["tools"][0]["functionDeclarations"][0]["parameters"], json!({"type": "object"}));
        assert_eq!(path("gemini-2.0-flash", true), "/models/gemini-2.0-flash:streamGenerateContent?alt=sse");
    }

    #[test]
    fn the_response_becomes_a_chat_completion() {
        let v = json!({
            "candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13},
            "modelVersion": "gemini-x"
        });
        let (c, u) = from_provider(&v, "chatcmpl-1", 1);
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(c["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(c["model"], "gemini-x");
        assert_eq!(u, Some(Usage { input: 9, output: 4, estimated: false }));
        let e = error(400, &json!({"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}));
        assert_eq!(e.to_json()["error"]["code"], "invalid_argument");
        assert_eq!(finish_reason("MAX_TOKENS", false), "length");
        assert_eq!(finish_reason("SAFETY", false), "content_filter");
    }
}
