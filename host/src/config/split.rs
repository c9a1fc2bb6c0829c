//! The `split` route target: a weighted split of a route's requests between upstream
//! pools (canary and blue/green rollouts), optionally sticky, with overrides. Checked
//! by [`validate_split`] when the snapshot is built (it needs the upstream names).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Name, Problem};

/// Largest weight of one side of a split.
pub const MAX_SPLIT_WEIGHT: u32 = 1_000_000;

/// A weighted split: `target: { split: { to: [{ upstream: v1, weight: 90 }, { upstream:
/// v2, weight: 10 }] } }`. Changing the weights is a config reload.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// The upstream pools and their weights: a request goes to one of them with the
    /// probability of its weight over the total.
    pub to: Vec<SplitArmConfig>,
    /// What keeps a client on one side across requests: `consumer` (the consumer an
    /// auth plugin set), `{ header: NAME }` or `{ cookie: NAME }` (a client without the
    /// cookie gets one, set for 30 days). The same key lands on the same side for as
    /// long as the weights stay the same, on every gateway replica. Default: none, each
    /// request is drawn anew.
    #[serde(default)]
    pub sticky: Option<StickyConfig>,
    /// Requests that go to one upstream whatever the weights (`x-canary: 1` to try the
    /// new version), checked in order before the split.
    #[serde(default)]
    pub overrides: Vec<SplitOverrideConfig>,
}

/// One side of a split.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitArmConfig {
    /// The upstream pool.
    pub upstream: Name,
    /// Its weight (0 to 1,000,000; 0 takes no requests but overrides).
    pub weight: u32,
}

/// What makes a split sticky.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StickyConfig {
    /// The request's consumer (set by an auth plugin in the route's chain); requests
    /// without one are drawn anew.
    Consumer,
    /// The value of a request header; requests without it are drawn anew.
    Header(String),
    /// A cookie the gateway sets on the first response of a client that has none.
    Cookie(String),
}

/// Requests that always go to one upstream.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitOverrideConfig {
    /// The request header to look at.
    pub header: String,
    /// Its value, exactly; `"*"` for any. Default `"*"`.
    #[serde(default)]
    pub value: Option<String>,
    /// Where such requests go.
    pub upstream: Name,
}

/// Every problem of a split target at `at`; `known` tells the upstream names that
/// exist.
pub fn validate_split(s: &SplitConfig, at: &str, known: impl Fn(&str) -> bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    let arms = s.to.iter().enumerate().map(|(k, a)| (format!("{at}.to[{k}].upstream"), &a.upstream));
    let overrides =
        s.overrides.iter().enumerate().map(|(k, o)| (format!("{at}.overrides[{k}].upstream"), &o.upstream));
    let mut unknown: Vec<Problem> = arms
        .chain(overrides)
        .filter(|(_, name)| !known(name.as_str()))
        .map(|(path, name)| Problem::new(path, format!("unknown upstream `{name}`")))
        .collect();
    if s.to.is_empty() {
        problems.push(Problem::new(format!("{at}.to"), "a split needs at least one upstream"));
    }
    for (k, arm) in s.to.iter().enumerate() {
        if arm.weight > MAX_SPLIT_WEIGHT {
            problems.push(Problem::new(
                format!("{at}.to[{k}].weight"),
                format!("must be at most {MAX_SPLIT_WEIGHT}"),
            ));
        }
    }
    if !s.to.is_empty() && s.to.iter().all(|a| a.weight == 0) {
        problems
            .push(Problem::new(format!("{at}.to"), "the weights add up to 0: no request could go anywhere"));
    }
    let header_name = |h: &str| http::HeaderName::from_bytes(h.as_bytes()).is_ok();
    match &s.sticky {
        Some(StickyConfig::Header(h)) if !header_name(h) => {
            problems.push(Problem::new(format!("{at}.sticky.header"), format!("`{h}` is not a header name")));
        }
        Some(StickyConfig::Cookie(c)) if c.is_empty() || !c.bytes().all(is_cookie_name_byte) => {
            problems.push(Problem::new(format!("{at}.sticky.cookie"), format!("`{c}` is not a cookie name")));
        }
        _ => {}
    }
    for (k, o) in s.overrides.iter().enumerate() {
        if !header_name(&o.header) {
            problems.push(Problem::new(
                format!("{at}.overrides[{k}].header"),
                format!("`{}` is not a header name", o.header),
            ));
        }
        if let Some(v) = &o.value
            && http::HeaderValue::from_str(v).is_err()
        {
            problems.push(Problem::new(format!("{at}.overrides[{k}].value"), "not a valid header value"));
        }
    }
    problems.append(&mut unknown);
    problems
}

/// A byte of an RFC 6265 cookie name (an HTTP token).
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
