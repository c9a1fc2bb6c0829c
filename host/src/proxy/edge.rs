//! Admission at the edge, before routing: one validated authority, a normalised path
//! and no header names that mean one thing here and another upstream. What routes
//! match is then exactly what plugins see and what the upstream receives.
//!
//! - **Authority.** An absolute-form target (`GET http://a.test/x`) or the HTTP/2
//!   `:authority` decides the host; otherwise the one `Host` header does. Two `Host`
//!   headers, none on HTTP/1.1, userinfo (`a@b`), characters outside RFC 3986's
//!   reg-name, a non-numeric port, or an HTTP/2 `host` that differs from `:authority`
//!   are `400`. A trailing dot is dropped (`a.test.` is `a.test`). The request then
//!   carries that authority as its only `Host` and an origin-form target, so routing,
//!   plugins and the upstream all read the same value (RFC 9112 §3.2.2).
//! - **Path.** See [`normalize_path`].
//! - **Underscores.** Header names with `_` are dropped, refused or kept, as the
//!   listener says.

use std::borrow::Cow;
use std::fmt::Write as _;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Version};

use crate::config::{EncodedSlashes, PathsConfig, UnderscoreHeaders};
use crate::error::ProxyError;
use crate::listener::ListenerSpec;

/// Checks and rewrites the request's authority, path and header names in place.
pub fn admit<B>(req: &mut Request<B>, listener: &ListenerSpec) -> Result<(), ProxyError> {
    authority(req)?;
    path(req, &listener.paths)?;
    underscores(req, listener.underscore_headers)
}

fn authority<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let chosen: &[u8] = match (req.uri().authority(), host_header) {
        (Some(a), Some(h)) if req.version() == Version::HTTP_2 => {
            if !a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) {
                return Err(ProxyError::BadRequest("the host header differs from :authority"));
            }
            a.as_str().as_bytes()
        }
        // Absolute form: the target's authority wins and Host is replaced.
        (Some(a), _) => a.as_str().as_bytes(),
        (None, Some(h)) => h.as_bytes(),
        (None, None) if req.version() == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest("an HTTP/1.1 request needs a Host header"));
        }
        (None, None) => return Ok(()),
    };
    let canonical = canonical_authority(chosen)?;
    let value = match canonical {
        Cow::Borrowed(b) if Some(b) == host_header.map(HeaderValue::as_bytes) => None,
        c => Some(HeaderValue::from_bytes(&c).map_err(|_| ProxyError::BadRequest("invalid host"))?),
    };
    if let Some(v) = value {
        req.headers_mut().insert(header::HOST, v);
    }
    // Origin form from here on. (An authority-form target, CONNECT's, has no path and
    // is left alone: it matches no route.)
    if req.uri().authority().is_some()
        && let Some(pq) = req.uri().path_and_query().cloned()
    {
        *req.uri_mut() = Uri::from(pq);
    }
    Ok(())
}

/// Validates `host[:port]` (RFC 3986 reg-name or IP literal) and drops a trailing
/// dot from the name.
fn canonical_authority(raw: &[u8]) -> Result<Cow<'_, [u8]>, ProxyError> {
    let bad = |why| Err(ProxyError::BadRequest(why));
    let (host, port) = if raw.first() == Some(&b'[') {
        let Some(end) = raw.iter().position(|&b| b == b']') else { return bad("invalid host") };
        let literal = &raw[1..end];
        if literal.is_empty() || !literal.iter().all(|b| b.is_ascii_hexdigit() || b":.".contains(b)) {
            return bad("invalid host");
        }
        let rest = &raw[end + 1..];
        match rest.split_first() {
            None => (&raw[..=end], None),
            Some((b':', port)) => (&raw[..=end], Some(port)),
            Some(_) => return bad("invalid host"),
        }
    } else {
        match raw.iter().rposition(|&b| b == b':') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        }
    };
    if host.is_empty() {
        return bad("empty host");
    }
    if raw.first() != Some(&b'[') && !host.iter().all(|&b| REG_NAME[usize::from(b)]) {
        return bad("invalid host");
    }
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit))
    {
        return bad("invalid port in host");
    }
    match host.strip_suffix(b".") {
        Some(name) if !name.is_empty() && !name.ends_with(b".") => {
            let mut out = name.to_vec();
            if let Some(p) = port {
                out.push(b':');
                out.extend_from_slice(p);
            }
            Ok(Cow::Owned(out))
        }
        Some(_) => bad("invalid host"),
        None => Ok(Cow::Borrowed(raw)),
    }
}

