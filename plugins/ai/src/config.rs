//! The plugin's config: providers (each an upstream pool of the gateway), the route's
//! mode (`chat` or `prompt`), and budgets. Validated once, at load.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::template::Template;
use json_schema::Schema;

/// Default `max_tokens` sent to Anthropic, which requires one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Default `anthropic-version` header.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// Largest non-streamed provider response the plugin translates (bigger: `502`).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The `ai` plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiConfig {
    /// `chat` (an OpenAI chat-completions endpoint) or `prompt` (a template route).
    #[serde(default)]
    pub mode: Mode,
    /// The LLM providers this route may call.
    pub providers: Vec<ProviderConfig>,
    /// The model alias used when a chat request names none.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Per-consumer budgets, kept in the gateway's `kv` store.
    #[serde(default)]
    pub budgets: Option<BudgetsConfig>,
    /// The template, for `mode: prompt`.
    #[serde(default)]
    pub prompt: Option<PromptConfig>,
    /// Model alias → the aliases tried in turn when its provider answers a status of
    /// `fallback_on`. Fallback providers are called directly at their `url` (through
    /// the plugin's `http` grant) and their answer is not streamed incrementally.
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Provider statuses that trigger a fallback.
    #[serde(default = "default_fallback_on")]
    pub fallback_on: Vec<u16>,
}

fn default_fallback_on() -> Vec<u16> {
    DEFAULT_FALLBACK_ON.to_vec()
}

/// Default statuses that trigger a fallback: rate limited, overloaded, failed.
pub const DEFAULT_FALLBACK_ON: &[u16] = &[429, 500, 502, 503, 504, 529];

/// What the route is.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `POST` an OpenAI chat-completions request; the `model` picks the provider.
    #[default]
    Chat,
    /// `POST` a JSON document; a configured template becomes the chat request.
    Prompt,
}

/// The wire format a provider speaks.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// OpenAI chat completions (also vLLM, llama.cpp, Ollama, LM Studio, …).
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
}

impl Kind {
    /// The name used in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Openai => "openai",
            Kind::Anthropic => "anthropic",
            Kind::Gemini => "gemini",
        }
    }
}

/// One LLM provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name (metrics label; `name/model` selects a raw model).
    pub name: String,
    /// The wire format.
    pub kind: Kind,
    /// The gateway upstream pool (`upstreams:`) that reaches the provider.
    pub upstream: String,
    /// The secret (granted with `grants.secrets`) holding the API key; none for local
    /// servers that need no key.
    #[serde(default)]
    pub api_key_secret: Option<String>,
    /// Path prefix of the API on the upstream (default `/v1` for OpenAI and Anthropic,
    /// `/v1beta` for Gemini).
    #[serde(default)]
    pub base_path: Option<String>,
    /// Model aliases clients use → the provider's model names.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// Price per 1000 tokens, for the cost metrics and the daily cost budget.
    #[serde(default)]
    pub price: PriceConfig,
    /// Base URL (`https://api.example.com`) for direct calls when the provider is a
    /// fallback; its host must be in the plugin's `grants.http.allow`.
    #[serde(default)]
    pub url: Option<String>,
    /// `max_tokens` sent to Anthropic when the client gives none.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u64,
    /// `anthropic-version` header.
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
}

fn default_max_tokens() -> u64 {
    DEFAULT_MAX_TOKENS
}

fn default_anthropic_version() -> String {
    DEFAULT_ANTHROPIC_VERSION.to_owned()
}

impl ProviderConfig {
    /// The API path prefix.
    pub fn base_path(&self) -> &str {
        match (&self.base_path, self.kind) {
            (Some(p), _) => p.trim_end_matches('/'),
            (None, Kind::Gemini) => "/v1beta",
            (None, _) => "/v1",
        }
    }
}

/// Price per 1000 tokens (any currency; metrics count millionths of it).
#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Per 1000 prompt tokens.
    #[serde(default)]
    pub input_per_1k: f64,
    /// Per 1000 completion tokens.
    #[serde(default)]
    pub output_per_1k: f64,
}

/// Budgets per consumer (the authenticated consumer, else the client IP).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Prompt + completion tokens per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Cost per UTC day, in the prices' currency.
    #[serde(default)]
    pub cost_per_day: Option<f64>,
    /// A budget several routes share: every route whose `budgets` name the same
    /// `shared` counts against one budget per consumer. Absent (the default), the
    /// route's budget is its own: spending on one route never refuses a consumer on
    /// another.
    #[serde(default)]
    pub shared: Option<String>,
}

