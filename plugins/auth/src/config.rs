//! The plugin's config, as the route writes it (`config:` of `- name: auth`). Field
//! doc comments are the reference; defaults are the named constants below. Everything
//! here is plain data: [`crate::Auth::init`] turns it into the runtime form (hashed
//! keys, parsed public keys) and reports bad values naming the field.

use serde::Deserialize;
use serde_json::Value;

/// Default realm of the `WWW-Authenticate` challenges.
pub const DEFAULT_REALM: &str = "sluice";
/// Default header an API key is read from.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";
/// Default header the consumer's name is forwarded upstream in.
pub const DEFAULT_CONSUMER_HEADER: &str = "x-consumer";
/// Default header the consumer's groups are forwarded upstream in (comma-separated).
pub const DEFAULT_GROUPS_HEADER: &str = "x-consumer-groups";
/// Default largest JWT accepted, in bytes.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default clock skew tolerated on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: &str = "30s";
/// Default claim the consumer's name is taken from.
pub const DEFAULT_CONSUMER_CLAIM: &str = "sub";
/// Default claims a JWT must carry.
pub const DEFAULT_REQUIRED_CLAIMS: &[&str] = &["exp"];
/// Default time a fetched JWKS document is used before it is fetched again.
pub const DEFAULT_JWKS_CACHE_TTL: &str = "10m";
/// Default shortest time between two fetches of the JWKS URL (a token with an unknown
/// `kid` triggers a refetch at most this often; failures back off from here).
pub const DEFAULT_JWKS_MIN_REFRESH: &str = "30s";
/// Default number of verified tokens (and Basic credentials) remembered per instance.
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;

/// The `auth` plugin's config. At least one of `api_key`, `basic` and `jwt` must be
/// set. When several are, the first whose credential the request carries decides
/// (API key, then Basic, then JWT); a request with none gets `401` (or the
/// `anonymous` consumer).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys: where the request carries them and the consumer each one stands for.
    #[serde(default)]
    pub api_key: Option<ApiKeyConfig>,
    /// HTTP Basic authentication against bcrypt or argon2 password hashes.
    #[serde(default)]
    pub basic: Option<BasicConfig>,
    /// JSON Web Tokens (JWS compact form) signed with HMAC, RSA, ECDSA or EdDSA.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Consumer name given to requests that carry no credential at all, instead of
    /// answering `401`. Requests with an invalid credential are still refused. No
    /// control characters (it is forwarded in a header). Default: none (credentials
    /// are required).
    #[serde(default)]
    pub anonymous: Option<String>,
    /// Only these consumers (by name or group) may pass; the others get `403`.
    /// Default: every authenticated consumer.
    #[serde(default)]
    pub allow: Option<RuleConfig>,
    /// These consumers (by name or group) get `403`. Checked before `allow`.
    #[serde(default)]
    pub deny: Option<RuleConfig>,
    /// Headers the consumer is forwarded upstream in. Whatever the client sent in
    /// these headers is always removed first, before anything is decided, so they
    /// cannot be forged; a forwarded header the gateway refuses is a plugin fault.
    /// `null` forwards nothing (and removes nothing). Default `x-consumer` and
    /// `x-consumer-groups`.
    #[serde(default = "default_forward")]
    pub forward: Option<ForwardConfig>,
    /// Remove the credential (header, query parameter or cookie) before the request
    /// goes upstream. Default `false`, as in Kong: the upstream may want to read the
    /// token's claims itself.
    #[serde(default)]
    pub hide_credentials: bool,
    /// The realm named in `WWW-Authenticate` challenges. Default `sluice`.
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    DEFAULT_REALM.to_owned()
}

fn default_forward() -> Option<ForwardConfig> {
    Some(ForwardConfig::default())
}

/// Headers the consumer is forwarded in: two distinct header names, neither managed
/// by the gateway (`connection`, `content-length`, …) nor one a credential is read
/// from.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Header carrying the consumer's name. Default `x-consumer`.
    #[serde(default = "default_consumer_header")]
    pub consumer_header: String,
    /// Header carrying the consumer's groups, comma-separated (absent when it has
    /// none). Default `x-consumer-groups`.
    #[serde(default = "default_groups_header")]
    pub groups_header: String,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self { consumer_header: default_consumer_header(), groups_header: default_groups_header() }
    }
}

fn default_consumer_header() -> String {
    DEFAULT_CONSUMER_HEADER.to_owned()
}

