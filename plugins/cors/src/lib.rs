//! Built-in plugin `cors`: Cross-Origin Resource Sharing (the Fetch standard's CORS
//! protocol) for a route.
//!
//! ```yaml
//! plugins:
//!   - name: cors
//!     config:
//!       allow_origins: ["https://app.example.com", "https://*.example.com"]
//!       allow_methods: [GET, POST]
//!       allow_headers: [content-type, authorization]
//!       expose_headers: [x-request-id]
//!       allow_credentials: true
//!       max_age: 600
//! ```
//!
//! - **Preflights** (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) are
//!   answered by the plugin and never forwarded: `204` with the CORS headers when the
//!   origin, the method and every requested header are allowed, otherwise `403` with a
//!   JSON error and no CORS headers (the browser then blocks the actual request).
//! - **Actual requests** always go upstream (CORS is enforced by browsers, not by
//!   servers); when the origin is allowed the response gets
//!   `Access-Control-Allow-Origin` (and `-Credentials`, `-Expose-Headers`), replacing
//!   any the upstream sent.
//! - `Vary: Origin` is added to every response whose CORS headers depend on the origin
//!   (all but `allow_origins: ["*"]` without credentials), so caches keep them apart.
//! - An arbitrary origin is never reflected together with credentials: `*` combined
//!   with `allow_credentials: true` is rejected when the config is loaded.
//! - A response header the host refuses is a plugin fault (the route's `on_error`
//!   applies). None can be: the names are constants, the values validated tokens or
//!   copies of the request's own valid headers.
#![deny(clippy::let_underscore_must_use)]

mod origin;

use serde::Deserialize;
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, Response, export};

use origin::OriginPattern;

/// Default `allow_methods`.
pub const DEFAULT_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// The context key under which the request phase leaves an allowed origin for the
/// response phase.
const ORIGIN_KEY: &str = "origin";

/// The `cors` plugin's config.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to make cross-origin requests: exact origins
    /// (`https://app.example.com`, `http://localhost:3000`), wildcard subdomain
    /// patterns (`https://*.example.com`: any subdomain at any depth, not
    /// `example.com` itself; scheme and port must match), or `*` for any origin
    /// (answered with `Access-Control-Allow-Origin: *`; not allowed together with
    /// `allow_credentials`). Origins compare case-insensitively. Required.
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for (case-insensitive, sent upper-case), or `["*"]`
    /// for any. Default `[GET, HEAD, POST, PUT, PATCH, DELETE]`.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for (case-insensitive), or `["*"]` for any
    /// (the requested ones are echoed back). Default none: only CORS-safelisted
    /// headers, which browsers do not ask about.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the browser lets scripts read, beyond the safelisted ones
    /// (`Access-Control-Expose-Headers`). Default none.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies and HTTP authentication (`Access-Control-Allow-Credentials:
    /// true`). Requires explicit origins or patterns, not `*`. Default `false`.
    #[serde(default)]
    pub allow_credentials: bool,
    /// Seconds a browser may cache a preflight's answer (`Access-Control-Max-Age`).
    /// Default: not sent (browsers then cache for 5 seconds).
    pub max_age: Option<u32>,
}

fn default_methods() -> Vec<String> {
    DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect()
}

/// The `cors` plugin: its config and what `init` derived from it.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct Cors {
    config: CorsConfig,
    #[serde(skip)]
    compiled: Compiled,
}

#[derive(Debug, Default)]
struct Compiled {
    /// `*`: any origin.
    any_origin: bool,
    origins: Vec<OriginPattern>,
    /// `None`: any method.
    methods: Option<Vec<String>>,
    methods_value: String,
    /// `None`: any header.
    headers: Option<Vec<String>>,
    headers_value: String,
    expose_value: Option<String>,
    max_age: Option<String>,
}

fn header_token(field: &str, h: &str) -> Result<String, String> {
    let valid =
        !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return Err(format!("{field}: `{h}` is not a valid token"));
    }
    Ok(h.to_owned())
}

/// `None` for `["*"]`; `*` mixed with other entries is an error.
fn list(field: &str, items: &[String], norm: fn(&str) -> String) -> Result<Option<Vec<String>>, String> {
    if items.iter().any(|i| i == "*") {
        if items.len() > 1 {
            return Err(format!("{field}: `*` must be the only entry"));
        }
        return Ok(None);
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(norm(&header_token(&format!("{field}[{i}]"), item.trim())?));
    }
    Ok(Some(out))
}

impl Compiled {
    fn new(c: &CorsConfig) -> Result<Compiled, String> {
        if c.allow_origins.is_empty() {
            return Err("allow_origins: list at least one origin (or `*`)".into());
        }
        let mut compiled = Compiled::default();
        for (i, o) in c.allow_origins.iter().enumerate() {
            if o == "*" {
                compiled.any_origin = true;
            } else {
                compiled
                    .origins
                    .push(OriginPattern::parse(o).map_err(|e| format!("allow_origins[{i}]: {e}"))?);
            }
        }
        if compiled.any_origin && c.allow_credentials {
            return Err("allow_origins: `*` cannot be combined with allow_credentials: true (an arbitrary \
                        origin must never be allowed to send credentials); list the origins instead"
                .into());
        }
        compiled.methods = list("allow_methods", &c.allow_methods, |m| m.to_ascii_uppercase())?;
        compiled.methods_value = compiled.methods.as_ref().map(|m| m.join(", ")).unwrap_or_default();
        compiled.headers = list("allow_headers", &c.allow_headers, |h| h.to_ascii_lowercase())?;
        compiled.headers_value = compiled.headers.as_ref().map(|h| h.join(", ")).unwrap_or_default();
        match list("expose_headers", &c.expose_headers, |h| h.to_ascii_lowercase())? {
            None if c.allow_credentials => {
                return Err(
                    "expose_headers: `*` is a literal header name with credentials; list the headers".into(),
                );
            }
            None => compiled.expose_value = Some("*".into()),
            Some(h) if h.is_empty() => {}
            Some(h) => compiled.expose_value = Some(h.join(", ")),
        }
        compiled.max_age = c.max_age.map(|s| s.to_string());
        Ok(compiled)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|p| p.matches(origin))
    }

    /// True when the CORS headers depend on the request's origin (`Vary: Origin`).
    fn varies(&self, credentials: bool) -> bool {
        !self.any_origin || credentials
    }
}

