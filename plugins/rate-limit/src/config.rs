//! The plugin's config as the route writes it (`Config`), and its checked, compiled form
//! ([`Compiled`]) built once per instance by [`Config::compile`]: emission intervals,
//! key recipes and the constant `RateLimit-Policy` header value, so the hot path only
//! does integer arithmetic and kv calls.

use std::time::Duration;

use serde::Deserialize;

use crate::gcra::Gcra;

/// Longest `per` a limit may have (a year): longer periods gain nothing and only push
/// arithmetic towards overflow.
pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest limit name (it appears in response headers and kv keys).
pub const MAX_NAME_LEN: usize = 64;
/// Longest `scope`.
pub const MAX_SCOPE_LEN: usize = 128;

/// The `rate-limit` plugin's config (a route's `plugins[].config`).
///
/// ```yaml
/// config:
///   key: [consumer]
///   fallback_key: [ip]
///   limits:
///     - { name: per_second, rate: 10, per: 1s, burst: 20 }
///     - { name: per_day, rate: 10000, per: 1d }
///   on_kv_error: fail_open
/// ```
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The limits. A request is admitted only when every limit admits it; the first
    /// one that refuses answers `429` (and the limits before it get their unit back).
    /// At least one.
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub limits: Vec<LimitConfig>,
    /// What identifies a client, for every limit that does not set its own `key`: a
    /// list of parts combined into one key, from `consumer`, `ip`, `path`,
    /// `{ header: NAME }` and `{ path_param: NAME }`. Default `[ip]`.
    #[serde(default)]
    pub key: Option<Vec<KeyPartConfig>>,
    /// The key used instead of `key` when a part of `key` is absent (no consumer, no
    /// such header or path parameter), for example `[ip]` for anonymous clients under
    /// `key: [consumer]`. Without one (or when it is absent too), absent parts count
    /// as one shared value: all such clients share one budget. Default none.
    #[serde(default)]
    pub fallback_key: Option<Vec<KeyPartConfig>>,
    /// What to do when the kv store cannot be reached (Redis down or slower than
    /// `plugins.kv.timeout`): `fail_open` (default) lets the request through, logs a
    /// warning and counts `kv_errors`; `fail_closed` answers `503`
    /// (`rate_limit_unavailable`) with `Retry-After: 1`.
    #[serde(default)]
    #[cfg_attr(test, schemars(extend("default" = "fail_open")))]
    pub on_kv_error: KvErrorPolicyConfig,
    /// Limits with the same scope and name share their state. Default: the route's
    /// name, so every route counts on its own; give several routes the same scope to
    /// make them share one budget. 1–128 characters.
    #[serde(default)]
    #[cfg_attr(test, schemars(length(min = 1, max = 128)))]
    pub scope: Option<String>,
    /// Send the `RateLimit-Policy` and `RateLimit` headers
    /// (draft-ietf-httpapi-ratelimit-headers) on every response. Default `true`.
    #[serde(default = "default_true")]
    pub headers: bool,
}

fn default_true() -> bool {
    true
}

/// One limit: GCRA (a token bucket measured in time) with `rate` requests per `per`,
/// and up to `burst` at once.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// The limit's name, unique in this config: it appears in the `RateLimit` headers
    /// and the kv keys. Letters, digits, `_`, `-` and `.`; 1–64 characters.
    #[cfg_attr(test, schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$")))]
    pub name: String,
    /// Requests admitted per `per`, on average. At least 1.
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub rate: u64,
    /// The period of `rate`: a whole number of seconds, minutes, hours or days, like
    /// `1s`, `10s`, `1m`, `1h`, `1d`. At most a year.
    #[cfg_attr(test, schemars(with = "String", regex(pattern = r"^[0-9]+(s|m|h|d)$")))]
    pub per: Period,
    /// Requests admitted at once after a quiet spell (the bucket's size). At least 1.
    /// Default `rate`.
    #[serde(default)]
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub burst: Option<u64>,
    /// What identifies a client for this limit; overrides the top-level `key`.
    #[serde(default)]
    pub key: Option<Vec<KeyPartConfig>>,
    /// The key used when a part of this limit's `key` is absent; overrides the
    /// top-level `fallback_key`.
    #[serde(default)]
    pub fallback_key: Option<Vec<KeyPartConfig>>,
    /// When a part of this limit's key is absent (and no fallback key is whole), the
    /// limit does not count the request, instead of counting every such request in
    /// one shared budget: a limit keyed on a header only some requests carry (the
    /// `mcp` plugin's `x-mcp-tool`) then limits just those. Default `false`.
    #[serde(default)]
    pub skip_absent: bool,
}

/// One part of a client key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyPartConfig {
    /// The consumer's name, as an authentication plugin earlier in the chain set it.
    Consumer,
    /// The client's IP address (the TCP peer).
    Ip,
    /// The request path, without the query.
    Path,
    /// The first value of this request header (case-insensitive).
    Header(String),
    /// The value of this path parameter of the route's pattern (`/users/{id}` → `id`).
    PathParam(String),
}

/// What to do when the kv store is unavailable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum KvErrorPolicyConfig {
    /// Let the request through (no `RateLimit` header; `RateLimit-Policy` still sent).
    #[default]
    FailOpen,
    /// Answer `503 rate_limit_unavailable` with `Retry-After: 1`.
    FailClosed,
}

/// A period: a whole number of seconds (`per`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Duration);

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_period(&s).map(Period).map_err(serde::de::Error::custom)
    }
}