fn default_groups_header() -> String {
    DEFAULT_GROUPS_HEADER.to_owned()
}

/// Consumers matched by a rule: a consumer matches when its name is in `consumers`
/// or one of its groups is in `groups`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Consumer names.
    #[serde(default)]
    pub consumers: Vec<String>,
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Where a credential is read from: exactly one of `header`, `bearer`, `query` and
/// `cookie`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A request header (case-insensitive name). For JWTs, a `Bearer ` prefix is
    /// removed; in the `authorization` header it is required.
    Header(String),
    /// A header holding `Bearer <credential>` (the scheme in any case), the way the
    /// OpenAI and other SDKs send an API key in `authorization`: the credential is
    /// what follows the scheme, and a value with another scheme holds none.
    Bearer(String),
    /// A query parameter (percent-decoded).
    Query(String),
    /// A cookie.
    Cookie(String),
}

/// API key authentication.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Where keys are looked for, in order; the first present wins. Default
    /// `[{header: x-api-key}]`.
    #[serde(default = "default_api_key_sources")]
    pub sources: Vec<SourceConfig>,
    /// The accepted keys. Keys are kept only as SHA-256 digests in memory and compared
    /// in constant time.
    pub keys: Vec<ApiKeyEntryConfig>,
}

fn default_api_key_sources() -> Vec<SourceConfig> {
    vec![SourceConfig::Header(DEFAULT_API_KEY_HEADER.to_owned())]
}

/// One API key: exactly one of `key`, `sha256` and `secret`, and its consumer.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntryConfig {
    /// The key itself (prefer `sha256` or `secret` to keep keys out of config files).
    #[serde(default)]
    pub key: Option<String>,
    /// The key's SHA-256 digest, 64 hex digits (`printf %s KEY | sha256sum`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// The name of a secret granted to the plugin (`grants: { secrets: { NAME: ... } }`)
    /// holding the key.
    #[serde(default)]
    pub secret: Option<String>,
    /// The consumer's name (no control characters).
    pub consumer: String,
    /// The consumer's groups (no control characters).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// HTTP Basic authentication (`Authorization: Basic ...`).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    /// The accepted users.
    pub users: Vec<BasicUserConfig>,
    /// Verified credentials remembered per instance (bcrypt and argon2 are slow on
    /// purpose), as salted SHA-256 digests. `0` turns the cache off. Default `1024`.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
}

/// One Basic user. The consumer is named after the user.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BasicUserConfig {
    /// The user name (also the consumer's name): not empty, no `:` and no control
    /// characters.
    pub username: String,
    /// The password's hash: bcrypt (`$2b$...`, `$2a$`, `$2y$`) or an argon2 PHC string
    /// (`$argon2id$...`). Plaintext passwords are not accepted. Cost matters: every
    /// first check of a credential runs the hash inside the plugin's deadline.
    pub password_hash: String,
    /// The consumer's groups (no control characters).
    #[serde(default)]
    pub groups: Vec<String>,
}

fn default_cache_entries() -> usize {
    DEFAULT_CACHE_ENTRIES
}

