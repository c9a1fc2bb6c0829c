//! Built-in plugin `openapi-validate`: requests (and optionally responses) checked
//! against an OpenAPI 3.0/3.1 document.
//!
//! ```yaml
//! plugins:
//!   - name: openapi-validate
//!     config:
//!       spec: { $file: petstore.yaml }   # the gateway reads the file (YAML or JSON)
//!       responses: log                    # off | log (default) | block
//! ```
//!
//! - The request's method and path pick the operation (path templates like
//!   `/pets/{petId}`; literal segments win). `path:` pins the template (what
//!   `sluice import openapi` writes, one route per path); `prefix:` is stripped from
//!   request paths first.
//! - Checked: path, query, header and cookie parameters (required, and their schema
//!   after reading the text as the schema's type: `?limit=abc` against an integer is
//!   `must be of type integer`), and JSON request bodies against the operation's
//!   schema (`$ref`s resolved); a body without `Content-Type` is read as JSON when
//!   the operation takes JSON. Other media types are checked for being documented
//!   only.
//! - A bad request gets `400` with an RFC 9457 `application/problem+json` body whose
//!   `errors` list names each field (`/name` for body members, `query.limit` for
//!   parameters) and what is wrong. An undocumented media type gets `415`; a path or
//!   method the document does not have gets `404`/`405`, unless
//!   `undocumented: allow`.
//! - Responses (JSON bodies, against the documented status, `2XX` or `default`):
//!   `log` writes a warning and annotates the access log (`openapi_response=invalid`),
//!   `block` replaces the response with a `502` problem, `off` skips them.
//! - The document is compiled once per instance in `configure`; a request costs its
//!   operation's parameters and schemas, not the document.

mod check;
mod spec;
#[cfg(test)]
mod tests;

use serde::Deserialize;
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, Response, export, log};

use check::{BodyVerdict, Inputs, Problem};
use spec::Api;

/// Default cap on the problems listed in one answer.
pub const DEFAULT_MAX_ERRORS: usize = 20;

/// The context key under which the request phase leaves the operation
/// (`item:operation` indexes) for the response phase.
const OPERATION_KEY: &str = "operation";

/// The problem types of the answers.
const TYPE_INVALID: &str = "urn:sluice:problem:request-validation";
const TYPE_UNDOCUMENTED: &str = "urn:sluice:problem:undocumented-operation";
const TYPE_RESPONSE: &str = "urn:sluice:problem:response-validation";

/// What to do with responses that do not match the document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResponsesMode {
    /// Do not check responses.
    Off,
    /// Log a warning and annotate the access log; the client gets the response.
    #[default]
    Log,
    /// Replace the response with a `502` problem+json.
    Block,
}

/// What to do with requests whose path or method the document does not have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum UndocumentedMode {
    /// Answer `404` (no such path) or `405` (no such method) with a problem+json.
    #[default]
    Reject,
    /// Let them through unchecked.
    Allow,
}

/// The `openapi-validate` plugin's config.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct OpenapiValidateConfig {
    /// The OpenAPI 3.0 or 3.1 document, inline or — usually — read by the gateway
    /// from a file next to the config: `spec: { $file: openapi.yaml }` (YAML or JSON;
    /// a reload follows changes to it). Required.
    pub spec: serde_json::Value,
    /// Check every request against this one path template of the document
    /// (`/pets/{petId}`), as a route per path does. Default: the template that
    /// matches the request's path.
    #[serde(default)]
    pub path: Option<String>,
    /// Stripped from request paths before they are matched against the document's
    /// templates (the gateway serves the API under `/api`, the document says
    /// `/pets`). Default none.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Responses: `off`, `log` (default: a warning and an access-log annotation) or
    /// `block` (a `502` problem instead of a response that breaks the contract).
    #[serde(default)]
    pub responses: ResponsesMode,
    /// Requests whose path or method the document does not have: `reject` (default:
    /// `404`/`405` problem) or `allow`.
    #[serde(default)]
    pub undocumented: UndocumentedMode,
    /// Most problems listed in one answer. Default `20`.
    #[serde(default)]
    pub max_errors: Option<usize>,
}

/// The plugin: its config and the compiled document.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct OpenapiValidate {
    config: OpenapiValidateConfig,
    #[serde(skip)]
    api: Api,
}

/// An RFC 9457 problem answer.
fn problem(status: u16, kind: &str, title: &str, detail: String, errors: &[Problem]) -> Decision {
    let mut body = serde_json::json!({"type": kind, "title": title, "status": status, "detail": detail});
    if !errors.is_empty() {
        body["errors"] = serde_json::json!(errors);
    }
    Decision::respond(status, serde_json::to_vec(&body).unwrap_or_default())
        .with_header("content-type", "application/problem+json")
}

fn summary(errors: &[Problem]) -> String {
    let list: Vec<String> = errors
        .iter()
        .map(|e| {
            if e.field.is_empty() {
                format!("{} {}", e.place, e.message)
            } else {
                format!("{} {}", e.field, e.message)
            }
        })
        .collect();
    list.join("; ")
}

impl OpenapiValidate {
    fn limit(&self) -> usize {
        self.config.max_errors.unwrap_or(DEFAULT_MAX_ERRORS).max(1)
    }

