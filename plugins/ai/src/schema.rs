//! A JSON Schema subset for prompt inputs and model outputs, compiled at load.
//!
//! Supported: `type` (one or a list), `properties`, `required`,
//! `additionalProperties` (boolean or schema), `items`, `enum`, `const`,
//! `minLength`/`maxLength`, `minimum`/`maximum`, `minItems`/`maxItems`. Annotations
//! (`title`, `description`, `default`, `examples`, `format`, `$schema`, `$id`) are
//! ignored; any other keyword is a config error, so nothing is silently unchecked.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

const ANNOTATIONS: &[&str] =
    &["title", "description", "default", "examples", "format", "$schema", "$id", "$comment"];
const TYPES: &[&str] = &["string", "number", "integer", "boolean", "object", "array", "null"];

/// A compiled schema.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    types: Vec<String>,
    properties: BTreeMap<String, Schema>,
    required: Vec<String>,
    /// `None`: any extra property; `Some(None)`: none allowed; `Some(Some(s))`: each matches `s`.
    additional: Option<Option<Box<Schema>>>,
    items: Option<Box<Schema>>,
    enumeration: Option<Vec<Value>>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Schema::compile(&v, "").map_err(serde::de::Error::custom)
    }
}

fn num(v: &Value, key: &str, at: &str) -> Result<f64, String> {
    v.as_f64().ok_or_else(|| format!("schema{at}.{key}: must be a number"))
}

fn count(v: &Value, key: &str, at: &str) -> Result<u64, String> {
    v.as_u64().ok_or_else(|| format!("schema{at}.{key}: must be a non-negative integer"))
}

impl Schema {
    /// Compiles `v`; `at` locates it in error messages.
    pub fn compile(v: &Value, at: &str) -> Result<Schema, String> {
        let obj: &Map<String, Value> = match v {
            Value::Object(o) => o,
            Value::Bool(true) => return Ok(Schema::default()),
            _ => return Err(format!("schema{at}: must be an object")),
        };
        let mut s = Schema::default();
        for (key, val) in obj {
            match key.as_str() {
                "type" => {
                    let list: Vec<&Value> = match val {
                        Value::Array(a) => a.iter().collect(),
                        one => vec![one],
                    };
                    for t in list {
                        match t.as_str() {
                            Some(t) if TYPES.contains(&t) => s.types.push(t.to_owned()),
                            _ => return Err(format!("schema{at}.type: unknown type {t}")),
                        }
                    }
                }
                "properties" => {
                    let props =
                        val.as_object().ok_or_else(|| format!("schema{at}.properties: must be an object"))?;
                    for (name, p) in props {
                        s.properties
                            .insert(name.clone(), Schema::compile(p, &format!("{at}.properties.{name}"))?);
                    }
                }
                "required" => {
                    let names =
                        val.as_array().ok_or_else(|| format!("schema{at}.required: must be a list"))?;
                    for n in names {
                        let n =
                            n.as_str().ok_or_else(|| format!("schema{at}.required: must list strings"))?;
                        s.required.push(n.to_owned());
                    }
                }
                "additionalProperties" => {
                    s.additional = match val {
                        Value::Bool(true) => None,
                        Value::Bool(false) => Some(None),
                        other => Some(Some(Box::new(Schema::compile(
                            other,
                            &format!("{at}.additionalProperties"),
                        )?))),
                    };
                }
                "items" => s.items = Some(Box::new(Schema::compile(val, &format!("{at}.items"))?)),
                "enum" => {
                    s.enumeration = Some(
                        val.as_array().ok_or_else(|| format!("schema{at}.enum: must be a list"))?.clone(),
                    )
                }
                "const" => s.enumeration = Some(vec![val.clone()]),
                "minLength" => s.min_length = Some(count(val, key, at)?),
                "maxLength" => s.max_length = Some(count(val, key, at)?),
                "minimum" => s.minimum = Some(num(val, key, at)?),
                "maximum" => s.maximum = Some(num(val, key, at)?),
                "minItems" => s.min_items = Some(count(val, key, at)?),
                "maxItems" => s.max_items = Some(count(val, key, at)?),
                k if ANNOTATIONS.contains(&k) => {}
                k => return Err(format!("schema{at}: unsupported keyword `{k}`")),
            }
        }
        Ok(s)
    }

    /// Checks `v`; the error names the first offending field (`items[2].name`) and why.
    pub fn validate(&self, v: &Value) -> Result<(), String> {
        self.check(v, "")
    }

