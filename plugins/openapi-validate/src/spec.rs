//! The OpenAPI document, compiled once at `configure`: path templates grouped by
//! segment count, and per operation its parameters, request body and response
//! schemas, each schema compiled by the shared JSON Schema crate. Unsupported
//! constructs are errors naming their JSON pointer in the document.

use std::collections::HashMap;

use json_schema::{Compiler, SchemaId, Schemas};
use serde_json::{Map, Value};

/// The methods an OpenAPI path item can hold.
pub const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Where a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
    Header,
    Cookie,
}

impl In {
    pub fn name(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
            In::Cookie => "cookie",
        }
    }
}

/// One parameter of an operation.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub location: In,
    pub required: bool,
    pub schema: Option<SchemaId>,
    /// Array values: one value split on this (`form`/`simple` without explode: `,`;
    /// `spaceDelimited`: ` `; `pipeDelimited`: `|`).
    pub separator: char,
}

/// What an operation's request body may be.
#[derive(Debug, Default)]
pub struct Body {
    pub required: bool,
    /// Documented media types (lowercase, as written: `application/json`,
    /// `application/*`, `*/*`), each with its schema when it is a JSON type.
    pub media: Vec<(String, Option<SchemaId>)>,
}

/// One documented response.
#[derive(Debug)]
pub struct Reply {
    /// `200`, `2XX` or `default`.
    pub status: String,
    /// The JSON schema of its body, if documented.
    pub json: Option<SchemaId>,
}

/// One operation.
#[derive(Debug)]
pub struct Operation {
    /// `GET`, `POST`, …
    pub method: String,
    pub id: String,
    pub params: Vec<Param>,
    pub body: Option<Body>,
    pub replies: Vec<Reply>,
}

/// One segment of a path template: literal text, or text around one parameter.
#[derive(Debug)]
pub enum Seg {
    Lit(String),
    Param { before: String, name: String, after: String },
}

/// A path template and its operations.
#[derive(Debug)]
pub struct PathItem {
    pub template: String,
    pub segs: Vec<Seg>,
    pub literals: usize,
    pub ops: Vec<Operation>,
}

/// Path parameters of a matched template: (name, raw value from the request path).
pub type Captures<'a, 'p> = Vec<(&'a str, &'p str)>;

/// A compiled document.
#[derive(Debug, Default)]
pub struct Api {
    pub schemas: Schemas,
    pub items: Vec<PathItem>,
    /// Segment count → items with that many segments, most literal first.
    by_len: HashMap<usize, Vec<usize>>,
}

/// A JSON pointer token.
pub fn token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Follows a local `$ref` (`#/components/parameters/Limit`) to its target, which is
/// returned with its pointer; anything else is returned as it is.
fn deref<'a>(doc: &'a Value, v: &'a Value, at: &str) -> Result<(&'a Value, String), String> {
    let (mut v, mut at) = (v, at.to_owned());
    for _ in 0..8 {
        let Some(r) = v.get("$ref") else { return Ok((v, at)) };
        let r = r.as_str().unwrap_or("");
        let pointer = r.strip_prefix('#').ok_or_else(|| {
            format!("{at}/$ref: `{r}`: only references inside the document (`#/...`) are supported")
        })?;
        v = doc.pointer(pointer).ok_or_else(|| format!("{at}/$ref: `{r}` points at nothing"))?;
        at = pointer.to_owned();
    }
    Err(format!("{at}: too many nested references"))
}

fn parse_template(t: &str, at: &str) -> Result<(Vec<Seg>, usize), String> {
    let rest = t.strip_prefix('/').ok_or_else(|| format!("{at}: a path must start with `/`"))?;
    let mut segs = Vec::new();
    for seg in rest.split('/') {
        match seg.find('{') {
            None if !seg.contains('}') => segs.push(Seg::Lit(seg.to_owned())),
            Some(open) => {
                let close = seg.find('}').filter(|c| *c > open + 1);
                let close = close.ok_or_else(|| format!("{at}: `{seg}` is not a parameter template"))?;
                let after = &seg[close + 1..];
                if after.contains(['{', '}']) {
                    return Err(format!("{at}: `{seg}`: one parameter per segment is supported"));
                }
                let (before, name) = (&seg[..open], &seg[open + 1..close]);
                segs.push(Seg::Param { before: before.into(), name: name.into(), after: after.into() });
            }
            None => return Err(format!("{at}: `{seg}` is not a parameter template")),
        }
    }
    let literals = segs.iter().filter(|s| matches!(s, Seg::Lit(_))).count();
    Ok((segs, literals))
}

