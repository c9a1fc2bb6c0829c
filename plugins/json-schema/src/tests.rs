use serde_json::{Value, json};

use crate::{Compiler, Kind, Schema};

fn schema(v: Value) -> Schema {
    Schema::compile(&v).unwrap()
}

/// `(pointer, message)` of every violation.
fn problems(s: &Schema, v: Value) -> Vec<(String, String)> {
    s.violations(&v, 50).into_iter().map(|x| (x.pointer(), x.message)).collect()
}

fn p(pointer: &str, message: &str) -> (String, String) {
    (pointer.to_owned(), message.to_owned())
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
    assert_eq!(s.validate(&json!({"text": ""})).unwrap_err(), "field `text` must have at least 1 characters");
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
fn every_problem_is_listed_with_a_json_pointer() {
    let s = schema(json!({
        "type": "object",
        "required": ["name", "age"],
        "properties": {
            "name": {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"},
            "age": {"type": "integer", "minimum": 0, "exclusiveMaximum": 150},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
            "a/b": {"type": "boolean"}
        }
    }));
    let got = problems(&s, json!({"name": "Rexxx", "tags": ["a", 1, "a"], "a/b": 1}));
    assert_eq!(
        got,
        [
            p("/age", "is required"),
            p("/a~1b", "must be of type boolean"),
            p("/name", "must have at most 3 characters"),
            p("/name", "must match the pattern `^[a-z]+$`"),
            p("/tags", "must not repeat items"),
            p("/tags/1", "must be of type string"),
        ]
    );
    assert_eq!(problems(&s, json!({"name": "rex", "age": 150})), [p("/age", "must be less than 150")]);
    // The limit caps the list.
    assert_eq!(s.violations(&json!({}), 1).len(), 1);
    assert_eq!(s.violations(&json!({}), 1)[0].kind, Kind::Missing);
}

#[test]
fn refs_resolve_in_the_document_even_recursively() {
    let doc = json!({
        "components": {"schemas": {
            "Pet": {"type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string"}, "tag": {"$ref": "#/components/schemas/Tag"}}},
            "Tag": {"type": "string", "enum": ["dog", "cat"]},
            "Tree": {"type": "object", "properties": {
                "children": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}},
                "v": {"type": "integer"}}}
        }}
    });
    let mut c = Compiler::new(&doc);
    let pet = c.compile(&json!({"$ref": "#/components/schemas/Pet"}), "/x").unwrap();
    let tree = c.compile_at("/components/schemas/Tree").unwrap();
    let schemas = c.finish().unwrap();
    let pointers = |id, v| -> Vec<String> { schemas.check(id, &v, 10).iter().map(|x| x.pointer()).collect() };
    assert!(pointers(pet, json!({"name": "rex", "tag": "dog"})).is_empty());
    assert_eq!(pointers(pet, json!({"tag": "cow"})), ["/name", "/tag"]);
    assert_eq!(
        pointers(tree, json!({"children": [{"children": [{"v": "x"}]}]})),
        ["/children/0/children/0/v"]
    );
    let e = Compiler::new(&doc).compile(&json!({"$ref": "other.yaml#/Pet"}), "/paths/~1pets").unwrap_err();
    assert!(e.starts_with("/paths/~1pets/$ref: `other.yaml#/Pet`: only references inside"), "{e}");
    let e = Compiler::new(&doc).compile(&json!({"$ref": "#/components/schemas/Nope"}), "/a").unwrap_err();
    assert_eq!(e, "/a/$ref: `#/components/schemas/Nope` points at nothing");
}