/// Parses `10s`, `1m`, `1h`, `1d`.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid period `{s}`: use a whole number of seconds, minutes, hours or days, like `1s`, `1m`, `1h`, `1d`"
        )
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    secs.map(Duration::from_secs).ok_or_else(bad)
}

/// How a client key is made: the parts, and the fallback when one is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// The parts, combined.
    pub parts: Vec<KeyPart>,
    /// Used when a part is absent.
    pub fallback: Option<Vec<KeyPart>>,
    /// A request whose key (and fallback) has an absent part is not counted.
    pub skip_absent: bool,
}

/// A key part, with header names lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The consumer's name.
    Consumer,
    /// The client IP.
    Ip,
    /// The path.
    Path,
    /// A request header (lowercase name).
    Header(String),
    /// A path parameter.
    PathParam(String),
}

/// One checked limit.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Its name.
    pub name: String,
    /// Its GCRA parameters.
    pub gcra: Gcra,
    /// Index into [`Compiled::keys`].
    pub key: usize,
}

/// The config, checked and prepared for the hot path.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// The limits, in config order.
    pub limits: Vec<Limit>,
    /// The distinct key recipes the limits use (most configs have one).
    pub keys: Vec<KeySpec>,
    /// The `RateLimit-Policy` value (constant for the config).
    pub policy_header: String,
}

impl Config {
    /// Checks every field and builds the hot-path form; every problem is reported,
    /// one per line.
    pub fn compile(&self) -> Result<Compiled, String> {
        let mut problems = Vec::new();
        if self.limits.is_empty() {
            problems.push(
                "`limits` is empty: give at least one limit, like `{ name: per_second, rate: 10, per: 1s }`"
                    .to_owned(),
            );
        }
        if let Some(scope) = &self.scope
            && (scope.is_empty() || scope.len() > MAX_SCOPE_LEN)
        {
            problems.push(format!("`scope` must be 1–{MAX_SCOPE_LEN} characters"));
        }
        let default_key = self.key.clone().unwrap_or_else(|| vec![KeyPartConfig::Ip]);
        let mut compiled = Compiled::default();
        for (i, limit) in self.limits.iter().enumerate() {
            let at = format!("limits[{i}] ({})", limit.name);
            if let Err(m) = check_name(&limit.name) {
                problems.push(format!("limits[{i}].name: {m}"));
            }
            if self.limits[..i].iter().any(|l| l.name == limit.name) {
                problems.push(format!("{at}: the name is used by an earlier limit; names must be unique"));
            }
            let gcra = match check_gcra(limit) {
                Ok(g) => Some(g),
                Err(m) => {
                    problems.push(format!("{at}: {m}"));
                    None
                }
            };
            let parts = limit.key.as_ref().unwrap_or(&default_key);
            let fallback = limit.fallback_key.as_ref().or(self.fallback_key.as_ref());
            let spec = match key_spec(parts, fallback, limit.skip_absent) {
                Ok(s) => Some(s),
                Err(m) => {
                    problems.push(format!("{at}: {m}"));
                    None
                }
            };
            if let (Some(gcra), Some(spec)) = (gcra, spec) {
                let key = match compiled.keys.iter().position(|k| *k == spec) {
                    Some(k) => k,
                    None => {
                        compiled.keys.push(spec);
                        compiled.keys.len() - 1
                    }
                };
                compiled.limits.push(Limit { name: limit.name.clone(), gcra, key });
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        compiled.policy_header = crate::headers::policy(&compiled.limits);
        Ok(compiled)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("must be 1–{MAX_NAME_LEN} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
        return Err(format!("`{name}` may hold only letters, digits, `_`, `-` and `.`"));
    }
    Ok(())
}

fn check_gcra(limit: &LimitConfig) -> Result<Gcra, String> {
    let per = limit.per.0;
    if per.is_zero() {
        return Err("`per` must be at least `1s`".into());
    }
    if per > MAX_PERIOD {
        return Err("`per` must be at most a year (`366d`)".into());
    }
    if limit.rate == 0 {
        return Err("`rate` must be at least 1".into());
    }
    let burst = limit.burst.unwrap_or(limit.rate);
    if burst == 0 {
        return Err("`burst` must be at least 1".into());
    }
    Gcra::new(limit.rate, per, burst)
}

fn key_spec(
    parts: &[KeyPartConfig],
    fallback: Option<&Vec<KeyPartConfig>>,
    skip_absent: bool,
) -> Result<KeySpec, String> {
    let parts = key_parts(parts, "key")?;
    let fallback = fallback.map(|f| key_parts(f, "fallback_key")).transpose()?;
    Ok(KeySpec { parts, fallback, skip_absent })
}

fn key_parts(parts: &[KeyPartConfig], field: &str) -> Result<Vec<KeyPart>, String> {
    if parts.is_empty() {
        return Err(format!("`{field}` is empty: list at least one part, like `[ip]`"));
    }
    parts
        .iter()
        .map(|p| match p {
            KeyPartConfig::Consumer => Ok(KeyPart::Consumer),
            KeyPartConfig::Ip => Ok(KeyPart::Ip),
            KeyPartConfig::Path => Ok(KeyPart::Path),
            KeyPartConfig::Header(h) => {
                let valid = !h.is_empty()
                    && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if valid {
                    Ok(KeyPart::Header(h.to_ascii_lowercase()))
                } else {
                    Err(format!("`{field}`: `{h}` is not a valid header name"))
                }
            }
            KeyPartConfig::PathParam(p) if p.is_empty() => {
                Err(format!("`{field}`: a `path_param` needs the parameter's name"))
            }
            KeyPartConfig::PathParam(p) => Ok(KeyPart::PathParam(p.clone())),
        })
        .collect()
}
