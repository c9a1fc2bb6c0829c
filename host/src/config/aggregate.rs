//! The `aggregate` route target: one request fans out to several upstream calls made
//! in parallel, and their JSON answers are composed into one response (API
//! composition). Checked by [`validate_aggregate`] when the snapshot is built (it
//! needs the upstream names).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{ByteSize, ConfigDuration};
use super::{Name, Problem};

/// Default largest body read from one call.
pub const DEFAULT_AGGREGATE_MAX_BODY: ByteSize = ByteSize::mib(1);
/// Most calls one aggregate target makes.
pub const MAX_AGGREGATE_CALLS: usize = 32;

/// An aggregate target: `target: { aggregate: { calls: [...] } }`. The response is a
/// JSON object with each call's answer under its `name` (or, with `merge`, its fields
/// at the top level); calls run in parallel, each with its own timeout.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The upstream calls, made in parallel.
    pub calls: Vec<AggregateCallConfig>,
    /// Largest body read from one call; a longer one fails that call. Default `1MiB`.
    #[serde(default)]
    pub max_body: Option<ByteSize>,
}

/// One call of an aggregate target.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateCallConfig {
    /// The key its answer goes under in the composed object (letters, digits, `_`,
    /// `-`; not starting with `_`, which the gateway's own keys use).
    pub name: String,
    /// The upstream pool it goes to.
    pub upstream: Name,
    /// Path and query sent, with placeholders: `{name}` is the route's path parameter
    /// `name` as the client wrote it, `{query.name}` the client's query parameter
    /// `name` (decoded, then percent-encoded where it is put); absent ones are empty.
    /// Example:
    /// `/users/{id}/orders?limit={query.limit}`.
    pub path: String,
    /// Method of the call: `GET` (default), or another method that sends no body
    /// (`HEAD`, `DELETE`, `OPTIONS`).
    #[serde(default)]
    pub method: Option<String>,
    /// How long the call may take, its body included. Default: the upstream's own
    /// timeouts.
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// A failure of a required call (error, timeout, non-2xx status) fails the whole
    /// request with `502` (`504` for a timeout). A failure of an optional one leaves
    /// `null` under its name and is described in the response's `_errors`. Default
    /// `true`.
    #[serde(default = "yes")]
    pub required: bool,
    /// Put the fields of its JSON object answer at the top level of the composed
    /// object instead of under `name` (later calls win on a shared field). Default
    /// `false`.
    #[serde(default)]
    pub merge: bool,
}

fn yes() -> bool {
    true
}

/// Problems of an aggregate target at `at`; `known` tells whether an upstream exists.
pub fn validate_aggregate(a: &AggregateConfig, at: &str, known: impl Fn(&str) -> bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    if a.calls.is_empty() {
        problems.push(Problem::new(format!("{at}.calls"), "no calls: add at least one"));
    }
    if a.calls.len() > MAX_AGGREGATE_CALLS {
        problems.push(Problem::new(
            format!("{at}.calls"),
            format!("{} calls: at most {MAX_AGGREGATE_CALLS}", a.calls.len()),
        ));
    }
    for (j, c) in a.calls.iter().enumerate() {
        let here = format!("{at}.calls[{j}]");
        let name_ok = !c.name.is_empty()
            && !c.name.starts_with('_')
            && c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
        if !name_ok {
            problems.push(Problem::new(
                format!("{here}.name"),
                format!("`{}`: use letters, digits, `_` and `-`, not starting with `_`", c.name),
            ));
        }
        if a.calls[..j].iter().any(|o| o.name == c.name) {
            problems.push(Problem::new(format!("{here}.name"), format!("duplicate call name `{}`", c.name)));
        }
        if !known(c.upstream.as_str()) {
            problems
                .push(Problem::new(format!("{here}.upstream"), format!("unknown upstream `{}`", c.upstream)));
        }
        if !c.path.starts_with('/') {
            problems.push(Problem::new(format!("{here}.path"), "must start with `/`"));
        } else if let Err(e) = PathTemplate::parse(&c.path) {
            problems.push(Problem::new(format!("{here}.path"), e));
        }
        if let Some(m) = &c.method {
            match http::Method::from_bytes(m.as_bytes()) {
                Ok(m) if m == http::Method::POST || m == http::Method::PUT || m == http::Method::PATCH => {
                    problems.push(Problem::new(
                        format!("{here}.method"),
                        format!("`{m}` sends a body: calls send none"),
                    ))
                }
                Ok(_) => {}
                Err(_) => {
                    problems.push(Problem::new(format!("{here}.method"), format!("`{m}` is not a method")))
                }
            }
        }
        if c.timeout.is_some_and(|t| t.get().is_zero()) {
            problems.push(Problem::new(format!("{here}.timeout"), "must be longer than 0s"));
        }
    }
    problems
}

/// A call's `path` with its placeholders found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Param(String),
    Query(String),
}

impl PathTemplate {
    /// Parses `{name}` and `{query.name}` placeholders.
    pub fn parse(path: &str) -> Result<PathTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = path;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` at byte {}", path.len() - rest.len() + open))?;
            let inner = &rest[open + 1..open + close];
            let (query, name) = match inner.strip_prefix("query.") {
                Some(n) => (true, n),
                None => (false, inner),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!(
                    "`{{{inner}}}` is not a placeholder: use `{{name}}` or `{{query.name}}`"
                ));
            }
            parts.push(if query { Part::Query(name.to_owned()) } else { Part::Param(name.to_owned()) });
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err("`}` without `{`".to_owned());
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(PathTemplate(parts))
    }

    /// The path with `param` giving path parameters (already in their encoded form:
    /// they come from a request path) and `query` query parameters (decoded: they are
    /// percent-encoded here); absent ones are empty.
    pub fn render<'a>(
        &self,
        param: impl Fn(&str) -> Option<&'a str>,
        query: impl Fn(&str) -> Option<String>,
    ) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Param(n) => out.push_str(param(n).unwrap_or("")),
                Part::Query(n) => encode_into(&mut out, &query(n).unwrap_or_default()),
            }
        }
        out
    }
}

/// Appends `value` with everything but unreserved characters (RFC 3986) percent-encoded.
fn encode_into(out: &mut String, value: &str) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_and_encode_their_placeholders() {
        let t = PathTemplate::parse("/users/{id}/orders?limit={query.limit}&x=1").unwrap();
        let path =
            t.render(|n| (n == "id").then_some("a%20b"), |n| (n == "limit").then(|| "10&more /".to_owned()));
        assert_eq!(path, "/users/a%20b/orders?limit=10%26more%20%2F&x=1");
        assert_eq!(t.render(|_| None, |_| None), "/users//orders?limit=&x=1");
        assert!(PathTemplate::parse("/a/{id").unwrap_err().contains("unclosed"));
        assert!(PathTemplate::parse("/a/{}").is_err());
        assert!(PathTemplate::parse("/a/{x y}").is_err());
        assert!(PathTemplate::parse("/a/}").is_err());
        assert_eq!(PathTemplate::parse("/plain").unwrap().render(|_| None, |_| None), "/plain");
    }
}
