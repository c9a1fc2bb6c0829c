//! Header work at the edge: hop-by-hop stripping, forwarding headers and request ids.

use std::fmt::Write as _;
use std::io::Write as _;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::listener::{ConnInfo, RequestIdSpec};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// What one pass over a request's header names found. The steps after it look up or
/// remove (hashing the name, each time) only what is there: most requests carry
/// none of these, and a pass of comparisons costs less than one lookup.
#[derive(Debug, Default, Clone, Copy)]
pub struct Found {
    /// A hop-by-hop header, `Upgrade` or `HTTP2-Settings`.
    pub hop_by_hop: bool,
    /// `Upgrade`.
    pub upgrade: bool,
    /// `Expect` (hyper has answered it; it is not forwarded).
    pub expect: bool,
    /// A forwarding header (`X-Forwarded-*`, `Forwarded`).
    pub forwarding: bool,
}

impl Found {
    /// One pass over `headers`' names.
    pub fn scan(headers: &HeaderMap) -> Found {
        let mut found = Found::default();
        for n in headers.keys() {
            found.upgrade |= n == header::UPGRADE;
            found.hop_by_hop |= is_stripped(n);
            found.expect |= n == header::EXPECT;
            found.forwarding |= is_forwarding(n);
        }
        found
    }
}

/// A name [`strip_hop_by_hop`] may remove: hop-by-hop, or `Upgrade` (kept only for an
/// allowed upgrade).
fn is_stripped(n: &HeaderName) -> bool {
    n == header::UPGRADE || is_hop_by_hop(n)
}

/// A name of [`HOP_BY_HOP`] or `HTTP2-Settings`. Matched as text: `contains` on the
/// const array built and dropped the array's seven names for every name checked
/// (273 instructions per request, BENCHMARKS.md P1); a test keeps the two lists equal.
fn is_hop_by_hop(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "http2-settings"
    )
}

/// Removes hop-by-hop headers, including any named in `Connection`. When `upgrade` is
/// true the `Upgrade` header survives and `Connection: upgrade` is set again, so a
/// WebSocket handshake passes through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names (no hashing) finds whether there is anything to strip:
    // most messages have nothing, and each removal hashes its name.
    let any = headers.keys().any(is_stripped);
    strip_found(headers, upgrade, any);
}

