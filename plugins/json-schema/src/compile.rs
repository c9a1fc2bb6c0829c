//! Compiling schemas: keywords checked and turned into [`Node`]s once, `$ref`s resolved
//! against the document (each target compiled once, so recursion terminates).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use crate::{SchemaId, Schemas};

/// Keywords that only describe, never constrain.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "example",
    "examples",
    "format",
    "$schema",
    "$id",
    "$comment",
    "readOnly",
    "writeOnly",
    "deprecated",
    "discriminator",
    "xml",
    "externalDocs",
    "contentMediaType",
    "contentEncoding",
];

/// The JSON types, as bits of [`Node::types`].
pub(crate) const TYPES: [(&str, u8); 7] = [
    ("string", 1),
    ("number", 2),
    ("integer", 4),
    ("boolean", 8),
    ("object", 16),
    ("array", 32),
    ("null", 64),
];

/// What members beyond `properties` may be.
#[derive(Debug, Clone, Default)]
pub(crate) enum Additional {
    /// Anything.
    #[default]
    Any,
    /// Nothing.
    None,
    /// Values of this schema.
    Schema(SchemaId),
}

/// One compiled schema.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    /// Bits of [`TYPES`]; `0`: any type.
    pub types: u8,
    pub properties: BTreeMap<String, SchemaId>,
    pub required: Vec<String>,
    pub additional: Additional,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub items: Option<SchemaId>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub unique_items: bool,
    pub enumeration: Option<Vec<Value>>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub pattern: Option<(String, regex_lite::Regex)>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: Option<f64>,
    pub exclusive_maximum: Option<f64>,
    pub multiple_of: Option<f64>,
    /// `allOf`, plus the target of a `$ref`.
    pub all_of: Vec<SchemaId>,
    pub any_of: Vec<SchemaId>,
    pub one_of: Vec<SchemaId>,
    pub not: Option<SchemaId>,
}

/// Compiles schemas of one document. `$ref: '#/a/b'` is resolved in that document.
#[derive(Debug)]
pub struct Compiler<'d> {
    doc: &'d Value,
    nodes: Vec<Node>,
    refs: HashMap<String, SchemaId>,
}

fn err(at: &str, msg: impl std::fmt::Display) -> String {
    format!("{at}: {msg}")
}

fn count(v: &Value, at: &str, key: &str) -> Result<u64, String> {
    v.as_u64().ok_or_else(|| err(&format!("{at}/{key}"), "must be a non-negative integer"))
}

fn num(v: &Value, at: &str, key: &str) -> Result<f64, String> {
    v.as_f64().ok_or_else(|| err(&format!("{at}/{key}"), "must be a number"))
}

