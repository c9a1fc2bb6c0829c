//! The split target: which upstream pool of a weighted split a request goes to.
//!
//! Overrides first (a header with a value), then the weights: a sticky key (consumer,
//! header, cookie) is hashed onto the total weight with FNV-1a, so a key lands on the
//! same side on every replica and after a restart for as long as the weights stay the
//! same; without one, the side is drawn at random.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::{SplitConfig, StickyConfig};
use crate::upstream::Upstream;

/// How long the stickiness cookie lasts: 30 days.
const COOKIE_MAX_AGE_SECS: u64 = 30 * 24 * 3600;

/// A built split.
#[derive(Debug)]
pub struct Split {
    /// Each side and the end of its range on `0..total`.
    arms: Vec<(Arc<Upstream>, u64)>,
    total: u64,
    sticky: Option<Sticky>,
    overrides: Vec<Override>,
}

#[derive(Debug)]
enum Sticky {
    Consumer,
    Header(HeaderName),
    Cookie(String),
}

#[derive(Debug)]
struct Override {
    header: HeaderName,
    /// `None`: any value.
    value: Option<HeaderValue>,
    upstream: Arc<Upstream>,
}

/// Where a request goes, and the cookie to set when stickiness just began.
pub struct Choice<'a> {
    /// The chosen pool.
    pub upstream: &'a Arc<Upstream>,
    /// A `Set-Cookie` for the response.
    pub cookie: Option<HeaderValue>,
}

impl Split {
    /// The split of a validated config; `find` gives each upstream name's pool (and
    /// `None` for an unknown name, reported by the caller).
    pub fn new(cfg: &SplitConfig, find: impl Fn(&str) -> Option<Arc<Upstream>>) -> Option<Split> {
        let mut arms = Vec::with_capacity(cfg.to.len());
        let mut end = 0u64;
        for arm in &cfg.to {
            end += u64::from(arm.weight);
            arms.push((find(arm.upstream.as_str())?, end));
        }
        let overrides = cfg
            .overrides
            .iter()
            .map(|o| {
                Some(Override {
                    header: HeaderName::from_bytes(o.header.as_bytes()).ok()?,
                    value: o
                        .value
                        .as_deref()
                        .filter(|v| *v != "*")
                        .and_then(|v| HeaderValue::from_str(v).ok()),
                    upstream: find(o.upstream.as_str())?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let sticky = match &cfg.sticky {
            None => None,
            Some(StickyConfig::Consumer) => Some(Sticky::Consumer),
            Some(StickyConfig::Header(h)) => Some(Sticky::Header(HeaderName::from_bytes(h.as_bytes()).ok()?)),
            Some(StickyConfig::Cookie(c)) => Some(Sticky::Cookie(c.clone())),
        };
        Some(Split { arms, total: end, sticky, overrides })
    }

    /// The side for a request with `headers` and `consumer`.
    pub fn choose(&self, headers: &HeaderMap, consumer: Option<&str>) -> Choice<'_> {
        for o in &self.overrides {
            let hit = match &o.value {
                None => headers.contains_key(&o.header),
                Some(v) => headers.get_all(&o.header).iter().any(|h| h == v),
            };
            if hit {
                return Choice { upstream: &o.upstream, cookie: None };
            }
        }
        let mut cookie = None;
        let key: Option<u64> = match &self.sticky {
            None => None,
            Some(Sticky::Consumer) => consumer.map(|c| fnv1a(c.as_bytes())),
            Some(Sticky::Header(h)) => headers.get(h).map(|v| fnv1a(v.as_bytes())),
            Some(Sticky::Cookie(name)) => match cookie_value(headers, name) {
                Some(v) => Some(fnv1a(v.as_bytes())),
                None => {
                    let token = format!("{:032x}", fastrand::u128(..));
                    let set = format!(
                        "{name}={token}; Path=/; Max-Age={COOKIE_MAX_AGE_SECS}; HttpOnly; SameSite=Lax"
                    );
                    cookie = HeaderValue::from_str(&set).ok();
                    Some(fnv1a(token.as_bytes()))
                }
            },
        };
        let point = match key {
            Some(k) => k % self.total,
            None => fastrand::u64(..self.total),
        };
        let (upstream, _) =
            self.arms.iter().find(|(_, end)| point < *end).unwrap_or(&self.arms[self.arms.len() - 1]);
        Choice { upstream, cookie }
    }
}

/// The value of the cookie `name`, from any `Cookie` header.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v).filter(|v| !v.is_empty())
        })
}

/// The 64-bit FNV-1a hash: stable across processes and versions (the standard
/// library's hasher promises neither).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_its_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_cookie_is_found_among_others_and_an_empty_one_is_none() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; canary=xyz"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie_value(&h, "canary"), Some("xyz"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "can"), None);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("canary="));
        assert_eq!(cookie_value(&h, "canary"), None);
    }
}
