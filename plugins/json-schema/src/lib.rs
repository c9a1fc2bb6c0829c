//! A JSON Schema subset, compiled once at load and checked per request, shared by the
//! built-in plugins (`ai`'s prompt input and output schemas, `openapi-validate`'s
//! request and response schemas).
//!
//! The recipe: make a [`Compiler`] over the document the schemas live in (so that
//! `$ref: '#/components/schemas/Pet'` resolves), [`Compiler::compile`] each schema to a
//! [`SchemaId`], then [`Compiler::finish`] into [`Schemas`], which checks values and
//! lists every [`Violation`] with the path of the offending field. A check's work is
//! bounded by the value's size ([`STEPS_PER_NODE`]): a value too complex to check
//! within it is refused. For one standalone
//! schema, [`Schema`] does all of it (and deserializes from a config).
//!
//! Supported keywords: `type` (one or a list), OpenAPI 3.0's `nullable`, `properties`,
//! `required`, `additionalProperties` (boolean or schema), `minProperties`/
//! `maxProperties`, `items`, `minItems`/`maxItems`, `uniqueItems`, `enum`, `const`,
//! `minLength`/`maxLength`, `pattern` (unanchored, Rust `regex-lite` syntax, which
//! covers the usual ECMA patterns), `minimum`/`maximum`, `exclusiveMinimum`/
//! `exclusiveMaximum` (3.0 booleans or 3.1 numbers), `multipleOf`, `allOf`, `anyOf`,
//! `oneOf`, `not`, and local `$ref` (`#/...`, recursive schemas included).
//! Annotations (`title`, `description`, `default`, `examples`, `format`, `readOnly`,
//! `discriminator`, …) are ignored. Any other keyword is a compile error naming the
//! schema's JSON pointer, so nothing is silently unchecked.

mod check;
mod compile;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

pub use check::{MIN_STEPS, STEPS_PER_NODE};
pub use compile::Compiler;

/// A compiled schema inside [`Schemas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SchemaId(usize);

/// One step of the path to a value: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An object member.
    Key(String),
    /// An array item.
    Index(usize),
}

/// What kind of problem a [`Violation`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A required member is missing (the path names the member).
    Missing,
    /// A member no schema allows (`additionalProperties: false`).
    Unknown,
    /// The value is there but wrong.
    Invalid,
}

/// One problem of a checked value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where in the checked value (empty: the value itself).
    pub path: Vec<Step>,
    /// The kind of problem.
    pub kind: Kind,
    /// What is wrong, without the subject: `is required`, `must be of type string`.
    pub message: String,
}

impl Violation {
    /// The path as an RFC 6901 JSON pointer: `/tags/1/name` (`""` for the value itself).
    pub fn pointer(&self) -> String {
        let mut out = String::new();
        for step in &self.path {
            out.push('/');
            match step {
                Step::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
                Step::Index(i) => out.push_str(&i.to_string()),
            }
        }
        out
    }

    /// The path in the dotted style: `tags[1].name` (`""` for the value itself).
    pub fn dotted(&self) -> String {
        let mut out = String::new();
        for step in &self.path {
            match step {
                Step::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

impl fmt::Display for Violation {
    /// A sentence naming the field in the dotted style: ``missing required field
    /// `tags[1].name` ``, ``field `n` must be at most 5``, `the body must be of type
    /// object`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.dotted();
        match self.kind {
            Kind::Missing => write!(f, "missing required field `{at}`"),
            Kind::Unknown => write!(f, "unknown field `{at}`"),
            Kind::Invalid if at.is_empty() => write!(f, "the body {}", self.message),
            Kind::Invalid => write!(f, "field `{at}` {}", self.message),
        }
    }
}

/// Compiled schemas sharing one document (see [`Compiler`]).
#[derive(Debug, Clone, Default)]
pub struct Schemas {
    nodes: Vec<compile::Node>,
}

impl Schemas {
    /// Every problem of `value` against schema `id`, at most `limit`, in document order.
    pub fn check(&self, id: SchemaId, value: &Value, limit: usize) -> Vec<Violation> {
        let budget = std::cell::Cell::new(
            check::nodes(value).saturating_mul(check::STEPS_PER_NODE) + check::MIN_STEPS,
        );
        let mut out = check::Out { list: Vec::new(), limit, budget: &budget };
        self.check_into(id, value, &mut Vec::new(), &mut out);
        if budget.get() == 0 {
            // Whatever was found before the budget ran out, the value is not accepted.
            out.list.push(Violation {
                path: Vec::new(),
                kind: Kind::Invalid,
                message: "is too complex to check".to_owned(),
            });
        }
        out.list
    }

    /// The value a text (a query parameter, a header) stands for under schema `id`:
    /// a number when the schema takes numbers and the text is one, a boolean for
    /// `true`/`false` when it takes booleans, an array (of the items' values) when it
    /// takes arrays; otherwise the text as a string. Arrays come from several `values`
    /// or, when there is one, from splitting it on `separator`.
    pub fn coerce(&self, id: SchemaId, values: &[&str], separator: char) -> Value {
        check::coerce(self, id, values, separator)
    }
}

/// One standalone compiled schema (its `$ref`s resolve within itself).
#[derive(Debug, Clone, Default)]
pub struct Schema {
    schemas: Schemas,
    root: Option<SchemaId>,
}

impl Schema {
    /// Compiles `v`; an error is `pointer: message`, the pointer relative to `v`.
    pub fn compile(v: &Value) -> Result<Schema, String> {
        let mut c = Compiler::new(v);
        let root = c.compile_at("")?;
        Ok(Schema { schemas: c.finish()?, root: Some(root) })
    }

    /// Checks `v`; the error is a sentence naming the first offending field
    /// (``missing required field `items[2].name` ``).
    pub fn validate(&self, v: &Value) -> Result<(), String> {
        match self.violations(v, 1).first() {
            Some(first) => Err(first.to_string()),
            None => Ok(()),
        }
    }

    /// Every problem of `v`, at most `limit`.
    pub fn violations(&self, v: &Value, limit: usize) -> Vec<Violation> {
        match self.root {
            Some(id) => self.schemas.check(id, v, limit),
            None => Vec::new(),
        }
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Schema::compile(&v).map_err(|e| serde::de::Error::custom(format!("schema{e}")))
    }
}
