//! Built-in plugin `transform`: rewrites requests on their way upstream and responses
//! on their way back — headers, path, query parameters, JSON body fields (by JSON
//! pointer, with values from templates over the request's data) and status codes.
//!
//! ```yaml
//! plugins:
//!   - name: transform
//!     config:
//!       request:
//!         headers: { set: { x-user: "{{consumer.name}}" }, remove: [x-debug] }
//!         path: { regex: { pattern: "^/users/([0-9]+)$", replace: "/v2/users/$1" } }
//!         body: { set: [{ pointer: /user_id, value: "{{path.id}}", as: number }] }
//!       response:
//!         status: { "404": 200 }
//! ```
//!
//! The phases it declares follow its config: body phases (which make the gateway
//! buffer bodies) only when body rules exist, the response phase only when response
//! rules need the response. Response header rules that only set, add or remove
//! headers with values known in the request phase (fixed text, request data) become
//! response-header edits made in the request phase, which the gateway applies itself:
//! no response-phase call. `config` holds the serde types, `rules` their compiled form,
//! `template` the placeholder language and `pointer` JSON pointers.
//!
//! A change the host refuses that a rule relies on (a header removal or rename, a
//! status, a body) is a plugin fault, so the route's `on_error` applies: a half-applied
//! transform — a field meant to be replaced or removed that stays — never goes on.
#![deny(clippy::let_underscore_must_use)]

mod config;
mod pointer;
mod rules;
mod template;

use std::cell::OnceCell;
use std::collections::BTreeMap;

use serde_json::Value;
use sluice_plugin_sdk::{
    Consumer, Decision, HeaderError, Headers, Phases, Plugin, Request, Response, export, log,
};

pub use config::TransformConfig;
use rules::{BodyRules, HeaderRules, PathRules, QueryRules};
use template::{Source, Vars};

/// The `transform` plugin: its config and the rules compiled from it by `init`.
#[derive(serde::Deserialize)]
#[serde(transparent)]
pub struct Transform {
    config: TransformConfig,
    #[serde(skip)]
    compiled: Compiled,
}

#[derive(Debug, Default)]
struct Compiled {
    req_headers: HeaderRules,
    path: PathRules,
    query: QueryRules,
    req_body: BodyRules,
    resp_headers: HeaderRules,
    resp_body: BodyRules,
    status: BTreeMap<u16, u16>,
    /// Request data the response rules read: captured in the request phase.
    captures: Vec<Source>,
    /// The response rules are only header rules the request phase can render: they
    /// are made as response-header edits, and there is no response phase.
    early_response: bool,
}

impl Compiled {
    fn new(c: &TransformConfig) -> Result<Compiled, String> {
        let mut compiled = Compiled {
            req_headers: HeaderRules::compile(&c.request.headers, "request.headers", false)?,
            path: PathRules::compile(&c.request.path)?,
            query: QueryRules::compile(&c.request.query)?,
            req_body: BodyRules::compile(&c.request.body, "request.body", false)?,
            resp_headers: HeaderRules::compile(&c.response.headers, "response.headers", true)?,
            resp_body: BodyRules::compile(&c.response.body, "response.body", true)?,
            ..Compiled::default()
        };
        for (from, to) in &c.response.status {
            let from_code = from.parse::<u16>().ok().filter(|s| (100..=999).contains(s));
            let Some(from_code) = from_code else {
                return Err(format!("response.status: `{from}` is not a status code (100 to 999)"));
            };
            if !(200..=999).contains(to) {
                return Err(format!(
                    "response.status.{from}: `{to}` is not a final status code (200 to 999)"
                ));
            }
            compiled.status.insert(from_code, *to);
        }
        compiled.early_response = !compiled.resp_headers.is_empty()
            && compiled.resp_body.is_empty()
            && compiled.status.is_empty()
            && compiled.resp_headers.known_in_request_phase();
        if !compiled.early_response {
            // The response phase renders them: capture the request data they read.
            let resp_templates = compiled.resp_headers.templates().chain(compiled.resp_body.templates());
            for source in resp_templates.flat_map(|t| t.sources()) {
                if !source.in_response() && !compiled.captures.contains(source) {
                    compiled.captures.push(source.clone());
                }
            }
        }
        Ok(compiled)
    }

    fn has_request_rules(&self) -> bool {
        !self.req_headers.is_empty()
            || !self.path.is_empty()
            || !self.query.is_empty()
            || !self.req_body.is_empty()
    }

    fn has_response_rules(&self) -> bool {
        !self.resp_headers.is_empty() || !self.resp_body.is_empty() || !self.status.is_empty()
    }
}

