//! File references in plugin configs: anywhere inside a plugin entry's `config:`, a
//! mapping with the single key `$file` is replaced, when the config is loaded, by the
//! content of that file (relative paths against the config's folder):
//!
//! ```yaml
//! - name: openapi-validate
//!   config:
//!     spec: { $file: petstore.yaml }
//! ```
//!
//! `.yaml`/`.yml` files are parsed as YAML and `.json` files as JSON (the plugin gets
//! the parsed value); any other file is passed as a string. A file that cannot be
//! read or parsed is a problem located at the reference. The files read are
//! remembered ([`super::LoadedConfig::files`]) so the reload watcher follows them:
//! editing a referenced file reloads like editing the config. References inside a
//! referenced file are not followed.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Config, Problem};

/// The key that marks a file reference.
pub const FILE_KEY: &str = "$file";

/// Replaces every file reference in the plugin configs of `config`; returns the
/// files read (absolute when `base` is) or every problem found.
pub fn resolve(config: &mut Config, base: &Path) -> Result<Vec<PathBuf>, Vec<Problem>> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let mut entries: Vec<(String, &mut Option<Value>)> = Vec::new();
    for (i, p) in config.plugins.global.iter_mut().enumerate() {
        entries.push((format!("plugins.global[{i}].config"), &mut p.config));
    }
    for (r, route) in config.routes.iter_mut().enumerate() {
        for (i, p) in route.plugins.iter_mut().enumerate() {
            entries.push((format!("routes[{r}].plugins[{i}].config"), &mut p.config));
        }
    }
    for (path, value) in entries {
        if let Some(v) = value {
            walk(v, &path, base, &mut files, &mut problems);
        }
    }
    if problems.is_empty() { Ok(files) } else { Err(problems) }
}

fn walk(v: &mut Value, at: &str, base: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<Problem>) {
    match v {
        Value::Object(map) if map.len() == 1 && map.contains_key(FILE_KEY) => {
            let Some(name) = map.get(FILE_KEY).and_then(Value::as_str).map(str::to_owned) else {
                problems.push(Problem::new(format!("{at}.{FILE_KEY}"), "`$file` must be a file path"));
                return;
            };
            let path = if Path::new(&name).is_absolute() { PathBuf::from(&name) } else { base.join(&name) };
            match read(&path) {
                Ok(content) => *v = content,
                Err(e) => problems.push(Problem::new(format!("{at}.{FILE_KEY}"), format!("{name}: {e}"))),
            }
            if !files.contains(&path) {
                files.push(path);
            }
        }
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                walk(x, &format!("{at}.{k}"), base, files, problems);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter_mut().enumerate() {
                walk(x, &format!("{at}[{i}]"), base, files, problems);
            }
        }
        _ => {}
    }
}

/// A file's content: parsed YAML or JSON by extension, else its text.
pub fn read(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the file: {e}"))?;
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("json") => serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}")),
        Some("yaml" | "yml") => parse_yaml(&text),
        _ => Ok(Value::String(text)),
    }
}

/// Parses a YAML document into JSON values (mapping keys that YAML reads as numbers
/// or booleans, like a response status `200:`, become strings).
pub fn parse_yaml(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| format!("invalid YAML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_numeric_keys_become_strings() {
        let v = parse_yaml("responses:\n  200: { description: ok }\n  default: {}\n").unwrap();
        assert_eq!(v["responses"]["200"]["description"], "ok");
    }

    #[test]
    fn references_are_replaced_and_bad_ones_located() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x: 1\n").unwrap();
        std::fs::write(dir.path().join("b.json"), "[true]").unwrap();
        std::fs::write(dir.path().join("c.txt"), "hello").unwrap();
        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        let yaml = "version: 1\nlisteners: [{ name: p, address: 127.0.0.1:0 }]\nroutes:\n  - name: r\n    match: { path: / }\n    target: { echo: {} }\n    plugins:\n      - name: x\n        config: { a: { $file: a.yaml }, list: [{ $file: b.json }, { $file: c.txt }] }\n";
        let loaded = crate::config::parse_str("t.yaml", yaml, dir.path().to_owned()).unwrap();
        assert_eq!(loaded.files.len(), 3);
        let config = loaded.config.routes[0].plugins[0].config.clone().unwrap();
        assert_eq!(config, serde_json::json!({"a": {"x": 1}, "list": [[true], "hello"]}));
        let bad = yaml.replace("c.txt", "bad.json").replace("a.yaml", "missing.yaml");
        let err = crate::config::parse_str("t.yaml", &bad, dir.path().to_owned()).unwrap_err();
        assert_eq!(err.issues.len(), 2, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("routes[0].plugins[0].config.a.$file: missing.yaml: cannot read the file"),
            "{text}"
        );
        assert!(text.contains("config.list[1].$file: bad.json: invalid JSON"), "{text}");
        assert!(text.contains("t.yaml:9:"), "located on the plugin's config line: {text}");
    }
}