/// The bytes of an RFC 3986 reg-name: unreserved, sub-delims and `%`. A table: the
/// list searched byte by byte cost a `memchr` call per dot of every request's host.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,;=%";
    let mut i = 0;
    while i < others.len() {
        t[others[i] as usize] = true;
        i += 1;
    }
    t
};

fn path<B>(req: &mut Request<B>, cfg: &PathsConfig) -> Result<(), ProxyError> {
    let Some(pq) = req.uri().path_and_query() else { return Ok(()) };
    let normalized = match normalize_path(pq.path(), cfg)? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(p) => p,
    };
    let mut target = normalized;
    if let Some(q) = pq.query() {
        target.push('?');
        target.push_str(q);
    }
    let pq = PathAndQuery::try_from(target).map_err(|_| ProxyError::BadRequest("invalid path"))?;
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.path_and_query = Some(pq);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid path"))?;
    Ok(())
}

/// The path routes match and the upstream receives:
///
/// 1. escapes are checked (`%` and two hex digits, else `400`); escapes of unreserved
///    characters are decoded (`%7E` → `~`, `%2e` → `.`), others kept with uppercase
///    hex; `%2F`, `%5C` and a raw `\` are refused (or, with `encoded_slashes: keep`,
///    kept encoded, a raw `\` as `%5C`);
/// 2. runs of `/` become one (`merge_slashes`);
/// 3. `.` and `..` segments are removed (RFC 3986 §5.2.4), never climbing above `/`.
///
/// Paths not starting with `/` (`*`) are left alone; with `normalize: false` only the
/// slash merging applies. Borrowed (no allocation) when nothing changes.
pub fn normalize_path<'a>(path: &'a str, cfg: &PathsConfig) -> Result<Cow<'a, str>, ProxyError> {
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    let b = path.as_bytes();
    let dotty = b.windows(2).any(|w| w[0] == b'/' && w[1] == b'.');
    let escapes = b.iter().any(|&c| c == b'%' || c == b'\\');
    let doubled = cfg.merge_slashes && b.windows(2).any(|w| w == b"//");
    if !(doubled || cfg.normalize && (dotty || escapes)) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = if cfg.normalize { decode_unreserved(path, cfg.encoded_slashes)? } else { path.to_owned() };

    // Segment by segment: merge empty ones and resolve dot segments.
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." if cfg.normalize => {
                if i == last {
                    out.push("");
                }
            }
            ".." if cfg.normalize => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            "" if cfg.merge_slashes && i != last => {}
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if result.is_empty() {
        result.push('/');
    }
    Ok(if result == path { Cow::Borrowed(path) } else { Cow::Owned(result) })
}

/// Decodes escapes of unreserved characters, uppercases the others and handles
/// slashes as `slashes` says.
fn decode_unreserved(path: &str, slashes: EncodedSlashes) -> Result<String, ProxyError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let (Some(hi), Some(lo)) =
                    (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex))
                else {
                    return Err(ProxyError::BadRequest("invalid percent-encoding in the path"));
                };
                let byte = (hi * 16 + lo) as u8;
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(byte as char);
                } else if (byte == b'/' || byte == b'\\') && slashes == EncodedSlashes::Reject {
                    return Err(ProxyError::BadRequest("encoded slash or backslash in the path"));
                } else {
                    let _ = write!(out, "%{byte:02X}");
                }
                i += 3;
            }
            b'\\' if slashes == EncodedSlashes::Reject => {
                return Err(ProxyError::BadRequest("backslash in the path"));
            }
            b'\\' => {
                out.push_str("%5C");
                i += 1;
            }
            _ => {
                // Copy the run up to the next byte of interest (keeps UTF-8 whole).
                let end = b[i..].iter().position(|&c| c == b'%' || c == b'\\').map_or(b.len(), |n| i + n);
                out.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    Ok(out)
}

