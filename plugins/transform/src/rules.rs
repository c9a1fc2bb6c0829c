//! Compiled rules: validated at `init` from [`crate::config`], rendered against one
//! request's data, then applied.

use regex_lite::Regex;
use serde_json::Value;
use sluice_plugin_sdk::{HeaderError, Headers, log};

use crate::config::{BodyConfig, HeadersConfig, PathConfig, QueryConfig, SetConfig, ValueType};
use crate::pointer::Pointer;
use crate::template::{Template, Vars, text};

fn header_name(field: &str, name: &str) -> Result<String, String> {
    if !sluice_plugin_sdk::is_header_name(name) {
        return Err(format!("{field}: `{name}` is not a valid header name"));
    }
    let lower = name.to_ascii_lowercase();
    if sluice_plugin_sdk::is_managed_header(&lower) {
        return Err(format!("{field}: `{name}` is managed by the gateway and cannot be changed"));
    }
    Ok(lower)
}

fn template(field: &str, s: &str, response: bool) -> Result<Template, String> {
    Template::parse(s, response).map_err(|e| format!("{field}: {e}"))
}

/// Compiled header changes.
#[derive(Debug, Default)]
pub struct HeaderRules {
    rename: Vec<(String, String)>,
    remove: Vec<String>,
    set: Vec<(String, Template)>,
    add: Vec<(String, Template)>,
}

/// Header values rendered for one request: `(name, value, append)`.
pub type RenderedHeaders = Vec<(String, String, bool)>;

impl HeaderRules {
    /// Validates `c`; `field` names it in errors (`request.headers`).
    pub fn compile(c: &HeadersConfig, field: &str, response: bool) -> Result<HeaderRules, String> {
        let mut rules = HeaderRules::default();
        for (from, to) in &c.rename {
            let f = format!("{field}.rename");
            rules.rename.push((header_name(&f, from)?, header_name(&f, to)?));
        }
        for name in &c.remove {
            rules.remove.push(header_name(&format!("{field}.remove"), name)?);
        }
        for (name, value) in &c.set {
            let f = format!("{field}.set.{name}");
            rules.set.push((header_name(&f, name)?, template(&f, value, response)?));
        }
        for (name, value) in &c.add {
            let f = format!("{field}.add.{name}");
            rules.add.push((header_name(&f, name)?, template(&f, value, response)?));
        }
        Ok(rules)
    }

    /// True when no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// True when the rules can run before the response exists: no renames (they
    /// read the response's headers) and no template reads the response or the
    /// consumer (which later plugins may still change).
    pub fn known_in_request_phase(&self) -> bool {
        self.rename.is_empty() && self.templates().flat_map(Template::sources).all(|s| !s.in_response())
    }

    /// Every template.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.set.iter().chain(&self.add).map(|(_, t)| t)
    }

    /// Renders the values of `set` and `add`.
    pub fn render(&self, vars: &dyn Vars) -> RenderedHeaders {
        let set = self.set.iter().map(|(n, t)| (n, t, false));
        let add = self.add.iter().map(|(n, t)| (n, t, true));
        set.chain(add).filter_map(|(n, t, append)| Some((n.clone(), t.render_text(vars)?, append))).collect()
    }

    /// Applies the rules with the values of [`HeaderRules::render`]. Rendered values
    /// that are not valid header values (line breaks from request data) are skipped
    /// with a warning. A rename or removal the host refuses — names are checked at
    /// load, renamed values are the header's own, so none is — is `Err` with the
    /// message of a plugin fault: the headers would be half changed.
    pub fn apply(&self, h: &mut dyn Headers, rendered: &RenderedHeaders) -> Result<(), String> {
        let refused =
            |op: &str, name: &str, e: HeaderError| format!("could not {op} the header `{name}`: {e}");
        for (from, to) in &self.rename {
            let values: Vec<String> =
                h.header_all(from).into_iter().filter_map(|v| String::from_utf8(v).ok()).collect();
            if values.is_empty() {
                continue;
            }
            h.remove_header(from).map_err(|e| refused("remove", from, e))?;
            h.remove_header(to).map_err(|e| refused("remove", to, e))?;
            for v in values {
                h.append_header(to, &v).map_err(|e| refused("add to", to, e))?;
            }
        }
        for name in &self.remove {
            h.remove_header(name).map_err(|e| refused("remove", name, e))?;
        }
        for (name, value, append) in rendered {
            let done = if *append { h.append_header(name, value) } else { h.set_header(name, value) };
            let ok = done.is_ok();
            if !ok {
                log::warn(&format!(
                    "transform: header `{name}` skipped: its rendered value is not a valid header value"
                ));
            }
        }
        Ok(())
    }
}

