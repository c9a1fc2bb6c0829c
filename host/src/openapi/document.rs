//! The combined OpenAPI document of a config's routes (the admin API's
//! `GET /-/openapi.json`): every route with an exact `path` (or a `path_prefix`,
//! marked `x-sluice-path-prefix`) and its methods; for routes whose chain has
//! `openapi-validate`, the operations of its document in their place (under the
//! plugin's `prefix`, only the pinned `path` when it has one, only the route's
//! methods), with the documents' `components` merged (the first definition of a
//! name wins). Every operation names its route in `x-sluice-route`.

use serde_json::{Map, Value, json};

use super::METHODS;
use super::import::VALIDATE_PLUGIN;
use crate::config::{Config, RouteConfig};

/// Methods listed for a route that takes any method.
const ANY_METHOD: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The combined document of `config`, titled with the config's `generation`.
pub fn combined(config: &Config, generation: u64) -> Value {
    let mut paths = Map::new();
    let mut components = Map::new();
    for route in &config.routes {
        let methods: Vec<String> = route.matcher.methods.iter().map(|m| m.to_ascii_lowercase()).collect();
        let specs: Vec<&Map<String, Value>> = route
            .plugins
            .iter()
            .chain(&config.plugins.global)
            .filter(|p| p.name.as_str() == VALIDATE_PLUGIN)
            .filter_map(|p| p.config.as_ref())
            .filter_map(Value::as_object)
            .collect();
        let mut documented = false;
        for plugin in specs {
            let Some(spec) = plugin.get("spec").and_then(Value::as_object) else { continue };
            documented = true;
            merge_components(spec.get("components"), &mut components);
            let prefix = plugin.get("prefix").and_then(Value::as_str).unwrap_or("");
            let pinned = plugin.get("path").and_then(Value::as_str);
            let Some(spec_paths) = spec.get("paths").and_then(Value::as_object) else { continue };
            for (template, item) in spec_paths {
                if pinned.is_some_and(|p| p != template) {
                    continue;
                }
                let Some(item) = item.as_object() else { continue };
                let entry = path_item(&mut paths, &format!("{prefix}{template}"));
                for (key, v) in item {
                    let is_method = METHODS.contains(&key.as_str());
                    if is_method && !methods.is_empty() && !methods.contains(key) {
                        continue;
                    }
                    let mut v = v.clone();
                    if is_method && let Some(op) = v.as_object_mut() {
                        op.insert("x-sluice-route".into(), json!(route.name.as_str()));
                    }
                    entry.entry(key.clone()).or_insert(v);
                }
            }
        }
        if !documented {
            undocumented_route(route, &methods, &mut paths);
        }
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice gateway routes",
            "version": format!("generation {generation}"),
            "description": "The gateway's routes; operations come from the OpenAPI documents of routes that validate with openapi-validate."
        },
        "paths": paths,
    });
    if !components.is_empty() {
        doc["components"] = Value::Object(components);
    }
    doc
}

fn path_item<'m>(paths: &'m mut Map<String, Value>, key: &str) -> &'m mut Map<String, Value> {
    let v = paths.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("made an object above")
}

fn merge_components(from: Option<&Value>, into: &mut Map<String, Value>) {
    let Some(from) = from.and_then(Value::as_object) else { return };
    for (section, defs) in from {
        let Some(defs) = defs.as_object() else { continue };
        let target = into.entry(section.clone()).or_insert_with(|| json!({}));
        if let Some(target) = target.as_object_mut() {
            for (name, def) in defs {
                target.entry(name.clone()).or_insert_with(|| def.clone());
            }
        }
    }
}

/// A route without a document: its path and methods, answered by its target.
fn undocumented_route(route: &RouteConfig, methods: &[String], paths: &mut Map<String, Value>) {
    let (key, prefix) = match (&route.matcher.path, &route.matcher.path_prefix) {
        (Some(p), _) => (p.clone(), false),
        (None, Some(p)) => (p.clone(), true),
        (None, None) => return,
    };
    let any = methods.is_empty();
    let list: Vec<String> =
        if any { ANY_METHOD.iter().map(|m| (*m).to_owned()).collect() } else { methods.to_vec() };
    let entry = path_item(paths, &key);
    if prefix {
        entry.insert("x-sluice-path-prefix".into(), json!(true));
    }
    if any {
        entry.insert("x-sluice-any-method".into(), json!(true));
    }
    let params: Vec<Value> = key
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    for m in &list {
        if !METHODS.contains(&m.as_str()) {
            continue;
        }
        let id = if list.len() == 1 {
            route.name.as_str().to_owned()
        } else {
            format!("{}_{m}", route.name.as_str())
        };
        let mut op = json!({
            "operationId": id,
            "summary": format!("route {}", route.name.as_str()),
            "responses": {"default": {"description": "the route target's response"}},
            "x-sluice-route": route.name.as_str(),
        });
        if !params.is_empty() {
            op["parameters"] = json!(params);
        }
        entry.entry(m.clone()).or_insert(op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_their_documents_merge() {
        let yaml = r#"version: 1
listeners: [{ name: p, address: 127.0.0.1:0 }]
routes:
  - name: pets
    match: { path: /v1/pets, methods: [GET] }
    target: { echo: {} }
    plugins:
      - name: openapi-validate
        config:
          path: /pets
          prefix: /v1
          spec:
            openapi: 3.0.3
            paths:
              /pets:
                get: { operationId: listPets, responses: { "200": { description: ok } } }
                post: { operationId: createPet, responses: { "201": { description: made } } }
              /owners: { get: { operationId: listOwners } }
            components: { schemas: { Pet: { type: object } } }
  - name: users
    match: { path: "/users/{id}" }
    target: { echo: {} }
  - name: static
    match: { path_prefix: /static, methods: [GET, HEAD] }
    target: { echo: {} }
"#;
        let loaded = crate::config::parse_str("t.yaml", yaml, ".".into()).unwrap();
        let doc = combined(&loaded.config, 3);
        assert_eq!(doc["info"]["version"], "generation 3");
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(doc["paths"]["/v1/pets"]["get"]["operationId"], "listPets");
        assert_eq!(doc["paths"]["/v1/pets"]["get"]["x-sluice-route"], "pets");
        assert!(doc["paths"]["/v1/pets"].get("post").is_none(), "the route only takes GET");
        assert!(!paths.contains_key("/v1/owners"), "only the pinned path");
        assert_eq!(doc["components"]["schemas"]["Pet"]["type"], "object");
        let users = &doc["paths"]["/users/{id}"];
        assert_eq!(users["x-sluice-any-method"], true);
        assert_eq!(users["delete"]["operationId"], "users_delete");
        assert_eq!(users["get"]["parameters"][0]["name"], "id");
        assert_eq!(doc["paths"]["/static"]["x-sluice-path-prefix"], true);
        assert_eq!(doc["paths"]["/static"]["head"]["x-sluice-route"], "static");
    }
}
