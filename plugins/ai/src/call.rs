//! The request phase's common half: an OpenAI chat request (from the client, or
//! rendered from a prompt template) becomes the chosen provider's request, and what
//! the response phase needs is remembered in the request's context.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_plugin_sdk::{Request, clock, log, secrets};

use crate::config::{AiConfig, Kind, ProviderConfig};
use crate::openai::{self, ApiError};
use crate::{account, anthropic, gemini};

/// The context key holding the [`Call`].
pub const CONTEXT_KEY: &str = "call";
/// The context key holding the client's chat request, kept when fallbacks may need it.
pub const CHAT_KEY: &str = "chat";

/// What the response phase needs to know about a call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Call {
    /// Index of the provider in the config.
    pub provider: usize,
    /// The alias this call went to (a fallback's own alias after a fallback): the
    /// `model` of metrics and the access log.
    pub alias: String,
    /// The alias the client asked for: the `model` of every answer it gets, a
    /// fallback's included.
    #[serde(default)]
    pub asked: String,
    /// The provider's model.
    pub model: String,
    /// Streamed (SSE) response.
    pub stream: bool,
    /// The client asked for the usage chunk.
    pub include_usage: bool,
    /// The prompt in tokens, estimated for when the provider reports no usage
    /// ([`openai::prompt_tokens`]).
    #[serde(default)]
    pub prompt_tokens: u64,
    /// The consumer's name (`anonymous` without one), a metrics label.
    pub consumer: String,
    /// Whose budget the call counts against.
    pub budget_key: String,
    /// The route, a metrics label.
    pub route: String,
    /// The completion id given to the client when the provider gives none.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
}

/// Headers of the client that must not reach a provider (the gateway's own
/// credentials, and compression the plugin would have to undo).
const STRIPPED: &[&str] =
    &["authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "accept-encoding"];

/// A rejected request: the error, and `retry-after` seconds for budgets.
pub type Refusal = (ApiError, Option<u64>);

fn internal(message: &str) -> ApiError {
    ApiError::new(500, "api_error", None, message)
}

/// Turns the OpenAI request `chat` into the provider's request on `req`.
pub fn prepare(cfg: &AiConfig, req: &mut Request<'_>, chat: &Value, alias: &str) -> Result<Call, Refusal> {
    let Some(resolved) = cfg.resolve(alias) else {
        let mut e = ApiError::new(
            404,
            "invalid_request_error",
            Some("model_not_found"),
            format!("the model `{alias}` does not exist"),
        );
        e.param = Some("model".into());
        return Err((e, None));
    };
    let consumer = req.consumer();
    let budget_key =
        account::budget_key(cfg.budgets.as_ref(), &req.route(), consumer.as_ref(), &req.client_ip());
    let now = clock::now_ms();
    if let Some(b) = &cfg.budgets {
        account::check(b, &budget_key, now).map_err(|(e, retry)| (e, Some(retry)))?;
    }
    let provider = resolved.provider;
    let stream = chat.get("stream").and_then(Value::as_bool) == Some(true);
    let out = outgoing(provider, resolved.model, chat, stream).map_err(|e| (e, None))?;
    for h in STRIPPED {
        req.remove_header(h).map_err(io)?;
    }
    for (name, value) in &out.headers {
        req.set_header(name, value)
            .map_err(|_| (internal("the provider's api key is not a valid header value"), None))?;
    }
    req.set_body(&out.body).map_err(io)?;
    req.set_path(&out.path).map_err(io)?;
    req.set_upstream(&provider.upstream).map_err(|_| {
        log::error(&format!("provider {}: no upstream named `{}`", provider.name, provider.upstream));
        (internal("the gateway's provider upstream is not configured"), None)
    })?;
    let call = Call {
        provider: resolved.index,
        alias: alias.to_owned(),
        asked: alias.to_owned(),
        model: resolved.model.to_owned(),
        stream,
        include_usage: stream
            && chat.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true),
        prompt_tokens: openai::prompt_tokens(chat, resolved.model),
        consumer: consumer.map_or_else(|| "anonymous".to_owned(), |c| c.name),
        budget_key,
        route: req.route(),
        id: format!("chatcmpl-{:x}{:06x}", now, clock::monotonic_ns() & 0xff_ffff),
        created: now / 1000,
    };
    req.set_context(CONTEXT_KEY, &serde_json::to_string(&call).unwrap_or_default());
    if cfg.fallbacks.contains_key(alias) {
        req.set_context(CHAT_KEY, &chat.to_string());
    }
    Ok(call)
}

fn io<E>(_: E) -> Refusal {
    (internal("the gateway could not build the provider request"), None)
}

/// A provider request: path and query (below the upstream), headers, body.
#[derive(Debug)]
pub struct Outgoing {
    /// Path and query, like `/v1/messages`.
    pub path: String,
    /// Headers to set (content type, credentials, version).
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// The `provider`'s request for the OpenAI request `chat`, on its `model`.
pub fn outgoing(
    provider: &ProviderConfig,
    model: &str,
    chat: &Value,
    stream: bool,
) -> Result<Outgoing, ApiError> {
    let (body, path) = match provider.kind {
        Kind::Openai => (openai::to_provider(chat, model), "/chat/completions".to_owned()),
        Kind::Anthropic => {
            (anthropic::to_provider(chat, model, provider.default_max_tokens)?, "/messages".to_owned())
        }
        Kind::Gemini => (gemini::to_provider(chat)?, gemini::path(model, stream)),
    };
    let key = match &provider.api_key_secret {
        Some(name) => match secrets::get(name) {
            Some(k) => Some(k),
            None => {
                log::error(&format!(
                    "provider {}: the secret `{name}` is not granted (grants.secrets)",
                    provider.name
                ));
                return Err(internal("the gateway's provider credentials are not configured"));
            }
        },
        None => None,
    };
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if stream {
        headers.push(("accept", "text/event-stream".to_owned()));
    }
    match (provider.kind, key) {
        (Kind::Openai, Some(k)) => headers.push(("authorization", format!("Bearer {k}"))),
        (Kind::Openai, None) => {}
        (Kind::Anthropic, k) => {
            headers.push(("anthropic-version", provider.anthropic_version.clone()));
            headers.extend(k.map(|k| ("x-api-key", k)));
        }
        (Kind::Gemini, k) => headers.extend(k.map(|k| ("x-goog-api-key", k))),
    }
    let body = serde_json::to_vec(&body).unwrap_or_default();
    Ok(Outgoing { path: format!("{}{path}", provider.base_path()), headers, body })
}

/// Answers with a refusal.
pub fn refuse((e, retry): Refusal) -> sluice_plugin_sdk::Decision {
    let d = e.respond();
    match retry {
        Some(s) => d.with_header("retry-after", s.to_string()),
        None => d,
    }
}
