//! Where a credential travels: a header, a query parameter or a cookie. Reading it,
//! and removing it before the request goes upstream (`hide_credentials`).

use sluice_plugin_sdk::Request;

use crate::config::SourceConfig;
use crate::identity;

/// A credential's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A header (lowercase name).
    Header(String),
    /// A header holding `Bearer <credential>` (lowercase name).
    Bearer(String),
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

impl Source {
    /// Checks a configured source.
    pub fn from_config(c: &SourceConfig) -> Result<Source, String> {
        let (name, make): (&str, fn(String) -> Source) = match c {
            SourceConfig::Header(n) => (n, Source::Header),
            SourceConfig::Bearer(n) => (n, Source::Bearer),
            SourceConfig::Query(n) => (n, Source::Query),
            SourceConfig::Cookie(n) => (n, Source::Cookie),
        };
        check_name(name).map(make)
    }

    /// The raw value at this location, if present.
    pub fn read(&self, req: &Request<'_>) -> Option<String> {
        match self {
            Source::Header(h) => req.header(h),
            Source::Bearer(h) => req.header(h).as_deref().and_then(crate::bearer_credential),
            Source::Query(q) => {
                let query = req.query()?;
                query.split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k).as_deref() == Some(q.as_str())).then(|| percent_decode(v)).flatten()
                })
            }
            Source::Cookie(c) => cookie_headers(req).iter().find_map(|h| {
                h.split(';').find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k.trim() == c).then(|| v.trim().trim_matches('"').to_owned())
                })
            }),
        }
    }

    /// Removes the credential from the request. `Err` (a plugin fault) when the host
    /// refuses the change: the operator asked that the credential not go upstream.
    pub fn remove(&self, req: &mut Request<'_>) -> Result<(), String> {
        match self {
            Source::Header(h) | Source::Bearer(h) => {
                req.remove_header(h).map_err(|e| identity::refused("remove", h, e))
            }
            Source::Query(q) => {
                let Some(query) = req.query() else { return Ok(()) };
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
                        percent_decode(k).as_deref() != Some(q.as_str())
                    })
                    .collect();
                let path = req.path();
                let target = if kept.is_empty() { path } else { format!("{path}?{}", kept.join("&")) };
                req.set_path(&target).map_err(|_| format!("could not remove the query parameter `{q}`"))
            }
            Source::Cookie(c) => {
                let headers = cookie_headers(req);
                let kept: Vec<String> = headers
                    .iter()
                    .flat_map(|h| h.split(';'))
                    .map(str::trim)
                    .filter(|kv| !kv.is_empty() && kv.split_once('=').is_none_or(|(k, _)| k.trim() != c))
                    .map(str::to_owned)
                    .collect();
                if kept.is_empty() {
                    req.remove_header("cookie").map_err(|e| identity::refused("remove", "cookie", e))
                } else {
                    req.set_header("cookie", &kept.join("; "))
                        .map_err(|e| identity::refused("set", "cookie", e))
                }
            }
        }
    }
}

/// `name` lower-cased, if it is a valid header, parameter or cookie name (an HTTP
/// token).
pub fn check_name(name: &str) -> Result<String, String> {
    if !sluice_plugin_sdk::is_header_name(name) {
        return Err(format!("`{name}` is not a valid name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// Every `cookie` header (HTTP/2 clients may send one per cookie).
fn cookie_headers(req: &Request<'_>) -> Vec<String> {
    req.header_all("cookie").into_iter().filter_map(|v| String::from_utf8(v).ok()).collect()
}

/// Decodes `%XX` escapes and `+` (as a space); `None` for bad escapes or non-UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::FakeRequest;

    #[test]
    fn reads_and_removes_each_kind() {
        let q = Source::Query("api_key".into());
        let mut req = FakeRequest::new("GET", "/x?a=1&api_key=k%2By&b=2");
        assert_eq!(q.read(&req.as_request()).as_deref(), Some("k+y"));
        q.remove(&mut req.as_request()).unwrap();
        assert_eq!(req.query.as_deref(), Some("a=1&b=2"));

        let c = Source::Cookie("sid".into());
        let mut req = FakeRequest::new("GET", "/").with_header("cookie", "a=1; sid=abc; b=2");
        assert_eq!(c.read(&req.as_request()).as_deref(), Some("abc"));
        c.remove(&mut req.as_request()).unwrap();
        assert_eq!(req.header("cookie").as_deref(), Some("a=1; b=2"));

        let h = Source::Header("x-api-key".into());
        let mut req = FakeRequest::new("GET", "/").with_header("X-Api-Key", "k");
        assert_eq!(h.read(&req.as_request()).as_deref(), Some("k"));
        h.remove(&mut req.as_request()).unwrap();
        assert_eq!(req.header("x-api-key"), None);
    }

    #[test]
    fn bad_names_and_escapes() {
        assert!(Source::from_config(&SourceConfig::Header("bad header".into())).is_err());
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
    }
}
