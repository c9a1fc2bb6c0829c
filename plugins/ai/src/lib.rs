//! Built-in plugin `ai`: an AI gateway on the plugin contract.
//!
//! - `mode: chat`: the route is an OpenAI chat-completions endpoint. The request's
//!   `model` (an alias) picks a provider — OpenAI-compatible, Anthropic Messages or
//!   Gemini — and the request is translated to its format and sent to the provider's
//!   upstream pool; the answer is translated back, streamed (SSE) chunk by chunk when
//!   the client asked for `stream: true`.
//! - `mode: prompt`: the route is a REST API over a prompt template: the JSON body is
//!   validated, rendered into system and user messages, sent as above, and the answer
//!   returned as text, as validated JSON or as the whole completion.
//!
//! Every call is accounted (tokens and cost as labeled metrics and access-log
//! annotations) and checked against per-consumer budgets in `kv`.
//!
//! The response body goes through `on-response-chunk` (chat mode; never buffered
//! when streamed) or is buffered for `on-response` (prompt mode). A chat response's
//! translation state lives in this instance from its `on-response` to its last chunk.
//! A change the host refuses is a plugin fault (the route's `on_error` applies).
#![deny(clippy::let_underscore_must_use)]

mod account;
mod anthropic;
mod call;
mod config;
mod fallback;
mod gemini;
mod openai;
mod response;
mod sse;
mod stream;
mod template;

use std::cell::RefCell;

use serde_json::{Value, json};
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, Response, export, log};

use crate::call::{CHAT_KEY, CONTEXT_KEY, Call};
use crate::config::{AiConfig, MAX_RESPONSE_BYTES, Mode};
use crate::openai::{ApiError, Usage};
use crate::response::Translated;
use crate::stream::Stream;
use crate::template::Var;

/// The plugin: its config and the state of the response being streamed.
#[derive(serde::Deserialize)]
#[serde(from = "AiConfig")]
pub struct Ai {
    cfg: AiConfig,
    pending: RefCell<Option<Pending>>,
}

impl From<AiConfig> for Ai {
    fn from(cfg: AiConfig) -> Ai {
        Ai { cfg, pending: RefCell::new(None) }
    }
}

/// A chat response between `on-response` and its last chunk.
enum Pending {
    /// A streamed completion, translated event by event.
    Stream { call: Call, status: u16, stream: Box<Stream> },
    /// A whole completion or error, collected then translated.
    Whole { call: Call, status: u16, body: Vec<u8> },
}

impl Plugin for Ai {
    fn phases(&self) -> Phases {
        let base = Phases::REQUEST | Phases::REQUEST_BODY | Phases::RESPONSE;
        match self.cfg.mode {
            Mode::Chat => base | Phases::RESPONSE_CHUNK,
            Mode::Prompt => base | Phases::RESPONSE_BODY,
        }
    }

    fn init(&mut self) -> Result<(), String> {
        self.cfg.validate()
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        match self.cfg.mode {
            Mode::Chat => self.chat_request(req),
            Mode::Prompt => self.prompt_request(req),
        }
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        let Some(call) = resp.context(CONTEXT_KEY).and_then(|c| serde_json::from_str::<Call>(&c).ok()) else {
            return Decision::Continue;
        };
        match self.cfg.mode {
            Mode::Chat => self.chat_response(resp, call),
            Mode::Prompt => self.prompt_response(resp, call),
        }
    }

    fn on_response_chunk(&self, chunk: Vec<u8>, last: bool) -> Vec<u8> {
        let mut slot = self.pending.borrow_mut();
        let out = match slot.as_mut() {
            None => return chunk,
            Some(Pending::Stream { stream, .. }) if !last => return stream.push(&chunk),
            Some(Pending::Whole { body, .. }) if !last => {
                if body.len() + chunk.len() <= MAX_RESPONSE_BYTES {
                    body.extend_from_slice(&chunk);
                }
                return Vec::new();
            }
            Some(Pending::Stream { stream, .. }) => {
                let mut out = stream.push(&chunk);
                out.extend(stream.finish());
                out
            }
            Some(Pending::Whole { body, .. }) => {
                body.extend_from_slice(&chunk);
                Vec::new()
            }
        };
        match slot.take() {
            Some(Pending::Stream { call, status, stream }) => {
                self.record(&call, stream.usage(), status);
                out
            }
            Some(Pending::Whole { call, status, body }) => self.whole(&call, status, &body),
            None => out,
        }
    }
}

