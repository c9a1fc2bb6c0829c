//! The built-in plugins (`plugins/*` in the source tree: `auth`, `cors`,
//! `rate-limit`, `transform`), compiled to components by `host/build.rs` and embedded
//! in the binary. They load exactly like a component dropped into the plugins folder;
//! a file of the same name in that folder takes precedence.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The embedded component of the built-in plugin `name`.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, ..)| *n == name).map(|(_, bytes, _)| *bytes)
}

/// The JSON Schema of the built-in plugin `name`'s config (`sluice schema --plugin`).
pub fn schema(name: &str) -> Option<&'static str> {
    BUILTINS.iter().find(|(n, ..)| *n == name).and_then(|(.., schema)| *schema)
}

/// Every built-in plugin's name.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(n, ..)| *n)
}