    fn undocumented(&self, status: u16, detail: String) -> Decision {
        match self.config.undocumented {
            UndocumentedMode::Allow => Decision::Continue,
            UndocumentedMode::Reject => {
                problem(status, TYPE_UNDOCUMENTED, "Undocumented operation", detail, &[])
            }
        }
    }
}

impl Plugin for OpenapiValidate {
    fn phases(&self) -> Phases {
        let (request_bodies, response_bodies) = self.api.has_bodies();
        let mut phases = Phases::REQUEST;
        if request_bodies {
            phases |= Phases::REQUEST_BODY;
        }
        if self.config.responses != ResponsesMode::Off {
            phases |= Phases::RESPONSE;
            if response_bodies {
                phases |= Phases::RESPONSE_BODY;
            }
        }
        phases
    }

    fn init(&mut self) -> Result<(), String> {
        if let Some(p) = &self.config.prefix
            && (!p.starts_with('/') || p.ends_with('/'))
        {
            return Err(format!("prefix: `{p}` must start with `/` and not end with one"));
        }
        self.api = Api::compile(&self.config.spec, self.config.path.as_deref())
            .map_err(|e| if e.starts_with("path:") { e } else { format!("spec{e}") })?;
        Ok(())
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let full = req.path();
        let path = match &self.config.prefix {
            Some(p) => match full.strip_prefix(p.as_str()) {
                Some(rest) if rest.starts_with('/') => rest,
                Some("") => "/",
                _ => return self.undocumented(404, format!("{full} is not under {p}")),
            },
            None => full.as_str(),
        };
        let Some((item_index, item, raw_params)) = self.api.find(path) else {
            return self.undocumented(404, format!("the API has no path matching {path}"));
        };
        let method = req.method();
        let Some((op_index, op)) = item.operation(&method) else {
            let allow: Vec<&str> = item.ops.iter().map(|o| o.method.as_str()).collect();
            return self
                .undocumented(405, format!("{} does not take {method}", item.template))
                .with_header("allow", allow.join(", "));
        };
        let limit = self.limit();
        let mut errors = Vec::new();
        let headers = |name: &str| -> Vec<String> {
            req.header_all(name).into_iter().map(|v| String::from_utf8_lossy(&v).into_owned()).collect()
        };
        let inputs = Inputs {
            path_params: raw_params,
            query: req.query().map(|q| check::parse_query(&q)).unwrap_or_default(),
            headers: &headers,
        };
        check::params(&self.api, op, &inputs, limit, &mut errors);
        if let Some(body) = &op.body
            && errors.len() < limit
        {
            let bytes = match req.body() {
                Ok(b) => b,
                Err(e) => return Decision::fault(format_args!("request body unavailable: {e:?}")),
            };
            let ct = req.header("content-type");
            if let BodyVerdict::Unsupported(media) =
                check::body(&self.api, body, ct.as_deref(), &bytes, limit, &mut errors)
            {
                let detail = format!("{} {} does not take a {media:?} body", op.method, item.template);
                return problem(415, TYPE_INVALID, "Unsupported media type", detail, &[]);
            }
        }
        if !errors.is_empty() {
            let detail =
                format!("{} {} (operation {}): {}", op.method, item.template, op.id, summary(&errors));
            return problem(400, TYPE_INVALID, "Request does not match the API contract", detail, &errors);
        }
        if self.config.responses != ResponsesMode::Off {
            req.set_context(OPERATION_KEY, &format!("{item_index}:{op_index}"));
        }
        Decision::Continue
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        let Some(op) = resp.context(OPERATION_KEY).and_then(|k| {
            let (i, o) = k.split_once(':')?;
            self.api.items.get(i.parse::<usize>().ok()?)?.ops.get(o.parse::<usize>().ok()?)
        }) else {
            return Decision::Continue;
        };
        let status = resp.status();
        let limit = self.limit();
        let mut errors = Vec::new();
        match check::reply_for(op, status) {
            None => errors.push(Problem {
                place: "response",
                field: "status".to_owned(),
                message: format!("{status} is not a documented status"),
            }),
            Some(reply) => {
                // As for requests: a body without `Content-Type` is read as the JSON
                // the contract promises; an empty one (a `HEAD`) is not checked.
                let json =
                    resp.header("content-type").map(|c| check::essence(&c)).is_none_or(|m| spec::is_json(&m));
                if let Some(schema) = reply.json
                    && json
                {
                    let bytes = match resp.body() {
                        Ok(b) => b,
                        Err(e) => return Decision::fault(format_args!("response body unavailable: {e:?}")),
                    };
                    if !bytes.is_empty() {
                        check::json(&self.api, Some(schema), &bytes, "response", limit, &mut errors);
                    }
                }
            }
        }
        if errors.is_empty() {
            return Decision::Continue;
        }
        let detail = format!(
            "the response of {} ({status}) does not match the API contract: {}",
            op.id,
            summary(&errors)
        );
        match self.config.responses {
            ResponsesMode::Block => {
                problem(502, TYPE_RESPONSE, "Response does not match the API contract", detail, &errors)
            }
            _ => {
                log::warn(&detail);
                log::annotate("openapi_response", "invalid");
                Decision::Continue
            }
        }
    }
}

export!(OpenapiValidate);