    fn check(&self, v: &Value, at: &str) -> Result<(), String> {
        let here = || if at.is_empty() { "the body".to_owned() } else { format!("field `{at}`") };
        if !self.types.is_empty() && !self.types.iter().any(|t| type_matches(t, v)) {
            return Err(format!("{} must be of type {}", here(), self.types.join(" or ")));
        }
        if let Some(options) = &self.enumeration
            && !options.contains(v)
        {
            let list: Vec<String> = options.iter().map(Value::to_string).collect();
            return Err(format!("{} must be one of {}", here(), list.join(", ")));
        }
        match v {
            Value::String(s) => {
                let n = s.chars().count() as u64;
                if self.min_length.is_some_and(|m| n < m) {
                    return Err(format!(
                        "{} must have at least {} characters",
                        here(),
                        self.min_length.unwrap_or(0)
                    ));
                }
                if self.max_length.is_some_and(|m| n > m) {
                    return Err(format!(
                        "{} must have at most {} characters",
                        here(),
                        self.max_length.unwrap_or(0)
                    ));
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(0.0);
                if let Some(m) = self.minimum.filter(|m| x < *m) {
                    return Err(format!("{} must be at least {m}", here()));
                }
                if let Some(m) = self.maximum.filter(|m| x > *m) {
                    return Err(format!("{} must be at most {m}", here()));
                }
            }
            Value::Array(items) => {
                let n = items.len() as u64;
                if let Some(m) = self.min_items.filter(|m| n < *m) {
                    return Err(format!("{} must have at least {m} items", here()));
                }
                if let Some(m) = self.max_items.filter(|m| n > *m) {
                    return Err(format!("{} must have at most {m} items", here()));
                }
                if let Some(item) = &self.items {
                    for (i, x) in items.iter().enumerate() {
                        item.check(x, &format!("{at}[{i}]"))?;
                    }
                }
            }
            Value::Object(obj) => {
                let join = |k: &str| if at.is_empty() { k.to_owned() } else { format!("{at}.{k}") };
                for r in &self.required {
                    if obj.get(r).is_none_or(Value::is_null) {
                        return Err(format!("missing required field `{}`", join(r)));
                    }
                }
                for (k, x) in obj {
                    match (self.properties.get(k), &self.additional) {
                        (Some(p), _) => p.check(x, &join(k))?,
                        (None, Some(None)) => return Err(format!("unknown field `{}`", join(k))),
                        (None, Some(Some(extra))) => extra.check(x, &join(k))?,
                        (None, None) => {}
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema(v: Value) -> Schema {
        Schema::compile(&v, "").unwrap()
    }

    #[test]
    fn errors_name_the_field() {
        let s = schema(json!({
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": {"type": "string", "minLength": 1},
                "tags": {"type": "array", "items": {"type": "object", "required": ["name"],
                         "properties": {"name": {"type": "string"}}}},
                "lang": {"enum": ["en", "fr"]},
                "n": {"type": "integer", "maximum": 5}
            },
            "additionalProperties": false
        }));
        assert!(s.validate(&json!({"text": "a", "tags": [{"name": "x"}], "lang": "fr", "n": 5})).is_ok());
        assert_eq!(s.validate(&json!({})).unwrap_err(), "missing required field `text`");
        assert_eq!(s.validate(&json!({"text": 3})).unwrap_err(), "field `text` must be of type string");
        assert_eq!(
            s.validate(&json!({"text": ""})).unwrap_err(),
            "field `text` must have at least 1 characters"
        );
        assert_eq!(
            s.validate(&json!({"text": "a", "tags": [{"name": "x"}, {}]})).unwrap_err(),
            "missing required field `tags[1].name`"
        );
        assert_eq!(
            s.validate(&json!({"text": "a", "lang": "de"})).unwrap_err(),
            r#"field `lang` must be one of "en", "fr""#
        );
        assert_eq!(s.validate(&json!({"text": "a", "n": 6})).unwrap_err(), "field `n` must be at most 5");
        assert_eq!(s.validate(&json!({"text": "a", "x": 1})).unwrap_err(), "unknown field `x`");
        assert_eq!(s.validate(&json!([1])).unwrap_err(), "the body must be of type object");
    }

    #[test]
    fn unsupported_keywords_are_config_errors() {
        let e = Schema::compile(&json!({"properties": {"a": {"pattern": "x+"}}}), "").unwrap_err();
        assert_eq!(e, "schema.properties.a: unsupported keyword `pattern`");
        assert!(Schema::compile(&json!({"type": "strin"}), "").is_err());
    }
}