impl Ai {
    fn chat_request(&self, req: &mut Request<'_>) -> Decision {
        let method = req.method();
        if method == "GET" && req.path().ends_with("/models") {
            return Decision::respond_json(200, &self.model_list());
        }
        if method != "POST" {
            return ApiError::new(405, "invalid_request_error", None, "use POST")
                .respond()
                .with_header("allow", "POST");
        }
        let chat: Value = match req.body().ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(v @ Value::Object(_)) => v,
            _ => {
                return ApiError::invalid("the body must be a JSON chat-completions request", None).respond();
            }
        };
        if !chat.get("messages").is_some_and(Value::is_array) {
            return ApiError::invalid("`messages` must be a list", Some("messages")).respond();
        }
        let alias = match (chat.get("model").and_then(Value::as_str), &self.cfg.default_model) {
            (Some(m), _) => m.to_owned(),
            (None, Some(d)) => d.clone(),
            (None, None) => return ApiError::invalid("`model` is required", Some("model")).respond(),
        };
        match call::prepare(&self.cfg, req, &chat, &alias) {
            Ok(_) => Decision::Continue,
            Err(r) => call::refuse(r),
        }
    }

    fn model_list(&self) -> Value {
        let data: Vec<Value> = self
            .cfg
            .providers
            .iter()
            .flat_map(|p| {
                p.models.keys().map(
                    move |alias| json!({"id": alias, "object": "model", "created": 0, "owned_by": p.name}),
                )
            })
            .collect();
        json!({"object": "list", "data": data})
    }

    fn prompt_request(&self, req: &mut Request<'_>) -> Decision {
        let Some(p) = &self.cfg.prompt else { return Decision::Continue };
        let body: Value = match req.body().ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(v) => v,
            None => return ApiError::invalid("the body must be JSON", None).respond(),
        };
        if let Some(schema) = &p.input_schema
            && let Err(why) = schema.validate(&body)
        {
            let field = why.split('`').nth(1).map(str::to_owned);
            return ApiError::invalid(why, field.as_deref()).respond();
        }
        let params = req.path_params();
        let consumer = req.consumer();
        let lookup = |v: &Var| -> Option<String> {
            match v {
                Var::Body(path) => template::body_field(&body, path),
                Var::Param(name) => params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
                Var::Header(name) => req.header(name),
                Var::ConsumerName => consumer.as_ref().map(|c| c.name.clone()),
                Var::ConsumerGroups => consumer.as_ref().map(|c| c.groups.join(",")),
            }
        };
        let rendered = p
            .system
            .as_ref()
            .map(|t| t.render(&lookup))
            .transpose()
            .and_then(|s| Ok((s, p.user.render(&lookup)?)));
        let (system, user) = match rendered {
            Ok(x) => x,
            Err(var) => {
                let name = var.display();
                return ApiError::invalid(format!("missing field `{name}`"), Some(&name)).respond();
            }
        };
        let chat = response::prompt_request(p, system, user);
        match call::prepare(&self.cfg, req, &chat, &p.model) {
            Ok(_) => Decision::Continue,
            Err(r) => call::refuse(r),
        }
    }

    fn chat_response(&self, resp: &mut Response<'_>, call: Call) -> Decision {
        // A response whose client went away before its last chunk left its state
        // here: account for what it used.
        if let Some(Pending::Stream { call, stream, .. }) = self.pending.take() {
            self.record(&call, stream.usage(), 499);
        }
        let status = resp.status();
        if let Some(r) = self.rescue(resp, &call, status) {
            return self.chat_rescued(r);
        }
        let kind = self.cfg.providers[call.provider].kind;
        // The names and values below are constants and the status is the upstream's
        // own (or 503): the host refuses none of them. Should it ever, the client
        // would get a translated body under the provider's headers: a fault instead.
        let pending = if call.stream && status < 300 {
            for (name, value) in [("content-type", "text/event-stream"), ("cache-control", "no-cache")] {
                if let Err(e) = resp.set_header(name, value) {
                    return Decision::fault(format_args!("could not set the response header `{name}`: {e}"));
                }
            }
            let s = Stream::new(
                kind,
                &call.id,
                call.created,
                &call.asked,
                call.include_usage,
                call.prompt_tokens,
            )
            .counted_by(&call.model);
            Pending::Stream { call, status, stream: Box::new(s) }
        } else {
            let client_status = openai::client_status(status);
            if let Err(e) = resp.set_status(client_status) {
                return Decision::fault(format_args!("could not set the status {client_status}: {e}"));
            }
            if let Err(e) = resp.set_header("content-type", "application/json") {
                return Decision::fault(format_args!(
                    "could not set the response header `content-type`: {e}"
                ));
            }
            Pending::Whole { call, status, body: Vec::new() }
        };
        *self.pending.borrow_mut() = Some(pending);
        Decision::Continue
    }

    /// A fallback's answer, when the provider failed with a `fallback_on` status.
    fn rescue(&self, resp: &Response<'_>, call: &Call, status: u16) -> Option<fallback::Rescued> {
        if !self.cfg.fallback_on.contains(&status) || !self.cfg.fallbacks.contains_key(&call.alias) {
            return None;
        }
        let chat: Value = serde_json::from_str(&resp.context(CHAT_KEY)?).ok()?;
        let failed = &self.cfg.providers[call.provider];
        log::warn(&format!("provider {} answered {status} for model {}", failed.name, call.alias));
        let r = fallback::rescue(&self.cfg, call, &chat)?;
        log::annotate("fallback_from", &call.alias);
        Some(r)
    }

    /// Replaces a failed chat response with a fallback's answer (arrived whole).
    fn chat_rescued(&self, r: fallback::Rescued) -> Decision {
        let kind = self.cfg.providers[r.call.provider].kind;
        if r.call.stream && r.status < 300 {
            let c = &r.call;
            let mut s = Stream::new(kind, &c.id, c.created, &c.asked, c.include_usage, c.prompt_tokens)
                .counted_by(&c.model);
            let mut out = s.push(&r.body);
            out.extend(s.finish());
            self.record(c, s.usage(), r.status);
            return Decision::respond(200, out)
                .with_header("content-type", "text/event-stream")
                .with_header("cache-control", "no-cache");
        }
        let out = self.whole(&r.call, r.status, &r.body);
        Decision::respond(openai::client_status(r.status), out)
            .with_header("content-type", "application/json")
    }

    /// The last chunk of a whole chat response: the translated body.
    fn whole(&self, call: &Call, status: u16, body: &[u8]) -> Vec<u8> {
        let kind = self.cfg.providers[call.provider].kind;
        let out = match response::translate(kind, status, body, call) {
            Translated::Completion(c, usage) => {
                self.record(call, usage, status);
                c
            }
            Translated::Error(e) => {
                self.record(call, Usage::default(), e.status);
                e.to_json()
            }
        };
        serde_json::to_vec(&out).unwrap_or_default()
    }

    fn prompt_response(&self, resp: &mut Response<'_>, call: Call) -> Decision {
        let Some(p) = &self.cfg.prompt else { return Decision::Continue };
        let (call, status, body) = match self.rescue(resp, &call, resp.status()) {
            Some(r) => (r.call, r.status, r.body),
            None => (call, resp.status(), resp.body().unwrap_or_default()),
        };
        let kind = self.cfg.providers[call.provider].kind;
        let (status, ctype, out) = match response::translate(kind, status, &body, &call) {
            Translated::Completion(c, usage) => {
                self.record(&call, usage, status);
                response::prompt_output(p, &c)
            }
            Translated::Error(e) => {
                self.record(&call, Usage::default(), e.status);
                (e.status, "application/json", serde_json::to_vec(&e.to_json()).unwrap_or_default())
            }
        };
        // The status is the provider's or one of our errors', the content type a
        // constant, and the body was buffered (a declared phase): none is refused.
        // Should one be, the client would get a half-translated answer: a fault.
        if let Err(e) = resp.set_status(status) {
            return Decision::fault(format_args!("could not set the status {status}: {e}"));
        }
        if let Err(e) = resp.set_header("content-type", ctype) {
            return Decision::fault(format_args!("could not set the response header `content-type`: {e}"));
        }
        if let Err(e) = resp.set_body(&out) {
            return Decision::fault(format_args!("could not replace the response body: {e}"));
        }
        Decision::Continue
    }

    fn record(&self, call: &Call, usage: Usage, status: u16) {
        let p = &self.cfg.providers[call.provider];
        account::record(call, &p.name, p.price, self.cfg.budgets.as_ref(), usage, status);
    }
}

export!(Ai);

#[cfg(test)]
mod tests;
