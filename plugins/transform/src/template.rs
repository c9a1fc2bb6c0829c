//! Templates: text with `{{source}}` placeholders over request (and response) data,
//! parsed once at `init` and rendered per request.
//!
//! ```text
//! "Bearer {{header.x-token}}"      text with one placeholder
//! "{{path.id}}"                    exactly one placeholder: keeps the value's JSON type
//! "{{header.x-tenant|public}}"     `|` gives a default for a missing value
//! ```

use serde_json::Value;

/// Where a placeholder's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `{{method}}`: the request method.
    Method,
    /// `{{path}}`: the request path (without the query) as the plugin received it.
    Path,
    /// `{{route}}`: the matched route's name.
    Route,
    /// `{{client_ip}}`: the client's IP address.
    ClientIp,
    /// `{{header.NAME}}`: the first value of a request header.
    Header(String),
    /// `{{query.NAME}}`: the first value of a query parameter, percent-decoded.
    Query(String),
    /// `{{path.NAME}}`: a path parameter of the route's pattern (`/users/{id}`).
    Param(String),
    /// `{{consumer.name}}`: the authenticated consumer's name.
    ConsumerName,
    /// `{{consumer.groups}}`: the consumer's groups (a JSON array; joined with `,` in text).
    ConsumerGroups,
    /// `{{status}}`: the upstream's status code (a number; response rules only).
    Status,
    /// `{{response_header.NAME}}`: a header of the upstream's response (response rules only).
    ResponseHeader(String),
}

impl Source {
    fn parse(s: &str, response: bool) -> Result<Source, String> {
        let named = |prefix: &str| -> Result<Option<String>, String> {
            match s.strip_prefix(prefix) {
                Some("") => Err(format!("`{s}` needs a name after `{prefix}`")),
                Some(name) => Ok(Some(name.to_owned())),
                None => Ok(None),
            }
        };
        let src = match s {
            "method" => Source::Method,
            "path" => Source::Path,
            "route" => Source::Route,
            "client_ip" => Source::ClientIp,
            "consumer.name" => Source::ConsumerName,
            "consumer.groups" => Source::ConsumerGroups,
            "status" => Source::Status,
            _ => {
                if let Some(n) = named("header.")? {
                    Source::Header(n.to_ascii_lowercase())
                } else if let Some(n) = named("response_header.")? {
                    Source::ResponseHeader(n.to_ascii_lowercase())
                } else if let Some(n) = named("query.")? {
                    Source::Query(n)
                } else if let Some(n) = named("path.")? {
                    Source::Param(n)
                } else {
                    return Err(format!(
                        "unknown placeholder `{{{{{s}}}}}` (expected method, path, route, client_ip, \
                         header.NAME, query.NAME, path.NAME, consumer.name, consumer.groups, status \
                         or response_header.NAME)"
                    ));
                }
            }
        };
        if !response && matches!(src, Source::Status | Source::ResponseHeader(_)) {
            return Err(format!("`{{{{{s}}}}}` is only available in response rules"));
        }
        Ok(src)
    }

    /// True for sources read from the response (not from the request).
    pub fn is_response(&self) -> bool {
        matches!(self, Source::Status | Source::ResponseHeader(_))
    }

    /// True for sources the response phase can read itself (the consumer travels with
    /// the response; other request data must be captured in the request phase).
    pub fn in_response(&self) -> bool {
        self.is_response() || matches!(self, Source::ConsumerName | Source::ConsumerGroups)
    }

    /// A stable key, used to carry request values into the response phase.
    pub fn key(&self) -> String {
        match self {
            Source::Method => "method".into(),
            Source::Path => "path".into(),
            Source::Route => "route".into(),
            Source::ClientIp => "client_ip".into(),
            Source::Header(n) => format!("header.{n}"),
            Source::Query(n) => format!("query.{n}"),
            Source::Param(n) => format!("path.{n}"),
            Source::ConsumerName => "consumer.name".into(),
            Source::ConsumerGroups => "consumer.groups".into(),
            Source::Status => "status".into(),
            Source::ResponseHeader(n) => format!("response_header.{n}"),
        }
    }
}