/// Compiled path rewrites.
#[derive(Debug, Default)]
pub struct PathRules {
    strip: Option<String>,
    add: Option<String>,
    regex: Option<(Regex, String)>,
}

fn prefix(field: &str, p: &Option<String>) -> Result<Option<String>, String> {
    match p.as_deref() {
        None => Ok(None),
        Some(p) if !p.starts_with('/') || p.contains('?') => {
            Err(format!("{field}: `{p}` must start with `/` and contain no `?`"))
        }
        Some(p) => Ok(Some(p.trim_end_matches('/').to_owned())),
    }
}

impl PathRules {
    /// Validates `c`.
    pub fn compile(c: &PathConfig) -> Result<PathRules, String> {
        let mut rules = PathRules {
            strip: prefix("request.path.strip_prefix", &c.strip_prefix)?,
            add: prefix("request.path.add_prefix", &c.add_prefix)?,
            regex: None,
        };
        if let Some(r) = &c.regex {
            let re = Regex::new(&r.pattern)
                .map_err(|e| format!("request.path.regex.pattern: invalid regex `{}`: {e}", r.pattern))?;
            if !r.replace.starts_with('/') || r.replace.contains('?') {
                return Err(format!(
                    "request.path.regex.replace: `{}` must start with `/` and contain no `?`",
                    r.replace
                ));
            }
            rules.regex = Some((re, r.replace.clone()));
        }
        Ok(rules)
    }

    /// True when no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.strip.is_none() && self.add.is_none() && self.regex.is_none()
    }

    /// The rewritten path, or `None` when nothing changed.
    pub fn apply(&self, path: &str) -> Option<String> {
        let mut out = path.to_owned();
        if let Some(strip) = &self.strip {
            match out.strip_prefix(strip.as_str()) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    out = if rest.is_empty() { "/".to_owned() } else { rest.to_owned() };
                }
                _ => {}
            }
        }
        if let Some(add) = &self.add {
            out = if out == "/" { format!("{add}/") } else { format!("{add}{out}") };
        }
        if let Some((re, replace)) = &self.regex {
            out = re.replace(&out, replace.as_str()).into_owned();
        }
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        (out != path).then_some(out)
    }
}

/// Compiled query parameter changes.
#[derive(Debug, Default)]
pub struct QueryRules {
    remove: Vec<String>,
    set: Vec<(String, Template)>,
    add: Vec<(String, Template)>,
}

/// Query values rendered for one request: `(name, value, append)`.
pub type RenderedQuery = Vec<(String, String, bool)>;

impl QueryRules {
    /// Validates `c`.
    pub fn compile(c: &QueryConfig) -> Result<QueryRules, String> {
        let mut rules = QueryRules { remove: c.remove.clone(), ..QueryRules::default() };
        for (name, value) in &c.set {
            rules.set.push((name.clone(), template(&format!("request.query.set.{name}"), value, false)?));
        }
        for (name, value) in &c.add {
            rules.add.push((name.clone(), template(&format!("request.query.add.{name}"), value, false)?));
        }
        Ok(rules)
    }

    /// True when no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Renders the values of `set` and `add`.
    pub fn render(&self, vars: &dyn Vars) -> RenderedQuery {
        let set = self.set.iter().map(|(n, t)| (n, t, false));
        let add = self.add.iter().map(|(n, t)| (n, t, true));
        set.chain(add).filter_map(|(n, t, append)| Some((n.clone(), t.render_text(vars)?, append))).collect()
    }