#[test]
fn combinators_and_openapi_3_0_keywords() {
    let s = schema(json!({
        "oneOf": [
            {"type": "object", "required": ["cat"], "properties": {"cat": {"type": "string"}}},
            {"type": "object", "required": ["dog"], "properties": {"dog": {"type": "string"}}}
        ]
    }));
    assert!(problems(&s, json!({"cat": "tom"})).is_empty());
    assert_eq!(
        problems(&s, json!({"cat": "a", "dog": "b"}))[0].1,
        "must match exactly one schema of oneOf, matches 2"
    );
    let none = problems(&s, json!({"cat": 1}));
    assert_eq!(none[0], p("", "must match one of the schemas of oneOf"));
    assert_eq!(none[1], p("/cat", "must be of type string"), "the closest alternative's problem");
    let s = schema(json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}));
    assert!(problems(&s, json!(3)).is_empty());
    assert_eq!(problems(&s, json!(true))[0].1, "must match one of the schemas of anyOf");
    let s = schema(json!({"allOf": [{"required": ["a"]}, {"required": ["b"]}], "not": {"required": ["c"]}}));
    assert_eq!(problems(&s, json!({"c": 1})).len(), 3);
    // 3.0: `nullable`, boolean `exclusiveMinimum`.
    let s = schema(
        json!({"type": "number", "nullable": true, "minimum": 0, "exclusiveMinimum": true, "multipleOf": 0.5}),
    );
    assert!(problems(&s, json!(null)).is_empty());
    assert_eq!(problems(&s, json!(0)), [p("", "must be greater than 0")]);
    assert_eq!(problems(&s, json!(0.7)), [p("", "must be a multiple of 0.5")]);
    assert!(problems(&s, json!(1.5)).is_empty());
}

#[test]
fn texts_are_read_as_the_schema_s_type() {
    let doc = json!({
        "i": {"type": "integer"}, "b": {"type": "boolean"}, "s": {"type": "string"},
        "a": {"type": "array", "items": {"type": "integer"}}, "r": {"$ref": "#/i"}
    });
    let mut c = Compiler::new(&doc);
    let ids: Vec<_> = ["/i", "/b", "/s", "/a", "/r"].iter().map(|at| c.compile_at(at).unwrap()).collect();
    let s = c.finish().unwrap();
    assert_eq!(s.coerce(ids[0], &["12"], ','), json!(12));
    assert_eq!(s.coerce(ids[0], &["abc"], ','), json!("abc"), "left as text, so the type check names it");
    assert_eq!(s.coerce(ids[1], &["true"], ','), json!(true));
    assert_eq!(s.coerce(ids[2], &["12"], ','), json!("12"));
    assert_eq!(s.coerce(ids[3], &["1,2"], ','), json!([1, 2]));
    assert_eq!(s.coerce(ids[3], &["1", "x"], ','), json!([1, "x"]));
    assert_eq!(s.coerce(ids[4], &["7"], ','), json!(7));
}

#[test]
fn unsupported_keywords_are_compile_errors_naming_the_pointer() {
    let e = Schema::compile(&json!({"properties": {"a": {"patternProperties": {}}}})).unwrap_err();
    assert_eq!(e, "/properties/a: unsupported keyword `patternProperties`");
    assert!(Schema::compile(&json!({"type": "strin"})).is_err());
    assert!(Schema::compile(&json!({"pattern": "(unclosed"})).unwrap_err().starts_with("/pattern: "));
    // Annotations and extensions are fine.
    assert!(
        Schema::compile(&json!({"format": "uuid", "example": 1, "x-internal": true, "readOnly": true}))
            .is_ok()
    );
}

#[test]
fn cycles_that_never_reach_a_value_are_compile_errors() {
    let doc = json!({"A": {"allOf": [{"$ref": "#/B"}]}, "B": {"oneOf": [{"$ref": "#/A"}, {"type": "null"}]}});
    let mut c = Compiler::new(&doc);
    c.compile_at("/A").unwrap();
    let e = c.finish().unwrap_err();
    assert!(e.ends_with(": a `$ref` cycle that never descends into a property or an item"), "{e}");
    assert!(e.starts_with("/A") || e.starts_with("/B"), "{e}");
}

#[test]
fn a_value_too_complex_for_the_budget_is_refused() {
    // Each level checks its alternatives again and again: exponential in the depth.
    let doc = json!({"T": {"oneOf": [
        {"type": "array", "items": {"$ref": "#/T"}, "maxItems": 3},
        {"type": "array", "items": {"$ref": "#/T"}, "minItems": 1},
        {"type": "integer"}
    ]}});
    let mut c = Compiler::new(&doc);
    let t = c.compile_at("/T").unwrap();
    let s = c.finish().unwrap();
    let mut deep = json!("x");
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let found = s.check(t, &deep, 10);
    assert_eq!(found.last().unwrap().message, "is too complex to check", "{found:?}");
    assert!(
        s.check(t, &json!([[1], 2]), 10).iter().any(|v| v.message.contains("exactly one")),
        "small values are checked"
    );
}
