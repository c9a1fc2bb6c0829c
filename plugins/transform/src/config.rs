//! The config of `transform` as routes write it (serde), and its validation into the
//! compiled rules of [`crate::rules`].

use std::collections::BTreeMap;

use serde::Deserialize;

/// The `transform` plugin's config: what to change in the request on its way
/// upstream and in the response on its way back. Every section is optional.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// Changes to the request before it goes upstream.
    #[serde(default)]
    pub request: RequestConfig,
    /// Changes to the upstream's response before it goes to the client.
    #[serde(default)]
    pub response: ResponseConfig,
}

/// Request changes, applied in this order: JSON body, headers, path, query.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// Header changes.
    #[serde(default)]
    pub headers: HeadersConfig,
    /// Path rewrites.
    #[serde(default)]
    pub path: PathConfig,
    /// Query parameter changes.
    #[serde(default)]
    pub query: QueryConfig,
    /// JSON body changes, for `application/json` and `application/*+json` bodies
    /// without a content-encoding; other and empty bodies pass untouched, a malformed
    /// JSON body is answered with `400`. Declaring any makes the gateway buffer the
    /// request body.
    #[serde(default)]
    pub body: BodyConfig,
}

/// Response changes, applied in this order: JSON body, headers, status.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// Status code mapping, upstream status → status sent to the client, like
    /// `{"404": 200}`. Applied last, so templates' `{{status}}` is the upstream's.
    #[serde(default)]
    pub status: BTreeMap<String, u16>,
    /// Header changes.
    #[serde(default)]
    pub headers: HeadersConfig,
    /// JSON body changes (only for JSON responses without a content-encoding; other
    /// bodies, and malformed JSON, pass untouched). Declaring any makes the gateway
    /// buffer the response body.
    #[serde(default)]
    pub body: BodyConfig,
}

/// Header changes, applied in this order: rename, remove, set, add. Names are
/// case-insensitive; values are templates.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Headers to rename, `{from: to}`: every value of `from` moves to `to`, replacing
    /// what `to` had. Nothing happens when `from` is absent.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Headers to remove (every value).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Headers to set, `{name: template}`, replacing any existing values.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Header values to append, `{name: template}`, keeping existing values.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
}

/// Path rewrites, applied in this order: `strip_prefix`, `add_prefix`, `regex`. The
/// query string is kept (see `query`).
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PathConfig {
    /// Removed from the start of the path when the path starts with it at a segment
    /// boundary (`/api` strips `/api/users` and `/api`, not `/apis`). An emptied path
    /// becomes `/`.
    pub strip_prefix: Option<String>,
    /// Prepended to the path (after `strip_prefix`: together they replace a prefix).
    pub add_prefix: Option<String>,
    /// A regular expression rewrite of the path.
    pub regex: Option<PathRegexConfig>,
}

/// A regex path rewrite: the first match of `pattern` is replaced by `replace`.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PathRegexConfig {
    /// The regular expression (`regex-lite` syntax: Perl-like, ASCII classes), matched
    /// against the raw (percent-encoded) path, like `^/users/(?P<id>[0-9]+)/profile$`.
    /// A path that does not match is unchanged.
    pub pattern: String,
    /// The replacement, with `$1` / `${name}` for captures, like `/profiles/${id}`.
    /// Must start with `/` and contain no `?`.
    pub replace: String,
}

/// Query parameter changes, applied in this order: remove, set, add. Names match
/// after percent-decoding; added values are templates, percent-encoded.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Parameters to remove (every occurrence).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Parameters to set, `{name: template}`, replacing every existing occurrence.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Parameters to append, `{name: template}`.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
}

/// JSON body changes by JSON pointer (RFC 6901), applied in this order: rename,
/// remove, set.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BodyConfig {
    /// Fields to move, like `{from: /userName, to: /user/name}`. Nothing happens when
    /// `from` is absent.
    #[serde(default)]
    pub rename: Vec<RenameConfig>,
    /// Fields to remove, like `/password` or `/items/0`. Absent fields are ignored.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Fields to set, creating missing parent objects.
    #[serde(default)]
    pub set: Vec<SetConfig>,
}

impl BodyConfig {
    /// True when no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.set.is_empty()
    }
}

/// Moves a JSON field.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RenameConfig {
    /// JSON pointer of the field to move.
    pub from: String,
    /// JSON pointer of its new place.
    pub to: String,
}

/// Sets a JSON field.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// JSON pointer of the field, like `/user/id` (`/items/-` appends to an array).
    pub pointer: String,
    /// The value: any JSON. Every string in it is a template; a string that is
    /// exactly one placeholder keeps the value's type (`{{consumer.groups}}` is an
    /// array), and is skipped (at the top level) or `null` (nested) when the value is
    /// missing and has no default.
    pub value: serde_json::Value,
    /// Converts the rendered top-level value: `string`, `number`, `boolean`
    /// (`true`/`false`) or `json` (parses the text). A request value that does not
    /// convert is answered with `400`; a response rule is skipped.
    #[serde(rename = "as")]
    pub as_type: Option<ValueType>,
}

/// A conversion of a rendered value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Text.
    String,
    /// An integer or a decimal number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// The text parsed as a JSON document.
    Json,
}
