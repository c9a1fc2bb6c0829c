//! Whole (non-streamed) provider responses → OpenAI `chat.completion` or error, and
//! the shapes a prompt route returns.

use serde_json::{Value, json};

use crate::call::Call;
use crate::config::{Kind, Output, PromptConfig};
use crate::openai::{self, ApiError, Usage};
use crate::{anthropic, gemini};

/// A translated response.
#[derive(Debug)]
pub enum Translated {
    /// A completion and its usage.
    Completion(Value, Usage),
    /// An error for the client.
    Error(ApiError),
}

/// Translates a `kind` provider's whole response.
pub fn translate(kind: Kind, status: u16, body: &[u8], call: &Call) -> Translated {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if status >= 400 {
        let v = parsed.unwrap_or(Value::Null);
        let mut e = match kind {
            Kind::Anthropic => anthropic::error(status, &v),
            Kind::Gemini => gemini::error(status, &v),
            Kind::Openai => openai_error(status, &v, body),
        };
        e.status = openai::client_status(status);
        return Translated::Error(e);
    }
    let Some(v) = parsed else {
        return Translated::Error(ApiError::new(
            502,
            "api_error",
            Some("bad_provider_response"),
            "the provider's response is not JSON",
        ));
    };
    let (completion, usage) = match kind {
        Kind::Openai => {
            let u = openai::usage(&v);
            (v, u)
        }
        Kind::Anthropic => anthropic::from_provider(&v, call.created),
        Kind::Gemini => gemini::from_provider(&v, &call.id, call.created),
    };
    let usage = usage.unwrap_or_else(|| {
        let text = openai::answer_text(&completion).unwrap_or("");
        Usage::estimate(call.prompt_tokens, openai::text_tokens(&call.model, text))
    });
    let mut completion = completion;
    if usage.estimated {
        completion["usage"] = usage.to_json();
    }
    // The client sees the model it asked for (a fallback's answer too); logs and
    // metrics carry the alias that answered and the provider's model.
    completion["model"] = Value::String(call.asked.clone());
    Translated::Completion(completion, usage)
}

fn openai_error(status: u16, v: &Value, body: &[u8]) -> ApiError {
    let e = v.get("error");
    let message = match e {
        Some(Value::String(s)) => s.clone(),
        Some(e) => e.get("message").and_then(Value::as_str).unwrap_or("the provider failed").to_owned(),
        None if body.is_empty() => "the provider failed".to_owned(),
        None => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    };
    let kind = e.and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or(openai::error_type(status));
    let mut err = ApiError::new(status, kind, None, message);
    err.code = e
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str().map(str::to_owned).or_else(|| c.as_u64().map(|n| n.to_string())));
    err.param = e.and_then(|e| e.get("param")).and_then(Value::as_str).map(str::to_owned);
    err
}

/// What a prompt route answers: status, content type, body.
pub fn prompt_output(p: &PromptConfig, completion: &Value) -> (u16, &'static str, Vec<u8>) {
    let json_body =
        |status: u16, v: &Value| (status, "application/json", serde_json::to_vec(v).unwrap_or_default());
    let text = openai::answer_text(completion).unwrap_or("");
    match p.output {
        Output::Openai => json_body(200, completion),
        Output::Text => (200, "text/plain; charset=utf-8", text.as_bytes().to_vec()),
        Output::Json => {
            let bad = |why: String| {
                json_body(
                    502,
                    &ApiError::new(502, "invalid_model_output", Some("invalid_model_output"), why).to_json(),
                )
            };
            let Ok(v) = serde_json::from_str::<Value>(strip_fences(text)) else {
                return bad("the model's answer is not JSON".into());
            };
            if let Some(schema) = &p.output_schema
                && let Err(why) = schema.validate(&v)
            {
                return bad(format!("the model's answer does not match the output schema: {why}"));
            }
            json_body(200, &v)
        }
    }
}

/// The JSON inside a Markdown code fence, if the model wrapped it in one.
fn strip_fences(text: &str) -> &str {
    let t = text.trim();
    let Some(inner) = t.strip_prefix("```") else { return t };
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    inner.strip_suffix("```").unwrap_or(inner).trim()
}

/// The chat request a prompt route sends: system and user messages and the params.
pub fn prompt_request(p: &PromptConfig, system: Option<String>, user: String) -> Value {
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.push(json!({"role": "user", "content": user}));
    let mut req = json!({"model": p.model, "messages": messages});
    for (k, v) in &p.params {
        if k != "stream" && k != "messages" && k != "model" {
            req[k] = v.clone();
        }
    }
    if p.output == Output::Json && req.get("response_format").is_none() {
        req["response_format"] = json!({"type": "json_object"});
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_every_provider_have_openais_shape() {
        let call = Call::default();
        let Translated::Error(e) = translate(
            Kind::Openai,
            429,
            br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
            &call,
        ) else {
            panic!()
        };
        assert_eq!(
            (e.status, e.kind.as_str(), e.code.as_deref()),
            (429, "requests", Some("rate_limit_exceeded"))
        );
        let Translated::Error(e) = translate(Kind::Openai, 500, b"boom", &call) else { panic!() };
        assert_eq!((e.status, e.message.as_str(), e.kind.as_str()), (500, "boom", "api_error"));
        let Translated::Error(e) = translate(
            Kind::Anthropic,
            400,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#,
            &call,
        ) else {
            panic!()
        };
        assert_eq!((e.status, e.message.as_str()), (400, "bad"));
        let Translated::Error(e) = translate(Kind::Gemini, 200, b"not json", &call) else { panic!() };
        assert_eq!(e.status, 502);
    }

    #[test]
    fn missing_usage_is_estimated_and_marked() {
        let call = Call { prompt_tokens: 2, ..Call::default() };
        let body = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"abcd"},"finish_reason":"stop"}]}"#;
        let Translated::Completion(c, u) = translate(Kind::Openai, 200, body, &call) else { panic!() };
        assert_eq!(u, Usage { input: 2, output: 1, estimated: true });
        assert_eq!(c["usage"]["estimated"], true);
    }

    #[test]
    fn json_outputs_are_parsed_and_validated() {
        let p: PromptConfig = serde_json::from_value(json!({
            "model": "m", "user": "{{text}}", "output": "json",
            "output_schema": {"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}}
        }))
        .unwrap();
        let completion = |text: &str| json!({"choices": [{"message": {"content": text}}]});
        let (status, ctype, body) = prompt_output(&p, &completion("```json\n{\"summary\": \"s\"}\n```"));
        assert_eq!((status, ctype), (200, "application/json"));
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({"summary": "s"}));
        let (status, _, body) = prompt_output(&p, &completion("{\"other\": 1}"));
        assert_eq!(status, 502);
        assert!(String::from_utf8_lossy(&body).contains("missing required field `summary`"));
        let (status, _, _) = prompt_output(&p, &completion("not json"));
        assert_eq!(status, 502);
        let req = prompt_request(&p, Some("sys".into()), "u".into());
        assert_eq!(req["response_format"]["type"], "json_object");
        assert_eq!(req["messages"][0]["role"], "system");
    }
}