/// JWT authentication. At least one of `keys`, `jwks` and `jwks_url` must be set.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Where tokens are looked for, in order. Default `[{header: authorization}]`
    /// (`Authorization: Bearer <token>`).
    #[serde(default = "default_jwt_sources")]
    pub sources: Vec<SourceConfig>,
    /// Verification keys given inline.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// A JWKS document (`{"keys": [...]}`) given inline. Its encryption keys (`use`
    /// other than `sig`, `key_ops` without `verify`) are skipped; one left with no
    /// signature key is an error.
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "Option<serde_json::Map<String, Value>>"))]
    pub jwks: Option<Value>,
    /// A JWKS URL, fetched through the host's `http` capability (grant it:
    /// `grants: { http: { allow: [HOST] } }`) by the first request that needs it, kept
    /// in each instance's memory, and fetched again after `jwks_cache_ttl` or when a
    /// token names an unknown `kid`. A fetch during a request counts against the
    /// plugin's `limits.deadline`: keep that above the grant's `timeout`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How long a fetched JWKS document is used. Default `10m`.
    #[serde(default = "default_jwks_cache_ttl")]
    pub jwks_cache_ttl: String,
    /// Shortest time between two fetches of `jwks_url`: tokens with unknown `kid`s
    /// cannot make the plugin fetch more often. After a failed fetch the wait doubles,
    /// up to `jwks_cache_ttl`. Default `30s`.
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh: String,
    /// Accepted algorithms (`HS256`, `RS256`, `PS256`, `ES256`, `EdDSA`, ...). Default:
    /// every algorithm of the key's type. `none` is never accepted.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Accepted issuers (`iss`). Default: any issuer.
    #[serde(default)]
    pub issuer: Option<Vec<String>>,
    /// Accepted audiences: the token's `aud` (a string or a list) must contain one.
    /// Default: any audience.
    #[serde(default)]
    pub audience: Option<Vec<String>>,
    /// Claims a token must carry. Default `[exp]`.
    #[serde(default = "default_required_claims")]
    pub required_claims: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`. Default `30s`.
    #[serde(default = "default_leeway")]
    pub leeway: String,
    /// Largest token accepted, in bytes. Default `8192`.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Claim naming the consumer (a string or a number). A token whose consumer has a
    /// control character is refused. Default `sub`.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// Claim holding the consumer's groups: a list of strings or a space-separated
    /// string (like OAuth's `scope`). A token with a group that has a control
    /// character is refused. Default: none.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Verified tokens remembered per instance (keyed by the token's SHA-256, until it
    /// expires), so a client re-sending its token skips the signature check. `0` turns
    /// the cache off. Default `1024`.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
}

fn default_jwt_sources() -> Vec<SourceConfig> {
    vec![SourceConfig::Header("authorization".to_owned())]
}
fn default_jwks_cache_ttl() -> String {
    DEFAULT_JWKS_CACHE_TTL.to_owned()
}
fn default_jwks_min_refresh() -> String {
    DEFAULT_JWKS_MIN_REFRESH.to_owned()
}
fn default_required_claims() -> Vec<String> {
    DEFAULT_REQUIRED_CLAIMS.iter().map(|c| (*c).to_owned()).collect()
}
fn default_leeway() -> String {
    DEFAULT_LEEWAY.to_owned()
}
fn default_max_token_bytes() -> usize {
    DEFAULT_MAX_TOKEN_BYTES
}
fn default_consumer_claim() -> String {
    DEFAULT_CONSUMER_CLAIM.to_owned()
}

/// One inline JWT verification key: exactly one of `pem`, `jwk`, `secret` and
/// `secret_name`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// The key id tokens name in their `kid` header. A token with a `kid` is checked
    /// against the keys of that id and the keys without one; a token without a `kid`
    /// against every key of the right type.
    #[serde(default)]
    pub kid: Option<String>,
    /// Pins the key to one algorithm. Default: every algorithm of the key's type
    /// (RSA: `RS*`, `PS*`; P-256: `ES256`; P-384: `ES384`; Ed25519: `EdDSA`; HMAC: `HS*`).
    #[serde(default)]
    pub alg: Option<String>,
    /// A PEM public key: `PUBLIC KEY` (SPKI: RSA, P-256, P-384, Ed25519) or
    /// `RSA PUBLIC KEY` (PKCS#1). RSA moduli need at least 2048 bits.
    #[serde(default)]
    pub pem: Option<String>,
    /// A public JWK (`kty` `RSA`, `EC`, `OKP`) or a symmetric one (`oct`), for
    /// signatures: a `use` other than `sig`, or `key_ops` without `verify`, is an
    /// error. A private JWK (with `d`) works, with a warning: only its public part
    /// is used.
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "Option<serde_json::Map<String, Value>>"))]
    pub jwk: Option<Value>,
    /// An HMAC secret (UTF-8 bytes, at least 32).
    #[serde(default)]
    pub secret: Option<String>,
    /// The name of a granted secret holding the HMAC secret.
    #[serde(default)]
    pub secret_name: Option<String>,
}

/// Parses a duration written `250ms`, `30s`, `5m`, `1h` (or `0`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(0);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 250ms, 30s, 5m or 1h"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{s}` is not a duration like 250ms, 30s, 5m or 1h")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("`{s}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert!(parse_duration_ms("5 minutes").is_err());
        assert!(parse_duration_ms("s").is_err());
    }

    /// The JSON Schema the gateway embeds: `SLUICE_BLESS=1` rewrites it.
    #[test]
    fn schema_is_up_to_date() {
        let schema = serde_json::to_string_pretty(&schemars::schema_for!(AuthConfig)).unwrap() + "\n";
        sluice_plugin_sdk::testing::golden(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json"), &schema);
    }
}