/// What a prompt route returns.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// The answer as `text/plain`.
    #[default]
    Text,
    /// The answer parsed as JSON (optionally validated by `output_schema`).
    Json,
    /// The whole OpenAI `chat.completion`.
    Openai,
}

/// A prompt template route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// The model alias to call.
    pub model: String,
    /// The system message template.
    #[serde(default)]
    pub system: Option<Template>,
    /// The user message template.
    pub user: Template,
    /// JSON Schema (subset) the request body must match.
    #[serde(default)]
    pub input_schema: Option<Schema>,
    /// The response shape.
    #[serde(default)]
    pub output: Output,
    /// JSON Schema (subset) the model's JSON answer must match (`output: json`).
    #[serde(default)]
    pub output_schema: Option<Schema>,
    /// Extra chat-completions parameters (`temperature`, `max_tokens`, …).
    #[serde(default)]
    pub params: serde_json::Map<String, Value>,
}

/// A model alias resolved to a provider.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'a> {
    /// The provider's index in `providers`.
    pub index: usize,
    /// The provider.
    pub provider: &'a ProviderConfig,
    /// The provider's model name.
    pub model: &'a str,
}

impl AiConfig {
    /// Checks everything that can be checked at load.
    pub fn validate(&self) -> Result<(), String> {
        if self.providers.is_empty() {
            return Err("providers: at least one provider is required".into());
        }
        for (i, p) in self.providers.iter().enumerate() {
            if p.name.is_empty() || p.upstream.is_empty() {
                return Err(format!("providers[{i}]: name and upstream must not be empty"));
            }
            if self.providers[..i].iter().any(|q| q.name == p.name) {
                return Err(format!("providers[{i}]: duplicate provider name `{}`", p.name));
            }
            if p.price.input_per_1k < 0.0 || p.price.output_per_1k < 0.0 {
                return Err(format!("providers[{i}].price: prices must not be negative"));
            }
            if let Some(b) = &p.base_path
                && !b.starts_with('/')
            {
                return Err(format!("providers[{i}].base_path: must start with /"));
            }
        }
        if let Some(m) = &self.default_model
            && self.resolve(m).is_none()
        {
            return Err(format!("default_model: no provider has the model `{m}`"));
        }
        if let Some(b) = &self.budgets
            && b.cost_per_day.is_some_and(|c| c < 0.0)
        {
            return Err("budgets.cost_per_day: must not be negative".into());
        }
        for (alias, list) in &self.fallbacks {
            if self.resolve(alias).is_none() {
                return Err(format!("fallbacks: no provider has the model `{alias}`"));
            }
            for f in list {
                let Some(r) = self.resolve(f) else {
                    return Err(format!("fallbacks.{alias}: no provider has the model `{f}`"));
                };
                if !r
                    .provider
                    .url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
                {
                    return Err(format!(
                        "fallbacks.{alias}: provider `{}` needs a `url` (http:// or https://) to be a fallback",
                        r.provider.name
                    ));
                }
            }
        }
        match (self.mode, &self.prompt) {
            (Mode::Prompt, None) => Err("mode prompt needs a `prompt` section".into()),
            (Mode::Chat, Some(_)) => Err("`prompt` is only used with `mode: prompt`".into()),
            (Mode::Prompt, Some(p)) => {
                if self.resolve(&p.model).is_none() {
                    return Err(format!("prompt.model: no provider has the model `{}`", p.model));
                }
                if p.output_schema.is_some() && p.output != Output::Json {
                    return Err("prompt.output_schema needs `output: json`".into());
                }
                Ok(())
            }
            (Mode::Chat, None) => Ok(()),
        }
    }

    /// The provider and model for a client's `model`: an alias of a provider (first
    /// provider wins), or `provider-name/model` for a model without an alias.
    pub fn resolve<'a>(&'a self, model: &'a str) -> Option<Resolved<'a>> {
        for (index, provider) in self.providers.iter().enumerate() {
            if let Some(real) = provider.models.get(model) {
                return Some(Resolved { index, provider, model: real });
            }
        }
        let (name, raw) = model.split_once('/')?;
        let index = self.providers.iter().position(|p| p.name == name)?;
        if raw.is_empty() {
            return None;
        }
        Some(Resolved { index, provider: &self.providers[index], model: raw })
    }
}