/// [`strip_hop_by_hop`] with the pass over the names already made ([`Found`]).
pub fn strip_found(headers: &mut HeaderMap, upgrade: bool, any: bool) {
    if any {
        strip_present(headers, upgrade);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// [`strip_hop_by_hop`] once some hop-by-hop header is known to be there.
fn strip_present(headers: &mut HeaderMap, upgrade: bool) {
    // Only allocate when `Connection` names headers beyond the usual tokens.
    let names_others = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| !(t.eq_ignore_ascii_case("keep-alive") || t.eq_ignore_ascii_case("close") || t.is_empty()));
    if names_others {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // `Proxy-Authorization` is consumed by a proxy; we are the gateway, not the
    // client's forward proxy, so it is passed along like any end-to-end header.
    // `HTTP2-Settings` belongs to an h2c upgrade (RFC 7540 §3.2.1): only an upgrade
    // the route allows keeps it.
    if !upgrade {
        headers.remove(HTTP2_SETTINGS);
        headers.remove(header::UPGRADE);
    }
}

const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Whether every protocol the request's `Upgrade` offers is in `allowed` (lowercase
/// names, compared without a `/version` suffix: `websocket`, `h2c`).
pub fn upgrade_allowed(headers: &HeaderMap, allowed: &[Box<str>]) -> bool {
    let mut offered = false;
    for value in headers.get_all(header::UPGRADE) {
        let Ok(value) = value.to_str() else { return false };
        for protocol in value.split(',') {
            let name = protocol.trim().split('/').next().unwrap_or_default();
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                return false;
            }
            offered = true;
        }
    }
    offered
}

/// Whether a request asks for a protocol upgrade (HTTP/1.1 `Connection: upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A forwarding header, matched as text (as [`is_hop_by_hop`] is).
fn is_forwarding(n: &HeaderName) -> bool {
    matches!(n.as_str(), "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "forwarded")
}

/// Adds `X-Forwarded-*` and/or `Forwarded` as the listener is configured, first
/// dropping client-sent ones unless they are trusted. `present`: whether the request
/// has any ([`Found::forwarding`]); without any, nothing is removed or read.
pub fn add_forwarded(headers: &mut HeaderMap, conn: &ConnInfo, host: Option<&HeaderValue>, present: bool) {
    let cfg = &conn.listener.forwarded;
    if present && !cfg.trust_incoming {
        headers.remove(&X_FORWARDED_FOR);
        headers.remove(&X_FORWARDED_PROTO);
        headers.remove(&X_FORWARDED_HOST);
        headers.remove(header::FORWARDED);
    }
    // Earlier hops' values, to extend: there are some only when the client sent them
    // and they are trusted.
    let earlier = present && cfg.trust_incoming;
    // Room for what is added below, in one growth of the map at most.
    headers.reserve(4);
    let proto = if conn.tls { "https" } else { "http" };
    let ip = conn.peer.ip();
    if cfg.x_forwarded {
        let prev = if earlier { headers.get(&X_FORWARDED_FOR) } else { None };
        let xff = match prev.and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.is_empty() => HeaderValue::from_str(&format!("{prev}, {ip}")).ok(),
            // The connection's, written once for all its requests.
            _ => Some(conn.peer_ip.clone()),
        };
        if let Some(v) = xff {
            headers.insert(X_FORWARDED_FOR, v);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        // The request's own value, shared rather than copied.
        if let Some(h) = host.filter(|h| h.to_str().is_ok()) {
            headers.insert(X_FORWARDED_HOST, h.clone());
        }
    }
    if cfg.forwarded {
        let mut elem = String::with_capacity(64);
        match ip {
            std::net::IpAddr::V4(v4) => {
                let _ = write!(elem, "for={v4}");
            }
            std::net::IpAddr::V6(v6) => {
                let _ = write!(elem, "for=\"[{v6}]\"");
            }
        }
        let _ = write!(elem, ";proto={proto}");
        if let Some(h) = host
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        {
            let _ = write!(elem, ";host=\"{h}\"");
        }
        let prev = if earlier { headers.get(header::FORWARDED) } else { None };
        let value = match prev.and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.is_empty() => format!("{prev}, {elem}"),
            _ => elem,
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(header::FORWARDED, v);
        }
    }
}

/// `ip` as a header value (`X-Forwarded-For`'s), made once per client connection
/// ([`ConnInfo::peer_ip`]).
pub fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    let mut buf = [0u8; 48];
    let len = ip_text(ip, &mut buf);
    // Digits, dots, colons and hex digits: always a valid value.
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("unknown"))
}

/// `ip` as text into `buf`, returning its length: IPv4 by hand (the formatter took
/// ~1,000 instructions, 2.6% of a proxied request's, BENCHMARKS.md P1), IPv6 through
/// it.
fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; 48]) -> usize {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        std::net::IpAddr::V6(_) => {
            let mut w = &mut buf[..];
            let _ = write!(w, "{ip}");
            48 - w.len()
        }
    }
}

/// The request's id: the client's, when trusted and well formed, else a new one.
pub fn request_id(headers: &HeaderMap, spec: &RequestIdSpec) -> HeaderValue {
    if spec.trust_incoming
        && let Some(v) = headers.get(&spec.header)
        && (1..=128).contains(&v.len())
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    new_request_id()
}

/// A new random 128-bit id, as 32 lowercase hex digits.
///
/// The digits are the owner of their `Bytes`: one allocation, and the request's and
/// the response's copies of the id are reference counts. (From a slice, the value was
/// a vector that its first clone turned into a shared one: two allocations.)
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..);
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id)).expect("hex is a valid header value")
}

/// The request's host without port: the URI authority (HTTP/2, absolute-form) or
/// the `Host` header.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    host_of(uri, headers.get(header::HOST))
}

/// [`request_host`] with the `Host` header already looked up.
pub fn host_of<'a>(uri: &'a http::Uri, host: Option<&'a HeaderValue>) -> Option<&'a str> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => host?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