/// A key as a JSON pointer token.
pub(crate) fn token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl<'d> Compiler<'d> {
    /// A compiler whose `$ref`s resolve in `doc`.
    pub fn new(doc: &'d Value) -> Self {
        Self { doc, nodes: Vec::new(), refs: HashMap::new() }
    }

    /// Compiles the schema at JSON pointer `at` of the document (`""`: the document).
    pub fn compile_at(&mut self, at: &str) -> Result<SchemaId, String> {
        let v = self.doc.pointer(at).ok_or_else(|| err(at, "no such schema"))?;
        self.compile(v, at)
    }

    /// Compiles `v`, a schema found at JSON pointer `at` of the document (`at` only
    /// locates errors; `v` need not be inside the document). An error is
    /// `pointer: message`.
    pub fn compile(&mut self, v: &Value, at: &str) -> Result<SchemaId, String> {
        let node = self.node(v, at)?;
        self.nodes.push(node);
        Ok(SchemaId(self.nodes.len() - 1))
    }

    /// The compiled schemas. A `$ref` cycle that never descends into a property or an
    /// item (`A: { $ref: '#/B' }`, `B: { allOf: [$ref: '#/A'] }`) is an error naming
    /// a schema on it: checking any value would never end.
    pub fn finish(self) -> Result<Schemas, String> {
        // 0: not seen, 1: on the current path, 2: done.
        let mut state = vec![0u8; self.nodes.len()];
        for start in 0..self.nodes.len() {
            if let Some(id) = self.cycle_from(start, &mut state) {
                let at = self.refs.iter().find(|(_, r)| r.0 == id).map(|(p, _)| p.as_str()).unwrap_or("");
                return Err(err(at, "a `$ref` cycle that never descends into a property or an item"));
            }
        }
        Ok(Schemas { nodes: self.nodes })
    }

    /// A node on a cycle of same-value edges reachable from `id`, if any.
    fn cycle_from(&self, id: usize, state: &mut [u8]) -> Option<usize> {
        match state[id] {
            1 => return Some(id),
            2 => return None,
            _ => {}
        }
        state[id] = 1;
        let n = &self.nodes[id];
        let next = n.all_of.iter().chain(&n.any_of).chain(&n.one_of).chain(&n.not);
        for sub in next {
            if let Some(found) = self.cycle_from(sub.0, state) {
                return Some(found);
            }
        }
        state[id] = 2;
        None
    }

    fn reference(&mut self, r: &Value, at: &str) -> Result<SchemaId, String> {
        let at = format!("{at}/$ref");
        let r = r.as_str().ok_or_else(|| err(&at, "must be a string"))?;
        let Some(pointer) = r.strip_prefix('#') else {
            return Err(err(
                &at,
                format!("`{r}`: only references inside the document (`#/...`) are supported"),
            ));
        };
        let pointer = percent_decode(pointer);
        if let Some(id) = self.refs.get(&pointer) {
            return Ok(*id);
        }
        let doc = self.doc;
        let target = doc.pointer(&pointer).ok_or_else(|| err(&at, format!("`{r}` points at nothing")))?;
        // Reserve the slot first: a schema that refers to itself finds it.
        self.nodes.push(Node::default());
        let id = SchemaId(self.nodes.len() - 1);
        self.refs.insert(pointer.clone(), id);
        let node = self.node(target, &pointer)?;
        self.nodes[id.0] = node;
        Ok(id)
    }

    fn list(&mut self, v: &Value, at: &str, key: &str) -> Result<Vec<SchemaId>, String> {
        let at = format!("{at}/{key}");
        let items =
            v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| err(&at, "must be a non-empty list"))?;
        items.iter().enumerate().map(|(i, s)| self.compile(s, &format!("{at}/{i}"))).collect()
    }

    fn node(&mut self, v: &Value, at: &str) -> Result<Node, String> {
        let obj: &Map<String, Value> = match v {
            Value::Object(o) => o,
            Value::Bool(true) => return Ok(Node::default()),
            Value::Bool(false) => {
                return Ok(Node { not: Some(self.compile(&Value::Bool(true), at)?), ..Node::default() });
            }
            _ => return Err(err(at, "a schema must be an object")),
        };
        let mut s = Node::default();
        let mut nullable = false;
        let (mut excl_min_flag, mut excl_max_flag) = (false, false);
        for (key, val) in obj {
            let here = |k: &str| format!("{at}/{k}");
            match key.as_str() {
                "type" => {
                    let list: Vec<&Value> = match val {
                        Value::Array(a) => a.iter().collect(),
                        one => vec![one],
                    };
                    for t in list {
                        match TYPES.iter().find(|(name, _)| Some(*name) == t.as_str()) {
                            Some((_, bit)) => s.types |= bit,
                            None => return Err(err(&here(key), format!("unknown type {t}"))),
                        }
                    }
                }
                "nullable" => nullable = val.as_bool().ok_or_else(|| err(&here(key), "must be a boolean"))?,
                "properties" => {
                    let props = val.as_object().ok_or_else(|| err(&here(key), "must be an object"))?;
                    for (name, p) in props {
                        let id = self.compile(p, &format!("{at}/properties/{}", token(name)))?;
                        s.properties.insert(name.clone(), id);
                    }
                }
                "required" => {
                    let names = val.as_array().ok_or_else(|| err(&here(key), "must be a list"))?;
                    for n in names {
                        let n = n.as_str().ok_or_else(|| err(&here(key), "must list strings"))?;
                        s.required.push(n.to_owned());
                    }
                }
                "additionalProperties" => {
                    s.additional = match val {
                        Value::Bool(true) => Additional::Any,
                        Value::Bool(false) => Additional::None,
                        other => Additional::Schema(self.compile(other, &here(key))?),
                    };
                }
                "minProperties" => s.min_properties = Some(count(val, at, key)?),
                "maxProperties" => s.max_properties = Some(count(val, at, key)?),
                "items" => s.items = Some(self.compile(val, &here(key))?),
                "minItems" => s.min_items = Some(count(val, at, key)?),
                "maxItems" => s.max_items = Some(count(val, at, key)?),
                "uniqueItems" => {
                    s.unique_items = val.as_bool().ok_or_else(|| err(&here(key), "must be a boolean"))?
                }
                "enum" => {
                    s.enumeration =
                        Some(val.as_array().ok_or_else(|| err(&here(key), "must be a list"))?.clone())
                }
                "const" => s.enumeration = Some(vec![val.clone()]),
                "minLength" => s.min_length = Some(count(val, at, key)?),
                "maxLength" => s.max_length = Some(count(val, at, key)?),
                "pattern" => {
                    let p = val.as_str().ok_or_else(|| err(&here(key), "must be a string"))?;
                    let re = regex_lite::Regex::new(p)
                        .map_err(|e| err(&here(key), format!("`{p}` is not a supported pattern: {e}")))?;
                    s.pattern = Some((p.to_owned(), re));
                }
                "minimum" => s.minimum = Some(num(val, at, key)?),
                "maximum" => s.maximum = Some(num(val, at, key)?),
                // OpenAPI 3.0 (draft 4): a boolean that makes `minimum` exclusive;
                // 3.1 (2020-12): the exclusive bound itself.
                "exclusiveMinimum" => match val {
                    Value::Bool(b) => excl_min_flag = *b,
                    n => s.exclusive_minimum = Some(num(n, at, key)?),
                },
                "exclusiveMaximum" => match val {
                    Value::Bool(b) => excl_max_flag = *b,
                    n => s.exclusive_maximum = Some(num(n, at, key)?),
                },
                "multipleOf" => {
                    let m = num(val, at, key)?;
                    if m <= 0.0 {
                        return Err(err(&here(key), "must be greater than 0"));
                    }
                    s.multiple_of = Some(m);
                }
                "allOf" => s.all_of.extend(self.list(val, at, key)?),
                "anyOf" => s.any_of = self.list(val, at, key)?,
                "oneOf" => s.one_of = self.list(val, at, key)?,
                "not" => s.not = Some(self.compile(val, &here(key))?),
                "$ref" => {
                    let id = self.reference(val, at)?;
                    s.all_of.push(id);
                }
                k if ANNOTATIONS.contains(&k) || k.starts_with("x-") => {}
                k => return Err(err(at, format!("unsupported keyword `{k}`"))),
            }
        }
        if nullable && s.types != 0 {
            s.types |= 64;
        }
        if excl_min_flag {
            s.exclusive_minimum = s.minimum.take();
        }
        if excl_max_flag {
            s.exclusive_maximum = s.maximum.take();
        }
        Ok(s)
    }
}

/// Decodes `%XX` escapes in a `$ref` fragment (`#/paths/~1pets%7Bid%7D`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) =
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