    /// The new query string (`None`: no query).
    pub fn apply(&self, query: Option<&str>, rendered: &RenderedQuery) -> Option<String> {
        let mut pairs: Vec<&str> = query.unwrap_or("").split('&').filter(|p| !p.is_empty()).collect();
        let name_of = |p: &str| decode(p.split_once('=').map_or(p, |(k, _)| k));
        let replaced: Vec<&String> = rendered.iter().filter(|(_, _, a)| !a).map(|(n, _, _)| n).collect();
        pairs.retain(|p| {
            let name = name_of(p);
            !self.remove.contains(&name) && !replaced.contains(&&name)
        });
        let mut out: Vec<String> = pairs.into_iter().map(str::to_owned).collect();
        for (name, value, _) in rendered {
            out.push(format!("{}={}", encode(name), encode(value)));
        }
        (!out.is_empty()).then(|| out.join("&"))
    }
}

/// Percent-decodes a query component (`+` is a space).
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `set` value: JSON whose strings are templates.
#[derive(Debug)]
enum ValueTemplate {
    Template(Template),
    Array(Vec<ValueTemplate>),
    Object(Vec<(String, ValueTemplate)>),
    Literal(Value),
}

impl ValueTemplate {
    fn compile(v: &Value, field: &str, response: bool) -> Result<ValueTemplate, String> {
        Ok(match v {
            Value::String(s) => ValueTemplate::Template(template(field, s, response)?),
            Value::Array(items) => ValueTemplate::Array(
                items.iter().map(|i| ValueTemplate::compile(i, field, response)).collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => ValueTemplate::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), ValueTemplate::compile(v, field, response)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => ValueTemplate::Literal(other.clone()),
        })
    }

    fn render(&self, vars: &dyn Vars) -> Option<Value> {
        match self {
            ValueTemplate::Template(t) => t.render(vars),
            ValueTemplate::Literal(v) => Some(v.clone()),
            ValueTemplate::Array(items) => {
                Some(Value::Array(items.iter().map(|i| i.render(vars).unwrap_or(Value::Null)).collect()))
            }
            ValueTemplate::Object(fields) => Some(Value::Object(
                fields.iter().map(|(k, v)| (k.clone(), v.render(vars).unwrap_or(Value::Null))).collect(),
            )),
        }
    }

    fn templates<'a>(&'a self, out: &mut Vec<&'a Template>) {
        match self {
            ValueTemplate::Template(t) => out.push(t),
            ValueTemplate::Array(items) => items.iter().for_each(|i| i.templates(out)),
            ValueTemplate::Object(fields) => fields.iter().for_each(|(_, v)| v.templates(out)),
            ValueTemplate::Literal(_) => {}
        }
    }
}

#[derive(Debug)]
struct SetRule {
    pointer: Pointer,
    value: ValueTemplate,
    as_type: Option<ValueType>,
}

/// Compiled JSON body changes.
#[derive(Debug, Default)]
pub struct BodyRules {
    rename: Vec<(Pointer, Pointer)>,
    remove: Vec<Pointer>,
    set: Vec<SetRule>,
}

/// `set` values rendered for one request: (rule index, value).
pub type RenderedBody = Vec<(usize, Value)>;

fn pointer(field: &str, s: &str, root_ok: bool) -> Result<Pointer, String> {
    let p = Pointer::parse(s).map_err(|e| format!("{field}: {e}"))?;
    if p.is_root() && !root_ok {
        return Err(format!("{field}: the whole document (``) cannot be renamed or removed"));
    }
    Ok(p)
}

impl BodyRules {
    /// Validates `c`; `field` names it in errors (`request.body`).
    pub fn compile(c: &BodyConfig, field: &str, response: bool) -> Result<BodyRules, String> {
        let mut rules = BodyRules::default();
        for (i, r) in c.rename.iter().enumerate() {
            let f = format!("{field}.rename[{i}]");
            rules.rename.push((
                pointer(&format!("{f}.from"), &r.from, false)?,
                pointer(&format!("{f}.to"), &r.to, false)?,
            ));
        }
        for (i, r) in c.remove.iter().enumerate() {
            rules.remove.push(pointer(&format!("{field}.remove[{i}]"), r, false)?);
        }
        for (i, SetConfig { pointer: p, value, as_type }) in c.set.iter().enumerate() {
            let f = format!("{field}.set[{i}]");
            if as_type.is_some() && !value.is_string() {
                return Err(format!("{f}.as: only a string value (a template) can be converted"));
            }
            rules.set.push(SetRule {
                pointer: pointer(&format!("{f}.pointer"), p, true)?,
                value: ValueTemplate::compile(value, &format!("{f}.value"), response)?,
                as_type: *as_type,
            });
        }
        Ok(rules)
    }

