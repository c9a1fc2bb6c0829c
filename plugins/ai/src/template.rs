//! `{{variable}}` templates, parsed once at load.
//!
//! A variable is `name` or `body.name.sub` (a field of the JSON request body, dotted
//! into objects), `params.NAME` (a path parameter), `headers.NAME` (a request header),
//! or `consumer` / `consumer.name` / `consumer.groups`. Strings render as they are,
//! other JSON values as JSON. A missing value is an error naming the variable, unless
//! the placeholder gives a default: `{{headers.x-tone|neutral}}`, `{{note|}}` (trimmed).

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Where a variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// A field of the JSON body: its path of object keys.
    Body(Vec<String>),
    /// A path parameter.
    Param(String),
    /// A request header.
    Header(String),
    /// The consumer's name.
    ConsumerName,
    /// The consumer's groups, comma separated.
    ConsumerGroups,
}

impl Var {
    /// The name used in error messages (`text`, `params.id`).
    pub fn display(&self) -> String {
        match self {
            Var::Body(path) => path.join("."),
            Var::Param(p) => format!("params.{p}"),
            Var::Header(h) => format!("headers.{h}"),
            Var::ConsumerName => "consumer".into(),
            Var::ConsumerGroups => "consumer.groups".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var, Option<String>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn parse_var(name: &str) -> Result<Var, String> {
    let bad = || format!("invalid template variable `{{{{{name}}}}}`");
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(bad());
    }
    let (head, rest) = name.split_once('.').unwrap_or((name, ""));
    Ok(match head {
        "params" if !rest.is_empty() => Var::Param(rest.to_owned()),
        "headers" if !rest.is_empty() => Var::Header(rest.to_ascii_lowercase()),
        "consumer" if rest.is_empty() || rest == "name" => Var::ConsumerName,
        "consumer" if rest == "groups" => Var::ConsumerGroups,
        "consumer" | "params" | "headers" => return Err(bad()),
        "body" if !rest.is_empty() => Var::Body(rest.split('.').map(str::to_owned).collect()),
        _ => Var::Body(name.split('.').map(str::to_owned).collect()),
    })
}

impl Template {
    /// Parses `{{name}}` placeholders (spaces inside the braces are ignored).
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| format!("unclosed `{{{{` in template `{s}`"))?;
            let inner = &after[..end];
            let (name, default) = match inner.split_once('|') {
                Some((n, d)) => (n, Some(d.trim().to_owned())),
                None => (inner, None),
            };
            pieces.push(Piece::Var(parse_var(name.trim())?, default));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template(pieces))
    }

    /// Renders with `lookup`; the first variable it cannot resolve is the error.
    pub fn render(&self, lookup: &dyn Fn(&Var) -> Option<String>) -> Result<String, Var> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v, default) => match lookup(v).or_else(|| default.clone()) {
                    Some(x) => out.push_str(&x),
                    None => return Err(v.clone()),
                },
            }
        }
        Ok(out)
    }
}

/// A body field as template text: strings as they are, other values as JSON.
pub fn body_field(body: &Value, path: &[String]) -> Option<String> {
    let mut v = body;
    for key in path {
        v = v.get(key)?;
    }
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz: any text parses or fails with a message, never panics; what parses
    /// renders, and renders its text pieces unchanged.
    #[test]
    fn any_template_text_parses_or_is_refused_and_renders_without_panicking() {
        const PIECES: &[&str] = &[
            "{{", "}}", "{", "}", "|", " ", "x", "params.", "body.", "headers.", "consumer", ".groups", ".",
            "é", "\u{202e}", "{{}}", "{{ | }}", "\n", "default",
        ];
        let iters = std::env::var("SLUICE_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..iters {
            let text: String = (0..rng.usize(1..16)).map(|_| PIECES[rng.usize(..PIECES.len())]).collect();
            match Template::parse(&text) {
                Err(e) => assert!(!e.is_empty(), "{text:?}"),
                Ok(t) => {
                    let rendered = t.render(&|_| Some("v".to_owned())).expect("every variable resolves");
                    if !text.contains("{{") {
                        assert_eq!(rendered, text);
                    }
                }
            }
        }
    }

    #[test]
    fn renders_body_params_headers_and_consumer() {
        let t = Template::parse(
            "Hi {{ consumer }}: {{text}} ({{params.lang}}, {{headers.X-Tone}}, {{body.n.k}})",
        )
        .unwrap();
        let body = serde_json::json!({"text": "abc", "n": {"k": 3}});
        let out = t
            .render(&|v| match v {
                Var::Body(p) => body_field(&body, p),
                Var::Param(p) if p == "lang" => Some("fr".into()),
                Var::Header(h) if h == "x-tone" => Some("dry".into()),
                Var::ConsumerName => Some("ann".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(out, "Hi ann: abc (fr, dry, 3)");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let t = Template::parse("{{ opt | none }} {{text}} {{missing.field}}").unwrap();
        let body = serde_json::json!({"text": "a"});
        let err = t.render(&|v| if let Var::Body(p) = v { body_field(&body, p) } else { None }).unwrap_err();
        assert_eq!(err.display(), "missing.field");
        let t = Template::parse("{{opt| none}}, {{headers.x|}}.").unwrap();
        assert_eq!(t.render(&|_| None).unwrap(), "none, .");
    }

    #[test]
    fn bad_templates_are_rejected() {
        assert!(Template::parse("{{text").is_err());
        assert!(Template::parse("{{}}").is_err());
        assert!(Template::parse("{{params}}").is_err());
        assert!(Template::parse("{{a..b}}").is_err());
        assert_eq!(Template::parse("no vars").unwrap().render(&|_| None).unwrap(), "no vars");
    }
}