fn strip_port(authority: &str) -> &str {
    // Plain byte loops: authorities are short, and `rsplit_once`/`split_once` went
    // through the library's general searches (~270 instructions per request).
    let start = authority.bytes().rposition(|b| b == b'@').map_or(0, |i| i + 1);
    let host = &authority[start..];
    let end = if host.starts_with('[') {
        host.bytes().position(|b| b == b']').map_or(host.len(), |i| i + 1)
    } else {
        host.bytes().position(|b| b == b':').unwrap_or(host.len())
    };
    // Every cut is next to an ASCII byte, so on a character boundary.
    &host[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    /// The names matched as text are exactly the lists' names, and the one pass
    /// finds each kind.
    #[test]
    fn the_matched_names_are_the_lists_names() {
        for n in HOP_BY_HOP.iter().chain([&HTTP2_SETTINGS]) {
            assert!(is_hop_by_hop(n) && !is_forwarding(n), "{n}");
        }
        for n in [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST, header::FORWARDED] {
            assert!(is_forwarding(&n) && !is_hop_by_hop(&n), "{n}");
        }
        let others =
            ["host", "upgrade", "expect", "x-forwarded", "x-forwarded-port", "t", "tes", "connections"];
        for n in others.map(HeaderName::from_static) {
            assert!(!is_hop_by_hop(&n) && !is_forwarding(&n), "{n}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        let f = Found::scan(&h);
        assert!(!(f.hop_by_hop || f.upgrade || f.expect || f.forwarding), "{f:?}");
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        let f = Found::scan(&h);
        assert!(f.hop_by_hop && f.upgrade && f.expect && f.forwarding, "{f:?}");
        h.remove(header::UPGRADE);
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        let f = Found::scan(&h);
        assert!(f.hop_by_hop && !f.upgrade, "{f:?}");
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_stripped() {
        let names = HOP_BY_HOP.into_iter().chain([header::UPGRADE, HTTP2_SETTINGS]);
        for name in names {
            let mut h = HeaderMap::new();
            h.insert("x-keep", HeaderValue::from_static("1"));
            h.insert(name.clone(), HeaderValue::from_static("v"));
            strip_hop_by_hop(&mut h, false);
            assert_eq!(h.keys().collect::<Vec<_>>(), ["x-keep"], "{name}");
        }
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn only_listed_upgrades_are_allowed_and_h2c_settings_never_leak() {
        let allowed: Vec<Box<str>> = vec!["websocket".into()];
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade, HTTP2-Settings"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("http2-settings", HeaderValue::from_static("AAMAAABkAAQAAP__"));
        assert!(wants_upgrade(&h) && !upgrade_allowed(&h, &allowed));
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(upgrade_allowed(&h, &allowed));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket, h2c"));
        assert!(!upgrade_allowed(&h, &allowed));
        let mut plain = HeaderMap::new();
        plain.insert("http2-settings", HeaderValue::from_static("AAMAAABkAAQAAP__"));
        strip_hop_by_hop(&mut plain, false);
        assert!(plain.is_empty());
    }

    #[test]
    fn host_without_port() {
        let uri: http::Uri = "/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("Example.com:8080"));
        assert_eq!(request_host(&uri, &h), Some("Example.com"));
        h.insert(header::HOST, HeaderValue::from_static("[::1]:8080"));
        assert_eq!(request_host(&uri, &h), Some("[::1]"));
        let uri: http::Uri = "http://api.test/x".parse().unwrap();
        assert_eq!(request_host(&uri, &h), Some("api.test"));
        for (authority, host) in [
            ("a.test", "a.test"),
            ("user@a.test:81", "a.test"),
            ("u@v@a.test", "a.test"),
            ("[::1]", "[::1]"),
            ("[::1", "[::1"),
            ("", ""),
            (":80", ""),
            ("é.test:1", "é.test"),
        ] {
            assert_eq!(strip_port(authority), host, "{authority}");
        }
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let spec = RequestIdSpec { header: HeaderName::from_static("x-request-id"), trust_incoming: true };
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h, &spec), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_eq!(request_id(&h, &spec).len(), 32);
    }

    #[test]
    fn addresses_are_written_as_the_formatter_writes_them() {
        let samples = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "1.22.3.44",
            "127.0.0.1",
            "::1",
            "::ffff:192.0.2.1",
            "2001:db8:85a3::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ];
        for text in samples {
            let ip: std::net::IpAddr = text.parse().unwrap();
            let mut buf = [0u8; 48];
            let len = ip_text(ip, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), ip.to_string());
        }
        for octet in 0..=255u8 {
            let ip = std::net::IpAddr::from([octet, octet / 3, 255 - octet, octet % 10]);
            let mut buf = [0u8; 48];
            let len = ip_text(ip, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn new_request_ids_are_128_random_bits_in_lowercase_hex() {
        let ids: Vec<HeaderValue> = (0..64).map(|_| new_request_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{id:?}");
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Every digit position takes more than one value: no nibble is lost.
        for i in 0..32 {
            let seen: std::collections::HashSet<u8> = ids.iter().map(|id| id.as_bytes()[i]).collect();
            assert!(seen.len() > 1, "digit {i} never changes");
        }
    }
}
