//! The JSON Schema of the config, generated from the serde types.

/// The config's JSON Schema (draft 2020-12), for editors and CI linting.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(super::Config)).expect("schema serializes")
}
