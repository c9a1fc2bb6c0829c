//! Built-in plugin `auth`: API keys, HTTP Basic (bcrypt/argon2) and JWT
//! (HS/RS/PS/ES/EdDSA, inline keys or a JWKS URL) authentication. An authenticated
//! request carries a consumer (name, groups) for the rest of the chain and the access
//! log, optionally forwarded upstream in headers; route rules allow or deny consumers
//! and groups.
//!
//! ```yaml
//! plugins:
//!   - name: auth
//!     config:
//!       api_key: { keys: [{ sha256: "<hex>", consumer: billing, groups: [internal] }] }
//!       jwt: { keys: [{ pem: "-----BEGIN PUBLIC KEY-----..." }], audience: [api] }
//!       deny: { groups: [suspended] }
//! ```
//!
//! Answers: `401` with a `WWW-Authenticate` challenge for a missing or invalid
//! credential, `403` for a consumer the rules refuse; both with the gateway's JSON
//! error body. A change the host refuses (a forwarded header, hiding the credential)
//! is a plugin fault, so the route's `on_error` policy applies.
#![deny(clippy::let_underscore_must_use)]

pub mod apikey;
pub mod basic;
pub mod config;
pub mod identity;
pub mod jwt;
mod reply;
pub mod source;

use sluice_plugin_sdk::{Consumer, Decision, Phases, Plugin, Request, export};

use crate::apikey::ApiKeys;
use crate::basic::Basic;
use crate::config::{AuthConfig, RuleConfig};
use crate::identity::Forward;
use crate::jwt::Jwt;
use crate::reply::Challenge;
use crate::source::Source;

/// The plugin: its config as the route gave it, and the runtime form `init` builds.
#[derive(serde::Deserialize)]
#[serde(from = "AuthConfig")]
pub struct Auth {
    config: AuthConfig,
    rt: Option<Runtime>,
}

impl From<AuthConfig> for Auth {
    fn from(config: AuthConfig) -> Self {
        Auth { config, rt: None }
    }
}

/// The configured, checked plugin.
struct Runtime {
    api_key: Option<ApiKeys>,
    basic: Option<Basic>,
    jwt: Option<Jwt>,
    anonymous: Option<Consumer>,
    allow: Option<RuleConfig>,
    deny: Option<RuleConfig>,
    forward: Option<Forward>,
    hide_credentials: bool,
    realm: String,
}

/// The result of looking for and checking credentials.
enum Outcome {
    /// Authenticated, with where the credential was.
    Ok(Consumer, Option<Source>),
    /// No credential at all.
    Missing,
    /// A credential was there and is not valid.
    Refused(Challenge),
}

impl Plugin for Auth {
    const PHASES: Phases = Phases::REQUEST;

    fn init(&mut self) -> Result<(), String> {
        let c = &self.config;
        if c.api_key.is_none() && c.basic.is_none() && c.jwt.is_none() {
            return Err("configure at least one of `api_key`, `basic` and `jwt`".into());
        }
        if c.realm.contains(['"', '\\']) || c.realm.chars().any(char::is_control) {
            return Err("realm: must not contain quotes, backslashes or control characters".into());
        }
        let anonymous = match &c.anonymous {
            Some(a) if a.is_empty() => return Err("anonymous: must not be empty".into()),
            Some(a) => {
                identity::check_config("anonymous", a)?;
                Some(Consumer { name: a.clone(), groups: Vec::new() })
            }
            None => None,
        };
        let api_key = c.api_key.as_ref().map(ApiKeys::new).transpose()?;
        let basic = c.basic.as_ref().map(Basic::new).transpose()?;
        let jwt = c.jwt.as_ref().map(Jwt::new).transpose()?;
        let forward = match &c.forward {
            Some(f) => {
                Some(Forward::new(f, &credential_headers(api_key.as_ref(), basic.is_some(), jwt.as_ref()))?)
            }
            None => None,
        };
        self.rt = Some(Runtime {
            api_key,
            basic,
            jwt,
            anonymous,
            allow: c.allow.clone(),
            deny: c.deny.clone(),
            forward,
            hide_credentials: c.hide_credentials,
            realm: c.realm.clone(),
        });
        Ok(())
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let Some(rt) = &self.rt else {
            return reply::error(req, 500, "internal_error", "auth plugin is not configured", &[]);
        };
        match rt.on_request(req) {
            Ok(d) => d,
            Err(fault) => Decision::fault(fault),
        }
    }
}

/// The headers the configured methods read credentials from, with the field that
/// names each.
fn credential_headers(api_key: Option<&ApiKeys>, basic: bool, jwt: Option<&Jwt>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |sources: &[Source], field: &str| {
        for (i, s) in sources.iter().enumerate() {
            match s {
                Source::Header(h) | Source::Bearer(h) => out.push((h.clone(), format!("{field}[{i}]"))),
                Source::Cookie(_) => out.push(("cookie".to_owned(), format!("{field}[{i}]"))),
                Source::Query(_) => {}
            }
        }
    };
    add(api_key.map_or(&[], |k| &k.sources), "api_key.sources");
    add(jwt.map_or(&[], |j| &j.sources), "jwt.sources");
    if basic {
        out.push(("authorization".to_owned(), "basic".to_owned()));
    }
    out
}