/// Whether a media type (lowercase essence) is JSON.
pub fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json") || media == "application/*" || media == "*/*"
}

struct Build<'d> {
    doc: &'d Value,
    compiler: Compiler<'d>,
}

impl Build<'_> {
    fn schema(&mut self, v: Option<&Value>, at: &str) -> Result<Option<SchemaId>, String> {
        match v {
            Some(s) => self.compiler.compile(s, &format!("{at}/schema")).map(Some),
            None => Ok(None),
        }
    }

    fn param(&mut self, v: &Value, at: &str) -> Result<Param, String> {
        let (v, at) = deref(self.doc, v, at)?;
        let name = v.get("name").and_then(Value::as_str).ok_or_else(|| format!("{at}/name: required"))?;
        let location = match v.get("in").and_then(Value::as_str) {
            Some("path") => In::Path,
            Some("query") => In::Query,
            Some("header") => In::Header,
            Some("cookie") => In::Cookie,
            other => return Err(format!("{at}/in: must be path, query, header or cookie, not {other:?}")),
        };
        if v.get("content").is_some() {
            return Err(format!(
                "{at}/content: parameters described by `content` are not supported; use `schema`"
            ));
        }
        // Exploded arrays (`?tag=a&tag=b`) come as several values; otherwise one value
        // is split on the style's separator.
        let style = v.get("style").and_then(Value::as_str);
        let separator = match style {
            None | Some("form" | "simple") => ',',
            Some("spaceDelimited") => ' ',
            Some("pipeDelimited") => '|',
            Some(other) => return Err(format!("{at}/style: parameter style `{other}` is not supported")),
        };
        let required = location == In::Path || v.get("required").and_then(Value::as_bool).unwrap_or(false);
        let schema = self.schema(v.get("schema"), &at)?;
        Ok(Param { name: name.to_owned(), location, required, schema, separator })
    }

    fn params(&mut self, list: Option<&Value>, at: &str, into: &mut Vec<Param>) -> Result<(), String> {
        let Some(list) = list else { return Ok(()) };
        let list = list.as_array().ok_or_else(|| format!("{at}/parameters: must be a list"))?;
        for (i, p) in list.iter().enumerate() {
            let p = self.param(p, &format!("{at}/parameters/{i}"))?;
            // An operation's parameter overrides the path item's of the same name and place.
            into.retain(|q| !(q.name == p.name && q.location == p.location));
            into.push(p);
        }
        Ok(())
    }

    fn content(&mut self, v: &Value, at: &str) -> Result<Vec<(String, Option<SchemaId>)>, String> {
        let Some(content) = v.get("content") else { return Ok(Vec::new()) };
        let content = content.as_object().ok_or_else(|| format!("{at}/content: must be an object"))?;
        let mut out = Vec::new();
        for (media, m) in content {
            let lower = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            let here = format!("{at}/content/{}", token(media));
            let schema = if is_json(&lower) { self.schema(m.get("schema"), &here)? } else { None };
            out.push((lower, schema));
        }
        Ok(out)
    }

    fn operation(
        &mut self,
        method: &str,
        v: &Value,
        at: &str,
        shared: &[Param],
    ) -> Result<Operation, String> {
        let mut params = shared.to_vec();
        self.params(v.get("parameters"), at, &mut params)?;
        let body = match v.get("requestBody") {
            Some(b) => {
                let (b, here) = deref(self.doc, b, &format!("{at}/requestBody"))?;
                let required = b.get("required").and_then(Value::as_bool).unwrap_or(false);
                Some(Body { required, media: self.content(b, &here)? })
            }
            None => None,
        };
        let mut replies = Vec::new();
        if let Some(responses) = v.get("responses").and_then(Value::as_object) {
            for (status, r) in responses {
                let (r, here) = deref(self.doc, r, &format!("{at}/responses/{}", token(status)))?;
                let json = self.content(r, &here)?.into_iter().find_map(|(_, s)| s);
                replies.push(Reply { status: status.to_ascii_uppercase(), json });
            }
        }
        let id = v.get("operationId").and_then(Value::as_str).map(str::to_owned);
        let method = method.to_ascii_uppercase();
        Ok(Operation { id: id.unwrap_or_else(|| method.clone()), method, params, body, replies })
    }
}

