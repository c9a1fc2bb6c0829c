//! Checking one request (parameters and JSON body) and one response against their
//! operation. The work is proportional to the operation: its parameters, its body's
//! schema, the response's schema.

use serde_json::Value;

use crate::spec::{Api, Body, In, Operation, Param, is_json};

/// One problem, as listed in the problem+json body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// `body` or the parameter's place (`query`, `path`, `header`, `cookie`).
    #[serde(rename = "in")]
    pub place: &'static str,
    /// A JSON pointer into the body (`/name`, `""` for the body itself), or
    /// `query.limit` for a parameter.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// What a request's body turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyVerdict {
    Ok,
    /// Its media type is not one the operation takes (→ 415).
    Unsupported(String),
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set).
pub fn percent_decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) if plus => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The request's inputs, read once per request.
pub struct Inputs<'a> {
    pub path_params: Vec<(&'a str, &'a str)>,
    pub query: Vec<(String, String)>,
    pub headers: &'a dyn Fn(&str) -> Vec<String>,
}

/// `a=1&b=x+y` → `[("a", "1"), ("b", "x y")]`.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

fn cookie_values(headers: &dyn Fn(&str) -> Vec<String>, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in headers("cookie") {
        for pair in line.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == name
            {
                out.push(v.to_owned());
            }
        }
    }
    out
}

/// Checks the parameters of `op`; problems are pushed to `out` (at most `limit`).
pub fn params(api: &Api, op: &Operation, input: &Inputs<'_>, limit: usize, out: &mut Vec<Problem>) {
    for p in &op.params {
        if out.len() >= limit {
            return;
        }
        // OpenAPI: these header parameters are described elsewhere and ignored.
        if p.location == In::Header
            && ["accept", "content-type", "authorization"].contains(&p.name.to_ascii_lowercase().as_str())
        {
            continue;
        }
        let values: Vec<String> = match p.location {
            In::Path => input
                .path_params
                .iter()
                .filter(|(n, _)| *n == p.name)
                .map(|(_, v)| percent_decode(v, false))
                .collect(),
            In::Query => input.query.iter().filter(|(k, _)| *k == p.name).map(|(_, v)| v.clone()).collect(),
            In::Header => (input.headers)(&p.name),
            In::Cookie => cookie_values(input.headers, &p.name),
        };
        one_param(api, p, &values, limit, out);
    }
}

fn one_param(api: &Api, p: &Param, values: &[String], limit: usize, out: &mut Vec<Problem>) {
    let field = format!("{}.{}", p.location.name(), p.name);
    if values.is_empty() {
        if p.required {
            out.push(Problem { place: p.location.name(), field, message: "is required".to_owned() });
        }
        return;
    }
    let Some(schema) = p.schema else { return };
    let texts: Vec<&str> = values.iter().map(String::as_str).collect();
    let value = api.schemas.coerce(schema, &texts, p.separator);
    for v in api.schemas.check(schema, &value, limit.saturating_sub(out.len())) {
        let pointer = v.pointer();
        let field =
            if pointer.is_empty() { field.clone() } else { format!("{field}{}", pointer.replace('/', ".")) };
        out.push(Problem { place: p.location.name(), field, message: v.message });
    }
}

/// The media type's essence, lowercase: `application/json; charset=utf-8` → `application/json`.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn media_matches(documented: &str, actual: &str) -> bool {
    documented == actual
        || documented == "*/*"
        || documented.strip_suffix("/*").is_some_and(|top| actual.split('/').next() == Some(top))
}

/// Checks a request body against `body`.
pub fn body(
    api: &Api,
    body: &Body,
    content_type: Option<&str>,
    bytes: &[u8],
    limit: usize,
    out: &mut Vec<Problem>,
) -> BodyVerdict {
    if bytes.is_empty() {
        if body.required {
            out.push(Problem { place: "body", field: String::new(), message: "is required".to_owned() });
        }
        return BodyVerdict::Ok;
    }
    // A body without a `Content-Type` is read as the operation's JSON, when it takes JSON.
    let actual = match content_type {
        Some(c) => essence(c),
        None => match body.media.iter().find(|(m, _)| is_json(m)) {
            Some(_) => "application/json".to_owned(),
            None => String::new(),
        },
    };
    let Some((documented, schema)) = body.media.iter().find(|(m, _)| media_matches(m, &actual)) else {
        if body.media.is_empty() {
            return BodyVerdict::Ok;
        }
        return BodyVerdict::Unsupported(actual);
    };
    if !is_json(documented) || !(actual == "application/json" || actual.ends_with("+json")) {
        return BodyVerdict::Ok;
    }
    json(api, *schema, bytes, "body", limit, out);
    BodyVerdict::Ok
}

/// Parses `bytes` as JSON and checks it against `schema`.
pub fn json(
    api: &Api,
    schema: Option<json_schema::SchemaId>,
    bytes: &[u8],
    place: &'static str,
    limit: usize,
    out: &mut Vec<Problem>,
) {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            out.push(Problem { place, field: String::new(), message: format!("is not valid JSON: {e}") });
            return;
        }
    };
    let Some(schema) = schema else { return };
    for v in api.schemas.check(schema, &value, limit.saturating_sub(out.len())) {
        out.push(Problem { place, field: v.pointer(), message: v.message });
    }
}

/// The documented response for `status`: exact (`404`), then range (`4XX`), then `default`.
pub fn reply_for(op: &Operation, status: u16) -> Option<&crate::spec::Reply> {
    let exact = status.to_string();
    let range = format!("{}XX", status / 100);
    op.replies
        .iter()
        .find(|r| r.status == exact)
        .or_else(|| op.replies.iter().find(|r| r.status == range))
        .or_else(|| op.replies.iter().find(|r| r.status == "DEFAULT"))
}