impl Runtime {
    /// The decision for `req`, or `Err` with a plugin fault: a change the host refused.
    fn on_request(&self, req: &mut Request<'_>) -> Result<Decision, String> {
        // Whatever the client claimed about itself goes first, before anything is
        // decided: then no path — anonymous, refused, or a fault below — can let it
        // through to the upstream.
        if let Some(f) = &self.forward {
            f.clear(req)?;
        }
        let consumer = match self.authenticate(req) {
            Outcome::Ok(consumer, source) => {
                if self.hide_credentials
                    && let Some(s) = source
                {
                    s.remove(req)?;
                }
                consumer
            }
            Outcome::Missing => match &self.anonymous {
                Some(a) => a.clone(),
                None => {
                    let challenges = self.challenges();
                    return Ok(reply::error(req, 401, "unauthorized", "missing credentials", &challenges));
                }
            },
            Outcome::Refused(ch) => {
                let message = ch.message();
                let challenge = ch.header(&self.realm);
                return Ok(reply::error(req, 401, "unauthorized", &message, &[challenge]));
            }
        };
        if let Some(rule) = &self.deny
            && matches(rule, &consumer)
        {
            return Ok(reply::error(req, 403, "forbidden", "consumer is not allowed on this route", &[]));
        }
        if let Some(rule) = &self.allow
            && !matches(rule, &consumer)
        {
            return Ok(reply::error(req, 403, "forbidden", "consumer is not allowed on this route", &[]));
        }
        if let Some(f) = &self.forward {
            f.write(req, &consumer)?;
        }
        req.set_consumer(Some(consumer));
        Ok(Decision::Continue)
    }

    /// The first configured method whose credential the request carries decides.
    fn authenticate(&self, req: &Request<'_>) -> Outcome {
        if let Some(keys) = &self.api_key {
            for s in &keys.sources {
                if let Some(k) = s.read(req) {
                    return match keys.lookup(&k) {
                        Some(c) => Outcome::Ok(c.clone(), Some(s.clone())),
                        None => Outcome::Refused(Challenge::Key("invalid api key")),
                    };
                }
            }
        }
        // Read once, and only when a method looks there.
        let mut authorization: Option<Option<String>> = None;
        let mut authorization = || authorization.get_or_insert_with(|| req.header("authorization")).clone();
        if let Some(basic) = &self.basic
            && let Some(a) = authorization()
            && let Some(creds) = strip_scheme(&a, "basic")
        {
            return match basic.verify(creds) {
                Ok(c) => Outcome::Ok(c, Some(Source::Header("authorization".into()))),
                Err(basic::BasicError::Malformed) => {
                    Outcome::Refused(Challenge::Basic("malformed basic credentials"))
                }
                Err(basic::BasicError::Invalid) => {
                    Outcome::Refused(Challenge::Basic("invalid username or password"))
                }
            };
        }
        if let Some(jwt) = &self.jwt {
            for s in &jwt.sources {
                let token = match s {
                    Source::Header(h) if h == "authorization" => {
                        authorization().and_then(|a| strip_scheme(&a, "bearer").map(str::to_owned))
                    }
                    Source::Header(_) => {
                        s.read(req).map(|v| strip_scheme(&v, "bearer").map(str::to_owned).unwrap_or(v))
                    }
                    _ => s.read(req),
                };
                if let Some(t) = token {
                    return match jwt.verify(t.trim(), now_ms()) {
                        Ok(c) => Outcome::Ok(c, Some(s.clone())),
                        Err(e) => Outcome::Refused(Challenge::Bearer(e)),
                    };
                }
            }
        }
        Outcome::Missing
    }

    /// One challenge per configured method, for a request without credentials.
    fn challenges(&self) -> Vec<String> {
        let realm = &self.realm;
        let mut out = Vec::new();
        if self.jwt.is_some() {
            out.push(format!("Bearer realm=\"{realm}\""));
        }
        if self.basic.is_some() {
            out.push(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""));
        }
        if self.api_key.is_some() {
            out.push(format!("Key realm=\"{realm}\""));
        }
        out
    }
}

/// True if the consumer's name or one of its groups is in the rule.
fn matches(rule: &RuleConfig, c: &Consumer) -> bool {
    rule.consumers.contains(&c.name) || c.groups.iter().any(|g| rule.groups.contains(g))
}

/// The credentials after `scheme ` (case-insensitive), if the value uses that scheme.
/// The credential of a `Bearer <credential>` header value (scheme in any case).
pub(crate) fn bearer_credential(value: &str) -> Option<String> {
    strip_scheme(value, "bearer").filter(|c| !c.is_empty()).map(str::to_owned)
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let value = value.trim_start();
    let (s, rest) = value.split_at_checked(scheme.len())?;
    (s.eq_ignore_ascii_case(scheme) && rest.starts_with(' ')).then(|| rest.trim())
}

/// Now, in milliseconds since the epoch (the host's clock; tests can fix it).
pub fn now_ms() -> u64 {
    #[cfg(test)]
    if let Some(t) = tests::FIXED_NOW.with(std::cell::Cell::get) {
        return t;
    }
    sluice_plugin_sdk::clock::now_ms()
}

export!(Auth);

#[cfg(test)]
mod tests;