fn underscores<B>(req: &mut Request<B>, action: UnderscoreHeaders) -> Result<(), ProxyError> {
    // A plain loop: names are short, and `str::contains` is a `memchr` call per name.
    let underscored = |k: &http::HeaderName| k.as_str().bytes().any(|b| b == b'_');
    if action == UnderscoreHeaders::Allow || !req.headers().keys().any(underscored) {
        return Ok(());
    }
    if action == UnderscoreHeaders::Reject {
        return Err(ProxyError::BadRequest("header name with an underscore"));
    }
    let names: Vec<_> = req.headers().keys().filter(|k| underscored(k)).cloned().collect();
    for name in names {
        req.headers_mut().remove(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, ProxyError> {
        normalize_path(p, &PathsConfig::default()).map(Cow::into_owned)
    }

    #[test]
    fn dot_segments_slashes_and_unreserved_escapes_are_normalised() {
        for (raw, want) in [
            ("/a/b", "/a/b"),
            ("/big/../private/secret.txt", "/private/secret.txt"),
            ("/big/%2e%2e/private", "/private"),
            ("/big/%2E%2e/private", "/private"),
            ("/a/./b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/../../x", "/x"),
            ("//private///x", "/private/x"),
            ("/%7euser/%41", "/~user/A"),
            ("/a%20b/%c3%a9", "/a%20b/%C3%A9"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/..b/c", "/a/..b/c"),
            ("/", "/"),
            ("/..", "/"),
        ] {
            assert_eq!(norm(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn encoded_slashes_and_backslashes_are_refused_or_kept() {
        for raw in ["/a%2fb", "/a%2F..%2Fprivate", "/a%5cb", "/a\\..\\private", "/a%zz", "/a%2"] {
            assert!(norm(raw).is_err(), "{raw}");
        }
        let keep = PathsConfig { encoded_slashes: EncodedSlashes::Keep, ..PathsConfig::default() };
        assert_eq!(normalize_path("/a%2fb/..", &keep).unwrap(), "/");
        assert_eq!(normalize_path("/a%2fb", &keep).unwrap(), "/a%2Fb");
        assert_eq!(normalize_path("/a\\b", &keep).unwrap(), "/a%5Cb");
    }

    #[test]
    fn normalisation_can_be_turned_off() {
        let off = PathsConfig { normalize: false, merge_slashes: false, ..PathsConfig::default() };
        assert_eq!(normalize_path("/a/../b//c", &off).unwrap(), "/a/../b//c");
        let merge_only = PathsConfig { normalize: false, ..PathsConfig::default() };
        assert_eq!(normalize_path("/a/../b//c", &merge_only).unwrap(), "/a/../b/c");
    }

    #[test]
    fn authorities_are_validated_and_lose_a_trailing_dot() {
        let ok = |raw: &str| {
            canonical_authority(raw.as_bytes()).map(|c| String::from_utf8(c.into_owned()).unwrap())
        };
        assert_eq!(ok("vhost.test").unwrap(), "vhost.test");
        assert_eq!(ok("vhost.test.").unwrap(), "vhost.test");
        assert_eq!(ok("vhost.test.:8080").unwrap(), "vhost.test:8080");
        assert_eq!(ok("[::1]:8080").unwrap(), "[::1]:8080");
        for bad in ["vhost.test@other", "a b", "x:abc", "", ":80", "x:", "[::1", "[zz]", "a..", "x:123456"] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
        // Every byte of a name, one at a time: exactly RFC 3986's reg-name bytes pass.
        for b in 0..=u8::MAX {
            let reg_name = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
            let raw = [b'a', b, b'z'];
            assert_eq!(canonical_authority(&raw).is_ok(), reg_name, "byte {b:#04x}");
        }
    }
}