    /// True when no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.set.is_empty()
    }

    /// Every template.
    pub fn templates(&self) -> Vec<&Template> {
        let mut out = Vec::new();
        self.set.iter().for_each(|r| r.value.templates(&mut out));
        out
    }

    /// Renders the `set` values. A value that does not convert to its `as` type is an
    /// error naming the field.
    pub fn render(&self, vars: &dyn Vars) -> Result<RenderedBody, String> {
        let mut out = Vec::with_capacity(self.set.len());
        for (i, rule) in self.set.iter().enumerate() {
            let Some(v) = rule.value.render(vars) else { continue };
            let v = match rule.as_type {
                None => v,
                Some(t) => convert(v, t).ok_or_else(|| {
                    format!("the value for `{}` is not a {}", rule.pointer.as_str(), type_name(t))
                })?,
            };
            out.push((i, v));
        }
        Ok(out)
    }

    /// Applies the rules to `doc` with the values of [`BodyRules::render`].
    pub fn apply(&self, doc: &mut Value, rendered: RenderedBody) {
        for (from, to) in &self.rename {
            if let Some(v) = from.take(doc) {
                to.set(doc, v);
            }
        }
        for p in &self.remove {
            p.take(doc);
        }
        for (i, v) in rendered {
            self.set[i].pointer.set(doc, v);
        }
    }
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::String => "string",
        ValueType::Number => "number",
        ValueType::Boolean => "boolean",
        ValueType::Json => "JSON document",
    }
}

fn convert(v: Value, t: ValueType) -> Option<Value> {
    let s = text(&v);
    match t {
        ValueType::String => Some(Value::String(s)),
        ValueType::Number if v.is_number() => Some(v),
        ValueType::Number => match s.trim().parse::<i64>() {
            Ok(n) => Some(Value::from(n)),
            Err(_) => s.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number),
        },
        ValueType::Boolean if v.is_boolean() => Some(v),
        ValueType::Boolean => match s.trim() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        ValueType::Json => serde_json::from_str(&s).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_strip_at_segment_boundaries_and_replace() {
        let c = PathConfig { strip_prefix: Some("/api".into()), add_prefix: Some("/v2".into()), regex: None };
        let r = PathRules::compile(&c).unwrap();
        assert_eq!(r.apply("/api/users").as_deref(), Some("/v2/users"));
        assert_eq!(r.apply("/api").as_deref(), Some("/v2/"));
        assert_eq!(r.apply("/apis").as_deref(), Some("/v2/apis"));
        let strip_only = PathRules::compile(&PathConfig { add_prefix: None, ..c }).unwrap();
        assert_eq!(strip_only.apply("/api").as_deref(), Some("/"));
        assert_eq!(strip_only.apply("/other"), None);
    }

    #[test]
    fn query_rules_remove_set_and_add_with_encoding() {
        let c = QueryConfig {
            remove: vec!["debug".into()],
            set: [("page".to_owned(), "1".to_owned())].into(),
            add: [("tag".to_owned(), "a b&c".to_owned())].into(),
        };
        let r = QueryRules::compile(&c).unwrap();
        struct None_;
        impl Vars for None_ {
            fn get(&self, _: &crate::template::Source) -> Option<Value> {
                None
            }
        }
        let rendered = r.render(&None_);
        assert_eq!(
            r.apply(Some("q=x&debug=1&page=3&de%62ug=2"), &rendered).as_deref(),
            Some("q=x&page=1&tag=a%20b%26c")
        );
        assert_eq!(QueryRules::default().apply(Some("debug"), &vec![]).as_deref(), Some("debug"));
        assert_eq!(decode("a+b%2Fc%zz%"), "a b/c%zz%");
    }
}