impl Plugin for Transform {
    fn phases(&self) -> Phases {
        let c = &self.compiled;
        let mut phases = Phases::empty();
        if c.has_request_rules() || !c.captures.is_empty() || c.early_response {
            phases |= Phases::REQUEST;
        }
        if !c.req_body.is_empty() {
            phases |= Phases::REQUEST_BODY;
        }
        if c.has_response_rules() && !c.early_response {
            phases |= Phases::RESPONSE;
        }
        if !c.resp_body.is_empty() {
            phases |= Phases::RESPONSE_BODY;
        }
        phases
    }

    fn init(&mut self) -> Result<(), String> {
        self.compiled = Compiled::new(&self.config)?;
        Ok(())
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let c = &self.compiled;
        let (headers, query, body, captured, early) = {
            let vars = RequestVars::new(req);
            let body = match c.req_body.render(&vars) {
                Ok(b) => b,
                Err(e) => return bad_request(req, "invalid_body_value", &e),
            };
            let captured: Vec<(String, Value)> =
                c.captures.iter().filter_map(|s| Some((s.key(), vars.get(s)?))).collect();
            let early = c.early_response.then(|| c.resp_headers.render(&vars));
            (c.req_headers.render(&vars), c.query.render(&vars), body, captured, early)
        };
        for (key, value) in captured {
            req.set_context(&key, &value.to_string());
        }
        if !c.req_body.is_empty() {
            match request_body(req, &c.req_body, body) {
                Ok(()) => {}
                Err(BodyFailure::Malformed(e)) => {
                    return bad_request(
                        req,
                        "invalid_json_body",
                        &format!("the request body is not valid JSON: {e}"),
                    );
                }
                Err(BodyFailure::Fault(fault)) => return Decision::fault(fault),
            }
        }
        if let Err(fault) = c.req_headers.apply(req, &headers) {
            return Decision::fault(fault);
        }
        if let Some(rendered) = early
            && let Err(fault) = c.resp_headers.apply(&mut EarlyResponse(req), &rendered)
        {
            return Decision::fault(fault);
        }
        if !c.path.is_empty() || !c.query.is_empty() {
            let path = req.path();
            let old_query = req.query();
            let new_path = c.path.apply(&path);
            let new_query = if c.query.is_empty() {
                old_query.clone()
            } else {
                c.query.apply(old_query.as_deref(), &query)
            };
            if new_path.is_some() || new_query != old_query {
                let mut target = new_path.unwrap_or(path);
                if let Some(q) = new_query {
                    target.push('?');
                    target.push_str(&q);
                }
                if req.set_path(&target).is_err() {
                    log::warn(&format!(
                        "transform: the rewritten target `{target}` is invalid; kept the original"
                    ));
                }
            }
        }
        Decision::Continue
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        let c = &self.compiled;
        let status = resp.status();
        let (headers, body) = {
            let vars = ResponseVars { resp, status };
            let body = c.resp_body.render(&vars).unwrap_or_else(|e| {
                log::warn(&format!("transform: response body rule skipped: {e}"));
                Vec::new()
            });
            (c.resp_headers.render(&vars), body)
        };
        if !c.resp_body.is_empty()
            && let Err(fault) = response_body(resp, &c.resp_body, body)
        {
            return Decision::fault(fault);
        }
        if let Err(fault) = c.resp_headers.apply(resp, &headers) {
            return Decision::fault(fault);
        }
        // Statuses are checked at load (final ones, 200 to 999): the host refuses none.
        if let Some(to) = c.status.get(&status)
            && let Err(e) = resp.set_status(*to)
        {
            return Decision::fault(format_args!("could not set the status {to}: {e}"));
        }
        Decision::Continue
    }
}

/// True for `application/json` and `application/*+json` without a content-encoding.
fn is_plain_json(content_type: Option<String>, encoding: Option<String>) -> bool {
    if encoding.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
        return false;
    }
    let Some(ct) = content_type else { return false };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Why request body rules could not be applied.
enum BodyFailure {
    /// The client's JSON body is malformed: `400`.
    Malformed(String),
    /// The host refused the new body: a plugin fault.
    Fault(String),
}

/// Applies body rules to a JSON request body. Non-JSON and empty bodies pass.
fn request_body(
    req: &mut Request<'_>,
    rules: &BodyRules,
    rendered: rules::RenderedBody,
) -> Result<(), BodyFailure> {
    if !is_plain_json(req.header("content-type"), req.header("content-encoding")) {
        return Ok(());
    }
    let body = match req.body() {
        Ok(b) => b,
        Err(e) => {
            log::warn(&format!("transform: request body not available ({e:?}); body rules skipped"));
            return Ok(());
        }
    };
    if body.is_empty() {
        return Ok(());
    }
    let malformed = |e: serde_json::Error| BodyFailure::Malformed(e.to_string());
    let mut doc: Value = serde_json::from_slice(&body).map_err(malformed)?;
    rules.apply(&mut doc, rendered);
    let bytes = serde_json::to_vec(&doc).map_err(malformed)?;
    // The body was read, so it is buffered and can be replaced: should the host
    // refuse anyway, the upstream must not get the body the rules were to change.
    req.set_body(&bytes).map_err(|e| BodyFailure::Fault(format!("could not replace the request body: {e}")))
}

