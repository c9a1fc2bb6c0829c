//! The JSON Schema of the config, generated from the serde types.
//!
//! The doc comments of `model.rs` become the schema's descriptions, so editors show
//! the config reference on hover. `deny_unknown_fields` becomes
//! `additionalProperties: false`, so typos are flagged while typing.

/// The config's JSON Schema (draft 2020-12), for editors and CI linting.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(super::Config)).expect("schema serializes")
}

#[cfg(test)]
mod tests {
    //! A full validator crate costs more compile time than it is worth here; instead a
    //! small checker below covers the keywords the generated schema uses (regular
    //! expressions and `format` are not checked), which is enough to catch drift between the schema and
    //! the configs we ship.

    use serde_json::{Map, Value};

    use super::json_schema;

    /// Checks `value` against `schema`, returning the JSON pointer of the first
    /// mismatch.
    fn check(root: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let fail = |what: &str| Err(format!("{at}: {what}"));
        let Some(s) = schema.as_object() else { return Ok(()) };
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/$defs/").expect("local refs only");
            check(root, &root["$defs"][name], value, at)?;
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !types.iter().any(|t| has_type(value, t)) {
                return fail(&format!("expected {types:?}, found {value}"));
            }
        }
        if let Some(options) = s.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            return fail(&format!("{value} is not one of {options:?}"));
        }
        if let Some(c) = s.get("const")
            && c != value
        {
            return fail(&format!("expected {c}"));
        }
        if let Some(min) = s.get("minimum").and_then(Value::as_f64)
            && value.as_f64().is_some_and(|v| v < min)
        {
            return fail("below minimum");
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64)
            && value.as_f64().is_some_and(|v| v > max)
        {
            return fail("above maximum");
        }
        if let Some(any) = s.get("anyOf").and_then(Value::as_array)
            && !any.iter().any(|sub| check(root, sub, value, at).is_ok())
        {
            return fail("matches none of anyOf");
        }
        if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
            let n = one.iter().filter(|sub| check(root, sub, value, at).is_ok()).count();
            if n != 1 {
                return fail(&format!("matches {n} of oneOf"));
            }
        }
        if let Some(obj) = value.as_object() {
            check_object(root, s, obj, at)?;
        }
        if let (Some(items), Some(arr)) = (s.get("items"), value.as_array()) {
            for (i, v) in arr.iter().enumerate() {
                check(root, items, v, &format!("{at}/{i}"))?;
            }
        }
        Ok(())
    }

    fn check_object(
        root: &Value,
        s: &Map<String, Value>,
        obj: &Map<String, Value>,
        at: &str,
    ) -> Result<(), String> {
        let props = s.get("properties").and_then(Value::as_object);
        for req in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            let req = req.as_str().unwrap_or_default();
            if !obj.contains_key(req) {
                return Err(format!("{at}: missing required `{req}`"));
            }
        }
        for (k, v) in obj {
            let at = format!("{at}/{k}");
            // Patterns are not checked: a key that is no named property takes the
            // first `patternProperties` schema, if there is one.
            let named = props.and_then(|p| p.get(k));
            let patterned =
                s.get("patternProperties").and_then(Value::as_object).and_then(|p| p.values().next());
            match (named.or(patterned), s.get("additionalProperties")) {
                (Some(sub), _) => check(root, sub, v, &at)?,
                (None, Some(Value::Bool(false))) => return Err(format!("{at}: not allowed")),
                (None, Some(sub)) => check(root, sub, v, &at)?,
                (None, None) => {}
            }
        }
        Ok(())
    }

    fn has_type(v: &Value, t: &str) -> bool {
        match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            _ => true,
        }
    }

    fn yaml(text: &str) -> Value {
        serde_saphyr::from_str(text).expect("valid yaml")
    }

    #[test]
    fn schema_is_draft_2020_12_with_descriptions() {
        let s = json_schema();
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(s["title"], "Config");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], serde_json::json!(["version", "listeners", "routes"]));
        assert!(s["properties"]["version"]["description"].as_str().unwrap().contains("Must be `1`"));
        // Every struct of the model is documented, and so is each of its fields.
        for (name, def) in s["$defs"].as_object().unwrap() {
            assert!(
                def.get("description").is_some() || def.get("pattern").is_some(),
                "{name} has no description"
            );
            for (field, prop) in def["properties"].as_object().into_iter().flatten() {
                assert!(prop.get("description").is_some(), "{name}.{field} has no description");
            }
        }
    }

    #[test]
    fn the_quickstart_validates_against_the_schema() {
        let schema = json_schema();
        let config = yaml(crate::config::QUICKSTART_YAML);
        check(&schema, &schema, &config, "").unwrap();
    }

    #[test]
    fn the_checker_rejects_what_the_schema_forbids() {
        let schema = json_schema();
        let base = "version: 1\nlisteners: [{ name: a, address: '127.0.0.1:0' }]\n";
        let ok =
            yaml(&format!("{base}routes: [{{ name: r, match: {{ path: / }}, target: {{ echo: {{}} }} }}]"));
        check(&schema, &schema, &ok, "").unwrap();
        for (bad, at) in [
            ("routes: [{ name: r, match: { pth: / }, target: { echo: {} } }]", "/routes/0/match/pth"),
            ("routes: [{ name: r, match: {}, target: { echo: {}, static: {} } }]", "/routes/0/target"),
            ("routes: [{ name: r, match: {}, target: { echo: { status: x } } }]", "/routes/0/target"),
            ("routes: {}", "/routes"),
        ] {
            let err = check(&schema, &schema, &yaml(&format!("{base}{bad}")), "").unwrap_err();
            assert!(err.starts_with(at), "{bad}: {err}");
        }
    }
}