impl Plugin for Cors {
    const PHASES: Phases = Phases::REQUEST.union(Phases::RESPONSE);

    fn init(&mut self) -> Result<(), String> {
        self.compiled = Compiled::new(&self.config)?;
        Ok(())
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let Some(origin) = req.header("origin") else { return Decision::Continue };
        if req.method() == "OPTIONS"
            && let Some(method) = req.header("access-control-request-method")
        {
            return self.preflight(req, &origin, &method);
        }
        if self.compiled.origin_allowed(&origin) {
            req.set_context(ORIGIN_KEY, &origin);
        }
        Decision::Continue
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        match self.decorate(resp) {
            Ok(()) => Decision::Continue,
            Err(fault) => Decision::fault(fault),
        }
    }
}

impl Cors {
    /// Adds the CORS headers of an actual request's response. `Err` (a plugin fault)
    /// when the host refuses one.
    fn decorate(&self, resp: &mut Response<'_>) -> Result<(), String> {
        let c = &self.compiled;
        if c.varies(self.config.allow_credentials) {
            add_vary(resp, "Origin")?;
        }
        let Some(origin) = resp.context(ORIGIN_KEY) else { return Ok(()) };
        set(resp, "access-control-allow-origin", self.allow_origin_value(&origin))?;
        if self.config.allow_credentials {
            set(resp, "access-control-allow-credentials", "true")?;
        }
        if let Some(expose) = &c.expose_value {
            set(resp, "access-control-expose-headers", expose)?;
        }
        Ok(())
    }

    /// `*` for any origin without credentials, else the request's origin.
    fn allow_origin_value<'o>(&self, origin: &'o str) -> &'o str {
        if self.compiled.any_origin && !self.config.allow_credentials { "*" } else { origin }
    }

    fn preflight(&self, req: &Request<'_>, origin: &str, method: &str) -> Decision {
        let c = &self.compiled;
        let vary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";
        if !c.origin_allowed(origin) {
            return forbidden(req, &format!("origin `{origin}` is not allowed")).with_header("vary", vary);
        }
        if let Some(methods) = &c.methods
            && !methods.iter().any(|m| m == method.trim())
        {
            return forbidden(req, &format!("method `{method}` is not allowed")).with_header("vary", vary);
        }
        let requested = req.header("access-control-request-headers").unwrap_or_default();
        let requested: Vec<String> =
            requested.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
        if let Some(allowed) = &c.headers
            && let Some(h) = requested.iter().find(|h| !allowed.contains(h))
        {
            return forbidden(req, &format!("request header `{h}` is not allowed")).with_header("vary", vary);
        }
        let mut d = Decision::respond(204, Vec::new())
            .with_header("access-control-allow-origin", self.allow_origin_value(origin))
            .with_header(
                "access-control-allow-methods",
                match &c.methods {
                    Some(_) => c.methods_value.clone(),
                    None => method.trim().to_owned(),
                },
            );
        if !requested.is_empty() {
            let value = if c.headers.is_some() { c.headers_value.clone() } else { requested.join(", ") };
            d = d.with_header("access-control-allow-headers", value);
        }
        if self.config.allow_credentials {
            d = d.with_header("access-control-allow-credentials", "true");
        }
        if let Some(max_age) = &c.max_age {
            d = d.with_header("access-control-max-age", max_age.as_str());
        }
        d.with_header("vary", vary)
    }
}

/// A refused preflight: `403` in the gateway's JSON error shape, without CORS headers.
fn forbidden(req: &Request<'_>, message: &str) -> Decision {
    let body = serde_json::json!({
        "error": {
            "status": 403,
            "code": "cors_preflight_refused",
            "message": format!("CORS preflight refused: {message}"),
            "request_id": req.request_id(),
        }
    });
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    bytes.push(b'\n');
    Decision::respond(403, bytes).with_header("content-type", "application/json")
}

/// Sets a response header; `Err` with the fault's message when the host refuses.
fn set(resp: &mut Response<'_>, name: &str, value: &str) -> Result<(), String> {
    resp.set_header(name, value).map_err(|e| format!("could not set the response header `{name}`: {e}"))
}

/// Adds `token` to the response's `Vary` unless it (or `*`) is already there.
fn add_vary(resp: &mut Response<'_>, token: &str) -> Result<(), String> {
    match resp.header("vary") {
        None => set(resp, "vary", token),
        Some(v) if v.split(',').any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case(token)) => Ok(()),
        Some(v) if v.trim().is_empty() => set(resp, "vary", token),
        Some(v) => set(resp, "vary", &format!("{v}, {token}")),
    }
}

export!(Cors);

#[cfg(test)]
mod tests;