/// Applies body rules to a JSON response body; anything else passes untouched. `Err`
/// with the message of a plugin fault when the host refuses the new body (it was
/// read, so it is buffered: it does not): the client must not get the body the
/// rules were to change.
fn response_body(
    resp: &mut Response<'_>,
    rules: &BodyRules,
    rendered: rules::RenderedBody,
) -> Result<(), String> {
    if !is_plain_json(resp.header("content-type"), resp.header("content-encoding")) {
        return Ok(());
    }
    let Ok(body) = resp.body() else { return Ok(()) };
    if body.is_empty() {
        return Ok(());
    }
    let Ok(mut doc) = serde_json::from_slice::<Value>(&body) else {
        log::warn("transform: the upstream's JSON response body is malformed; passed untouched");
        return Ok(());
    };
    rules.apply(&mut doc, rendered);
    match serde_json::to_vec(&doc) {
        Ok(bytes) => resp.set_body(&bytes).map_err(|e| format!("could not replace the response body: {e}")),
        Err(e) => Err(format!("could not serialize the response body: {e}")),
    }
}

/// A `400` in the gateway's JSON error shape.
fn bad_request(req: &Request<'_>, code: &str, message: &str) -> Decision {
    let body = serde_json::json!({
        "error": {
            "status": 400,
            "code": code,
            "message": message,
            "request_id": req.request_id(),
        }
    });
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    bytes.push(b'\n');
    Decision::respond(400, bytes).with_header("content-type", "application/json")
}

/// Request data for templates, read lazily (only what the templates name crosses the
/// plugin boundary).
struct RequestVars<'r, 'a> {
    req: &'r Request<'a>,
    params: OnceCell<Vec<(String, String)>>,
    consumer: OnceCell<Option<Consumer>>,
}

impl<'r, 'a> RequestVars<'r, 'a> {
    fn new(req: &'r Request<'a>) -> Self {
        RequestVars { req, params: OnceCell::new(), consumer: OnceCell::new() }
    }

    fn consumer(&self) -> Option<&Consumer> {
        self.consumer.get_or_init(|| self.req.consumer()).as_ref()
    }
}

impl Vars for RequestVars<'_, '_> {
    fn get(&self, source: &Source) -> Option<Value> {
        let s = match source {
            Source::Method => self.req.method(),
            Source::Path => self.req.path(),
            Source::Route => self.req.route(),
            Source::ClientIp => self.req.client_ip(),
            Source::Header(n) => self.req.header(n)?,
            Source::Query(n) => {
                let q = self.req.query()?;
                q.split('&').find_map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (rules::decode(k) == *n).then(|| rules::decode(v))
                })?
            }
            Source::Param(n) => {
                let params = self.params.get_or_init(|| self.req.path_params());
                params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())?
            }
            Source::ConsumerName => self.consumer()?.name.clone(),
            Source::ConsumerGroups => return Some(Value::from(self.consumer()?.groups.clone())),
            Source::Status | Source::ResponseHeader(_) => return None,
        };
        Some(Value::String(s))
    }
}

/// Response data for templates; request data comes from the values the request
/// phase captured.
/// The response's headers as seen from the request phase: changes become
/// response-header edits; there is nothing to read yet (used only for rules that
/// read no response header).
struct EarlyResponse<'r, 'a>(&'r mut Request<'a>);

impl Headers for EarlyResponse<'_, '_> {
    fn header_all(&self, _: &str) -> Vec<Vec<u8>> {
        Vec::new()
    }
    fn set_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.0.set_response_header(name, value)
    }
    fn append_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.0.append_response_header(name, value)
    }
    fn remove_header(&mut self, name: &str) -> Result<(), HeaderError> {
        self.0.remove_response_header(name)
    }
}

struct ResponseVars<'r, 'a> {
    resp: &'r Response<'a>,
    status: u16,
}

impl Vars for ResponseVars<'_, '_> {
    fn get(&self, source: &Source) -> Option<Value> {
        match source {
            Source::Status => Some(Value::from(self.status)),
            Source::ResponseHeader(n) => self.resp.header(n).map(Value::String),
            Source::ConsumerName => self.resp.consumer().map(|c| Value::String(c.name)),
            Source::ConsumerGroups => self.resp.consumer().map(|c| Value::from(c.groups)),
            other => serde_json::from_str(&self.resp.context(&other.key())?).ok(),
        }
    }
}

export!(Transform);

#[cfg(test)]
mod tests;
