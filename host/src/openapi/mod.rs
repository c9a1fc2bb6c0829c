//! OpenAPI on the gateway's side: [`import`] turns an OpenAPI 3.0/3.1 document into
//! a config (`sluice import openapi`), [`document`] merges the routes and the
//! documents their `openapi-validate` plugins check against into one OpenAPI
//! document (the admin API's `GET /-/openapi.json`). The checking itself is the
//! `openapi-validate` plugin's (`plugins/openapi-validate`). None of it is on the
//! request path.

pub mod document;
pub mod import;
pub mod yaml;

use std::fmt;
use std::path::Path;

pub use document::combined;
pub use import::{ImportOptions, import};

/// The methods an OpenAPI path item can hold.
pub const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Why a document could not be imported: where in it (a JSON pointer), and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ImportError {
    /// JSON pointer into the document (`/paths/~1pets/get`); `None` for a problem
    /// with the command's options or the file as a whole.
    pub pointer: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ImportError {
    /// A problem at `pointer`.
    pub fn at(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self { pointer: Some(pointer.into()), message: message.into() }
    }

    /// A problem with the options or the file.
    pub fn option(message: impl Into<String>) -> Self {
        Self { pointer: None, message: message.into() }
    }
}

impl fmt::Display for ImportError {
    /// `#/paths/~1pets: message`, or the message alone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pointer {
            Some(p) => write!(f, "#{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A key as a JSON pointer token (`/pets` → `~1pets`).
pub fn token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Reads an OpenAPI document: JSON for `.json`, YAML otherwise (YAML reads JSON too).
pub fn read_document(path: &Path) -> Result<serde_json::Value, ImportError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ImportError::option(format!("cannot read the file: {e}")))?;
    let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let parsed = if is_json {
        serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))
    } else {
        crate::config::files::parse_yaml(&text)
    };
    parsed.map_err(ImportError::option)
}