impl Api {
    /// Compiles `doc`, keeping only the path template `only` when given.
    pub fn compile(doc: &Value, only: Option<&str>) -> Result<Api, String> {
        let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
        if !(version.starts_with("3.0") || version.starts_with("3.1")) {
            return Err(format!(
                "/openapi: an OpenAPI 3.0 or 3.1 document is needed, found {:?}",
                doc.get("openapi")
            ));
        }
        let paths: &Map<String, Value> = match doc.get("paths") {
            Some(Value::Object(p)) => p,
            None => &Map::new(),
            Some(_) => return Err("/paths: must be an object".to_owned()),
        };
        if let Some(t) = only
            && !paths.contains_key(t)
        {
            return Err(format!("path: the document has no path `{t}`"));
        }
        let mut b = Build { doc, compiler: Compiler::new(doc) };
        let mut items = Vec::new();
        for (template, item) in paths {
            if only.is_some_and(|t| t != template) {
                continue;
            }
            let at = format!("/paths/{}", token(template));
            let (segs, literals) = parse_template(template, &at)?;
            let (item, at) = deref(doc, item, &at)?;
            let mut shared = Vec::new();
            b.params(item.get("parameters"), &at, &mut shared)?;
            let mut ops = Vec::new();
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    ops.push(b.operation(method, op, &format!("{at}/{method}"), &shared)?);
                }
            }
            items.push(PathItem { template: template.clone(), segs, literals, ops });
        }
        let mut by_len: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            by_len.entry(item.segs.len()).or_default().push(i);
        }
        for list in by_len.values_mut() {
            list.sort_by_key(|i| std::cmp::Reverse(items[*i].literals));
        }
        let schemas = b.compiler.finish()?;
        Ok(Api { schemas, items, by_len })
    }

    /// The path item matching `path` (without query), with its path parameters'
    /// raw (still percent-encoded) values. Literal segments win over parameters.
    pub fn find<'p>(&self, path: &'p str) -> Option<(usize, &PathItem, Captures<'_, 'p>)> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        for i in self.by_len.get(&parts.len())? {
            let item = &self.items[*i];
            if let Some(params) = item.capture(&parts) {
                return Some((*i, item, params));
            }
        }
        None
    }

    /// Whether any operation has a request body, or a response with a JSON schema.
    pub fn has_bodies(&self) -> (bool, bool) {
        let ops = || self.items.iter().flat_map(|i| &i.ops);
        (ops().any(|o| o.body.is_some()), ops().any(|o| o.replies.iter().any(|r| r.json.is_some())))
    }
}

impl PathItem {
    fn capture<'p>(&self, parts: &[&'p str]) -> Option<Captures<'_, 'p>> {
        let mut params = Vec::new();
        for (seg, part) in self.segs.iter().zip(parts) {
            match seg {
                Seg::Lit(l) if l == part => {}
                Seg::Lit(_) => return None,
                Seg::Param { before, name, after } => {
                    let v = part.strip_prefix(before.as_str())?.strip_suffix(after.as_str())?;
                    if v.is_empty() {
                        return None;
                    }
                    params.push((name.as_str(), v));
                }
            }
        }
        Some(params)
    }

    /// The operation for `method`; `HEAD` falls back to `GET`.
    pub fn operation(&self, method: &str) -> Option<(usize, &Operation)> {
        let find = |m: &str| self.ops.iter().enumerate().find(|(_, o)| o.method == m);
        find(method).or_else(|| if method == "HEAD" { find("GET") } else { None })
    }
}
