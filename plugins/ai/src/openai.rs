//! The OpenAI chat-completions format the gateway speaks to clients: errors, usage,
//! completion and chunk builders, and the passthrough translation for
//! OpenAI-compatible providers.

use serde_json::{Value, json};
use sluice_plugin_sdk::{Decision, tokens};

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// True when the provider reported none and these are estimates (see
    /// [`prompt_tokens`] and [`text_tokens`]).
    pub estimated: bool,
}

impl Usage {
    /// Estimated counts.
    pub fn estimate(input: u64, output: u64) -> Usage {
        Usage { input, output, estimated: true }
    }

    /// The OpenAI `usage` object (with `"estimated": true` for estimates).
    pub fn to_json(self) -> Value {
        let mut u = json!({
            "prompt_tokens": self.input,
            "completion_tokens": self.output,
            "total_tokens": self.input + self.output,
        });
        if self.estimated {
            u["estimated"] = Value::Bool(true);
        }
        u
    }
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Human-readable message.
    pub message: String,
    /// OpenAI error type, like `invalid_request_error`.
    pub kind: String,
    /// The request field at fault, if any.
    pub param: Option<String>,
    /// A machine-readable code, like `model_not_found`.
    pub code: Option<String>,
}

impl ApiError {
    /// A `400 invalid_request_error`.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error".into(),
            param: param.map(str::to_owned),
            code: None,
        }
    }

    /// An error with an explicit status, type and code.
    pub fn new(status: u16, kind: &str, code: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind: kind.into(),
            param: None,
            code: code.map(str::to_owned),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }

    /// Answers the client with this error.
    pub fn respond(&self) -> Decision {
        Decision::respond_json(self.status, &self.to_json())
    }
}

/// The OpenAI error type for a status, when the provider gave none we can use.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The status the client sees for a provider's error status (Anthropic's `529
/// overloaded` is not a standard status: `503`).
pub fn client_status(status: u16) -> u16 {
    match status {
        529 => 503,
        s => s,
    }
}

/// `usage` of an OpenAI completion or chunk.
pub fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        input: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        output: u.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
        estimated: false,
    })
}

/// The text of the first choice of a completion.
pub fn answer_text(v: &Value) -> Option<&str> {
    v.pointer("/choices/0/message/content").and_then(Value::as_str)
}

/// Tokens OpenAI's chat format adds to every message around its role and content.
const PER_MESSAGE: u64 = 3;
/// Tokens it adds once, priming the reply.
const REPLY_PRIMING: u64 = 3;

/// Tokens of `text` for `model`: its tokenizer's count when the gateway has one (the
/// OpenAI models), else about four characters per token.
pub fn text_tokens(model: &str, text: &str) -> u64 {
    tokens::count(model, text).map_or_else(|| (text.chars().count() as u64).div_ceil(4), u64::from)
}

/// The prompt of a chat request in tokens, for usage estimates: every message's role,
/// name and content text by [`text_tokens`], plus what the chat format adds (3 per
/// message, 1 per name, 3 for the reply), as OpenAI counts it. Tool definitions and
/// images are not counted.
pub fn prompt_tokens(req: &Value, model: &str) -> u64 {
    let Some(messages) = req.get("messages").and_then(Value::as_array) else { return 0 };
    let text = |m: &Value, key: &str| m.get(key).and_then(Value::as_str).map(|s| text_tokens(model, s));
    let per_message = messages.iter().map(|m| {
        PER_MESSAGE
            + text(m, "role").unwrap_or(0)
            + text(m, "name").map_or(0, |n| n + 1)
            + text_tokens(model, &content_text(m.get("content").unwrap_or(&Value::Null)))
    });
    REPLY_PRIMING + per_message.sum::<u64>()
}

/// The text of a message's `content` (a string, or the text of its parts).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    }
}

/// A `chat.completion` with one choice.
pub fn completion(id: &str, created: u64, model: &str, message: Value, finish: &str, usage: Usage) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage.to_json(),
    })
}

/// A `chat.completion.chunk` with one choice.
pub fn chunk(id: &str, created: u64, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    })
}

/// The final usage chunk of a stream (`stream_options.include_usage`).
pub fn usage_chunk(id: &str, created: u64, model: &str, usage: Usage) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage.to_json(),
    })
}

/// One SSE event carrying `v`.
pub fn sse(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// The end-of-stream marker.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The request for an OpenAI-compatible provider: the client's, with the provider's
/// model and, when streaming, usage requested (the gateway needs it for accounting;
/// the usage chunk is dropped again unless the client asked for it).
pub fn to_provider(req: &Value, model: &str) -> Value {
    let mut out = req.clone();
    out["model"] = Value::String(model.to_owned());
    if out.get("stream").and_then(Value::as_bool) == Some(true) {
        out["stream_options"]["include_usage"] = Value::Bool(true);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_maps_the_model_and_asks_for_stream_usage() {
        let req = json!({"model": "fast", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let out = to_provider(&req, "gpt-4o-mini");
        assert_eq!(out["model"], "gpt-4o-mini");
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["messages"], req["messages"]);
        let out = to_provider(&json!({"model": "fast", "messages": []}), "m");
        assert!(out.get("stream_options").is_none());
    }

    #[test]
    fn errors_and_usage_have_openais_shape() {
        let e = ApiError::invalid("bad", Some("messages"));
        assert_eq!(e.to_json()["error"]["param"], "messages");
        assert_eq!(e.to_json()["error"]["type"], "invalid_request_error");
        let u = usage(&json!({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})).unwrap();
        assert_eq!(u.to_json()["total_tokens"], 7);
        assert_eq!(Usage::estimate(9, 4), Usage { input: 9, output: 4, estimated: true });
    }

    #[test]
    fn a_prompt_is_counted_with_the_models_tokenizer_and_the_chat_formats_overhead() {
        let req = json!({"messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "name": "ann", "content": [{"type": "text", "text": "hello world"}]}
        ]});
        // With the tokenizer (o200k for gpt-4o): each piece by itself, then 3 per
        // message, 1 for the name and 3 for the reply.
        let n = |t: &str| u64::from(tokens::count("gpt-4o", t).unwrap());
        let with =
            n("system") + n("You are terse.") + n("user") + n("ann") + 1 + n("hello world") + 3 * 2 + 3;
        assert_eq!(prompt_tokens(&req, "gpt-4o"), with);
        // Without one: four characters a token, rounded up piece by piece.
        let without = [6, 14, 4, 3, 11].iter().map(|c: &u64| c.div_ceil(4)).sum::<u64>() + 1 + 3 * 2 + 3;
        assert_eq!(prompt_tokens(&req, "llama-3"), without);
        assert_eq!(prompt_tokens(&json!({}), "gpt-4o"), 0);
        assert_eq!(text_tokens("gpt-4o", "hello world"), 2);
        assert_eq!(text_tokens("llama-3", "hello world"), 3);
    }
}
