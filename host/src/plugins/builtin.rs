//! The built-in plugins (`plugins/*` in the source tree: `ai`, `auth`, `cors`, `mcp`,
//! `openapi-validate`, `rate-limit`, `transform`; `plugins/json-schema` is a library
//! they share), compiled to components by `host/build.rs` and embedded
//! in the binary. They load exactly like a component dropped into the plugins folder;
//! a file of the same name in that folder takes precedence.

/// One built-in plugin.
#[derive(Debug)]
pub struct Builtin {
    /// The name routes list.
    pub name: &'static str,
    /// The component.
    pub wasm: &'static [u8],
    /// The JSON Schema of its config.
    pub schema: Option<&'static str>,
    /// Capabilities it uses only when its config asks: a route need not grant them
    /// (an ungranted call is refused when made, like for any plugin).
    pub optional: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The built-in plugin `name`.
pub fn get(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The JSON Schema of the built-in plugin `name`'s config (`sluice schema --plugin`).
pub fn schema(name: &str) -> Option<&'static str> {
    get(name).and_then(|b| b.schema)
}

/// Every built-in plugin's name.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name)
}
