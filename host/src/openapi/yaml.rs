//! A small YAML writer for the configs `sluice import openapi` prints: block
//! mappings and sequences in the order they were built, short lists of scalars and
//! `$file` references in flow style, strings quoted only when YAML would read them
//! as something else.

/// A YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    /// A string scalar.
    Str(String),
    /// An integer.
    Int(i64),
    /// A mapping, in order.
    Map(Vec<(String, Yaml)>),
    /// A sequence.
    List(Vec<Yaml>),
}

impl Yaml {
    /// A string node.
    pub fn str(s: impl Into<String>) -> Yaml {
        Yaml::Str(s.into())
    }

    /// A mapping node from pairs.
    pub fn map<const N: usize>(pairs: [(&str, Yaml); N]) -> Yaml {
        Yaml::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// Whether it is written inline (`{ a: b }`, `[GET, POST]`, a scalar).
    fn is_flow(&self) -> bool {
        match self {
            Yaml::Str(_) | Yaml::Int(_) => true,
            Yaml::List(items) => items.iter().all(|i| matches!(i, Yaml::Str(_) | Yaml::Int(_))),
            Yaml::Map(pairs) => pairs.is_empty() || (pairs.len() == 1 && matches!(pairs[0].1, Yaml::Str(_))),
        }
    }

    fn flow(&self, out: &mut String) {
        match self {
            Yaml::Str(s) => out.push_str(&scalar(s)),
            Yaml::Int(i) => out.push_str(&i.to_string()),
            Yaml::List(items) => {
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    x.flow(out);
                }
                out.push(']');
            }
            Yaml::Map(pairs) if pairs.is_empty() => out.push_str("{}"),
            Yaml::Map(pairs) => {
                out.push_str("{ ");
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&scalar(k));
                    out.push_str(": ");
                    v.flow(out);
                }
                out.push_str(" }");
            }
        }
    }

    /// Writes the node as a block at `indent` spaces (a mapping's entries, a
    /// sequence's items).
    fn block(&self, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match self {
            Yaml::Map(pairs) => {
                for (k, v) in pairs {
                    out.push_str(&pad);
                    out.push_str(&scalar(k));
                    out.push(':');
                    v.after_key(indent, out);
                }
            }
            Yaml::List(items) => {
                for item in items {
                    out.push_str(&pad);
                    out.push_str("- ");
                    match item {
                        Yaml::Map(pairs) if !item.is_flow() => {
                            // The first entry on the dash's line, the rest aligned under it.
                            let mut first = String::new();
                            Yaml::Map(pairs.clone()).block(indent + 2, &mut first);
                            out.push_str(first.trim_start());
                        }
                        other => {
                            other.flow(out);
                            out.push('\n');
                        }
                    }
                }
            }
            scalar_node => {
                out.push_str(&pad);
                scalar_node.flow(out);
                out.push('\n');
            }
        }
    }

    fn after_key(&self, indent: usize, out: &mut String) {
        if self.is_flow() {
            out.push(' ');
            self.flow(out);
            out.push('\n');
        } else {
            out.push('\n');
            self.block(indent + 2, out);
        }
    }

    /// The document's text.
    pub fn to_document(&self) -> String {
        let mut out = String::new();
        self.block(0, &mut out);
        out
    }
}

/// A string as a YAML scalar: plain when YAML reads it back as the same string,
/// otherwise double-quoted with JSON escapes (which YAML shares).
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "/_-.$:".contains(c))
        && !s.starts_with(['-', ':'])
        && !s.ends_with(':')
        && !s.contains(": ")
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~"
        )
        && s.parse::<f64>().is_err();
    if plain { s.to_owned() } else { serde_json::to_string(s).unwrap_or_default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_block_yaml_that_reads_back() {
        let doc = Yaml::map([
            ("version", Yaml::Int(1)),
            (
                "routes",
                Yaml::List(vec![Yaml::map([
                    ("name", Yaml::str("listPets")),
                    (
                        "match",
                        Yaml::map([
                            ("path", Yaml::str("/pets/{id}")),
                            ("methods", Yaml::List(vec![Yaml::str("GET")])),
                        ]),
                    ),
                    (
                        "config",
                        Yaml::map([
                            ("spec", Yaml::map([("$file", Yaml::str("a b.yaml"))])),
                            ("flag", Yaml::str("true")),
                        ]),
                    ),
                ])]),
            ),
        ]);
        let text = doc.to_document();
        assert_eq!(
            text,
            "version: 1\nroutes:\n  - name: listPets\n    match:\n      path: \"/pets/{id}\"\n      methods: [GET]\n    config:\n      spec: { $file: \"a b.yaml\" }\n      flag: \"true\"\n"
        );
        let back = crate::config::files::parse_yaml(&text).unwrap();
        assert_eq!(back["routes"][0]["config"]["spec"]["$file"], "a b.yaml");
        assert_eq!(back["routes"][0]["match"]["path"], "/pets/{id}");
        assert_eq!(back["routes"][0]["config"]["flag"], "true");
        assert_eq!(scalar("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(scalar("1.5"), "\"1.5\"");
    }
}