/// Looks up placeholder values.
pub trait Vars {
    /// The value of `source`, if present.
    fn get(&self, source: &Source) -> Option<Value>;
}

/// One placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// Where the value comes from.
    pub source: Source,
    /// Used when the value is missing.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Placeholder),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `s`; `response` allows the response-only sources.
    pub fn parse(s: &str, response: bool) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| format!("unclosed `{{{{` in `{s}`"))?;
            let inner = after[..end].trim();
            let (name, default) = match inner.split_once('|') {
                Some((n, d)) => (n.trim(), Some(d.trim().to_owned())),
                None => (inner, None),
            };
            parts.push(Part::Var(Placeholder { source: Source::parse(name, response)?, default }));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Every source the template reads.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(&v.source),
            Part::Lit(_) => None,
        })
    }

    /// Renders the template. A template that is exactly one placeholder yields the
    /// value with its JSON type, or `None` when the value is missing and there is no
    /// default (the rule is then skipped). Otherwise the result is a string, with
    /// missing values rendered as their default or as nothing.
    pub fn render(&self, vars: &dyn Vars) -> Option<Value> {
        if let [Part::Var(p)] = self.parts.as_slice() {
            return vars.get(&p.source).or_else(|| p.default.clone().map(Value::String));
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(p) => match vars.get(&p.source) {
                    Some(v) => out.push_str(&text(&v)),
                    None => out.push_str(p.default.as_deref().unwrap_or("")),
                },
            }
        }
        Some(Value::String(out))
    }

    /// Renders as text (for headers and query parameters); `None` to skip the rule.
    pub fn render_text(&self, vars: &dyn Vars) -> Option<String> {
        self.render(vars).map(|v| text(&v))
    }
}

/// A value as text: strings as they are, arrays of scalars joined with `,`, anything
/// else as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            items.iter().map(text).collect::<Vec<_>>().join(",")
        }
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Map(HashMap<String, Value>);
    impl Vars for Map {
        fn get(&self, source: &Source) -> Option<Value> {
            self.0.get(&source.key()).cloned()
        }
    }

    fn vars() -> Map {
        Map(HashMap::from([
            ("header.x-user".to_owned(), Value::from("ann")),
            ("path.id".to_owned(), Value::from("42")),
            ("consumer.groups".to_owned(), serde_json::json!(["a", "b"])),
            ("status".to_owned(), Value::from(404)),
        ]))
    }

    #[test]
    fn text_with_placeholders_renders_to_a_string() {
        let t = Template::parse("user {{header.X-User}} #{{ path.id }}{{query.none}}!", false).unwrap();
        assert_eq!(t.render(&vars()), Some(Value::from("user ann #42!")));
    }

    #[test]
    fn a_single_placeholder_keeps_its_type_and_is_skipped_when_missing() {
        let t = Template::parse("{{consumer.groups}}", false).unwrap();
        assert_eq!(t.render(&vars()), Some(serde_json::json!(["a", "b"])));
        assert_eq!(t.render_text(&vars()).as_deref(), Some("a,b"));
        let t = Template::parse("{{status}}", true).unwrap();
        assert_eq!(t.render(&vars()), Some(Value::from(404)));
        assert_eq!(Template::parse("{{header.nope}}", false).unwrap().render(&vars()), None);
        let t = Template::parse("{{header.nope|anon}}", false).unwrap();
        assert_eq!(t.render(&vars()), Some(Value::from("anon")));
    }

    #[test]
    fn bad_templates_are_rejected_with_a_reason() {
        assert!(Template::parse("{{header.x", false).unwrap_err().contains("unclosed"));
        assert!(Template::parse("{{body}}", false).unwrap_err().contains("unknown placeholder `{{body}}`"));
        assert!(Template::parse("{{header.}}", false).unwrap_err().contains("needs a name"));
        assert!(Template::parse("{{status}}", false).unwrap_err().contains("only available in response"));
    }
}
