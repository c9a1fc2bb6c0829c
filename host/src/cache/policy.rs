//! The rules of a shared HTTP cache (RFC 9111) that decide what is stored, for how
//! long, and when a stored response answers a request. Pure functions of headers and
//! times; the proxy applies them.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

/// The directives of a response's `Cache-Control` that a shared cache acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (unqualified: a qualified `no-cache="field"` is treated the same).
    pub no_cache: bool,
    /// `private`.
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// `max-age`.
    pub max_age: Option<Duration>,
    /// `s-maxage` (wins over `max-age` in a shared cache).
    pub s_maxage: Option<Duration>,
    /// `stale-while-revalidate` (RFC 5861).
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` (RFC 5861).
    pub stale_if_error: Option<Duration>,
}

impl Directives {
    /// The directives of every `Cache-Control` line in `headers`. Unknown directives
    /// are ignored; a malformed delta-seconds makes the response stale (`0`), as RFC
    /// 9111 §1.2.2 asks.
    pub fn of(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            let Ok(line) = line.to_str() else { continue };
            for part in line.split(',') {
                let (name, value) = match part.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (part.trim(), None),
                };
                let secs = || Some(Duration::from_secs(value.and_then(|v| v.parse().ok()).unwrap_or(0)));
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                    "max-age" => d.max_age = secs(),
                    "s-maxage" => d.s_maxage = secs(),
                    "stale-while-revalidate" => d.stale_while_revalidate = secs(),
                    "stale-if-error" => d.stale_if_error = secs(),
                    _ => {}
                }
            }
        }
        d
    }
}

/// A route's caching rules, from its config with defaults applied.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Freshness of a response that gives none.
    pub ttl: Option<Duration>,
    /// Upper bound on freshness.
    pub max_ttl: Duration,
    /// Default `stale-while-revalidate`.
    pub stale_while_revalidate: Duration,
    /// Default `stale-if-error`.
    pub stale_if_error: Duration,
    /// Statuses stored.
    pub statuses: Vec<StatusCode>,
    /// Store responses with `Set-Cookie`.
    pub cookies: bool,
    /// Requests with `Authorization` may use the cache.
    pub authorized: bool,
}

/// Why a response is not stored (for debugging; the proxy only logs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Its status is not among the route's `statuses`.
    Status,
    /// `Cache-Control: no-store` or `private`.
    Forbidden,
    /// It sets a cookie and the route does not store those.
    SetsCookie,
    /// `Vary: *`.
    VariesOnEverything,
    /// Neither the upstream nor the route gives it any freshness, and it has nothing
    /// to revalidate with.
    NoFreshness,
    /// The request carried `Authorization` and the response does not say it may be
    /// shared (`public`, `s-maxage` or `must-revalidate`), nor does the route.
    Authorized,
}

/// How a stored response ages: freshness and the stale windows, in seconds-precision
/// durations from the moment it was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Fresh for this long after it was generated (its `Age` counts against it).
    pub fresh_for: Duration,
    /// May be served stale while being refreshed, this long past freshness.
    pub stale_while_revalidate: Duration,
    /// May be served stale when the upstream fails, this long past freshness.
    pub stale_if_error: Duration,
    /// Always revalidated before use (`no-cache`).
    pub revalidate_always: bool,
}

impl Rules {
    /// Whether a response to a request with `authorized` (it carried `Authorization`)
    /// may be stored, and its lifetime if so.
    pub fn storable(
        &self,
        authorized: bool,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Lifetime, NotStored> {
        if !self.statuses.contains(&status) {
            return Err(NotStored::Status);
        }
        let d = Directives::of(headers);
        if d.no_store || d.private {
            return Err(NotStored::Forbidden);
        }
        if !self.cookies && headers.contains_key(header::SET_COOKIE) {
            return Err(NotStored::SetsCookie);
        }
        if vary_names(headers).is_none() {
            return Err(NotStored::VariesOnEverything);
        }
        if authorized && !self.authorized && !(d.public || d.s_maxage.is_some() || d.must_revalidate) {
            return Err(NotStored::Authorized);
        }
        let explicit = d.s_maxage.or(d.max_age).or_else(|| expires_in(headers));
        let has_validator = headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
        let fresh_for = match explicit.or(self.ttl) {
            Some(f) => f.min(self.max_ttl),
            None if has_validator => Duration::ZERO,
            None => return Err(NotStored::NoFreshness),
        };
        let stale = |given: Option<Duration>, default: Duration| {
            if d.must_revalidate { Duration::ZERO } else { given.unwrap_or(default) }
        };
        Ok(Lifetime {
            fresh_for,
            stale_while_revalidate: stale(d.stale_while_revalidate, self.stale_while_revalidate),
            stale_if_error: stale(d.stale_if_error, self.stale_if_error),
            revalidate_always: d.no_cache,
        })
    }
}

/// `Expires` minus `Date` (or now), when both parse; an invalid `Expires` means
/// already expired (RFC 9111 §5.3).
fn expires_in(headers: &HeaderMap) -> Option<Duration> {
    let expires = headers.get(header::EXPIRES)?;
    let Some(expires) = http_date(expires) else { return Some(Duration::ZERO) };
    let date = headers.get(header::DATE).and_then(http_date).unwrap_or_else(SystemTime::now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

fn http_date(v: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(v.to_str().ok()?).ok()
}

/// The header names a response varies on (lowercase), or `None` for `Vary: *`.
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for line in headers.get_all(header::VARY) {
        for name in line.to_str().unwrap_or("").split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes())
                && !names.contains(&n)
            {
                names.push(n);
            }
        }
    }
    Some(names)
}

/// The request's values of the headers in `names`, joined line by line, for matching
/// a stored variant (RFC 9111 §4.1; whitespace around commas normalised).
pub fn vary_values(request: &HeaderMap, names: &[HeaderName]) -> Vec<Option<String>> {
    names.iter().map(|n| vary_value(request, n)).collect()
}

/// The request's value of one `Vary` header, as [`vary_values`] gives it.
pub fn vary_value(request: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut all = request.get_all(name).iter().filter_map(|v| v.to_str().ok()).peekable();
    all.peek()?;
    let joined: Vec<&str> = all.flat_map(|v| v.split(',')).map(str::trim).collect();
    Some(joined.join(","))
}

/// The headers `headers` (a response's) varies on, each with the request's value: what
/// a stored variant is matched against. `None` for `Vary: *`.
pub fn vary_of(headers: &HeaderMap, request: &HeaderMap) -> Option<Vec<(HeaderName, Option<String>)>> {
    let names = vary_names(headers)?;
    Some(
        names
            .into_iter()
            .map(|n| {
                let value = vary_value(request, &n);
                (n, value)
            })
            .collect(),
    )
}

/// Whether the request is one the cache may answer or fill: `GET` or `HEAD`, no body,
/// no range, no upgrade.
pub fn request_cacheable(method: &Method, headers: &HeaderMap, has_body: bool) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && !has_body
        && !headers.contains_key(header::RANGE)
        && !headers.contains_key(header::UPGRADE)
}

/// Whether the client's own conditional headers are satisfied by a stored response
/// with these headers, so it gets `304 Not Modified` (RFC 9110 §13.2.2: `If-None-Match`
/// with weak comparison wins over `If-Modified-Since`).
pub fn client_not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else { return false };
        return inm.trim() == "*" || inm.split(',').any(|t| weak_eq(t.trim(), etag.trim()));
    }
    let since = request.get(header::IF_MODIFIED_SINCE).and_then(http_date);
    let modified = stored.get(header::LAST_MODIFIED).and_then(http_date);
    matches!((since, modified), (Some(s), Some(m)) if m <= s)
}

fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

/// The headers a `304` answer from the cache carries (RFC 9110 §15.4.5).
pub const NOT_MODIFIED_HEADERS: [HeaderName; 6] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
];

/// Headers of a `304` from the upstream that do not replace the stored ones.
pub fn keeps_stored(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::CONTENT_ENCODING
        || name == header::TRANSFER_ENCODING
        || name == header::CONTENT_RANGE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            ttl: None,
            max_ttl: Duration::from_secs(86_400),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            statuses: vec![StatusCode::OK, StatusCode::NOT_FOUND],
            cookies: false,
            authorized: false,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn directives_are_read_across_lines_and_case() {
        let d = Directives::of(&headers(&[
            ("cache-control", "Public, MAX-AGE=60"),
            ("cache-control", "s-maxage=\"120\", stale-while-revalidate=30, must-revalidate"),
        ]));
        assert!(d.public && d.must_revalidate && !d.no_store);
        assert_eq!(d.max_age, Some(Duration::from_secs(60)));
        assert_eq!(d.s_maxage, Some(Duration::from_secs(120)));
        assert_eq!(d.stale_while_revalidate, Some(Duration::from_secs(30)));
        assert_eq!(
            Directives::of(&headers(&[("cache-control", "max-age=soon")])).max_age,
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn freshness_comes_from_s_maxage_then_max_age_then_expires_then_the_route() {
        let r = rules();
        let life = |h: &[(&str, &str)]| r.storable(false, StatusCode::OK, &headers(h));
        assert_eq!(
            life(&[("cache-control", "max-age=10, s-maxage=20")]).unwrap().fresh_for,
            Duration::from_secs(20)
        );
        assert_eq!(life(&[("cache-control", "max-age=10")]).unwrap().fresh_for, Duration::from_secs(10));
        let expires =
            [("date", "Thu, 03 Dec 2026 06:00:00 GMT"), ("expires", "Thu, 03 Dec 2026 06:01:30 GMT")];
        assert_eq!(life(&expires).unwrap().fresh_for, Duration::from_secs(90));
        assert_eq!(life(&[("expires", "0")]).unwrap().fresh_for, Duration::ZERO);
        assert_eq!(life(&[]), Err(NotStored::NoFreshness));
        assert_eq!(life(&[("etag", "\"v1\"")]).unwrap().fresh_for, Duration::ZERO);
        let with_ttl =
            Rules { ttl: Some(Duration::from_secs(5)), max_ttl: Duration::from_secs(7), ..rules() };
        assert_eq!(
            with_ttl.storable(false, StatusCode::OK, &headers(&[])).unwrap().fresh_for,
            Duration::from_secs(5)
        );
        let capped = with_ttl.storable(false, StatusCode::OK, &headers(&[("cache-control", "max-age=600")]));
        assert_eq!(capped.unwrap().fresh_for, Duration::from_secs(7));
    }

    #[test]
    fn what_a_shared_cache_must_not_store() {
        let r = Rules { ttl: Some(Duration::from_secs(60)), ..rules() };
        let no = |auth: bool, status: u16, h: &[(&str, &str)]| {
            r.storable(auth, StatusCode::from_u16(status).unwrap(), &headers(h)).err()
        };
        assert_eq!(no(false, 500, &[]), Some(NotStored::Status));
        assert_eq!(no(false, 200, &[("cache-control", "no-store")]), Some(NotStored::Forbidden));
        assert_eq!(no(false, 200, &[("cache-control", "private, max-age=60")]), Some(NotStored::Forbidden));
        assert_eq!(no(false, 200, &[("set-cookie", "a=b")]), Some(NotStored::SetsCookie));
        assert_eq!(no(false, 200, &[("vary", "accept, *")]), Some(NotStored::VariesOnEverything));
        assert_eq!(no(true, 200, &[]), Some(NotStored::Authorized));
        assert_eq!(no(true, 200, &[("cache-control", "public")]), None);
        assert_eq!(no(false, 404, &[]), None);
        let cookies = Rules { cookies: true, ..r.clone() };
        assert!(cookies.storable(false, StatusCode::OK, &headers(&[("set-cookie", "a=b")])).is_ok());
    }

    #[test]
    fn stale_windows_default_from_the_route_and_vanish_under_must_revalidate() {
        let r = Rules {
            stale_while_revalidate: Duration::from_secs(9),
            stale_if_error: Duration::from_secs(8),
            ..rules()
        };
        let life = r
            .storable(false, StatusCode::OK, &headers(&[("cache-control", "max-age=1, stale-if-error=100")]))
            .unwrap();
        assert_eq!(
            (life.stale_while_revalidate, life.stale_if_error),
            (Duration::from_secs(9), Duration::from_secs(100))
        );
        let strict = r
            .storable(
                false,
                StatusCode::OK,
                &headers(&[("cache-control", "max-age=1, must-revalidate, stale-if-error=100")]),
            )
            .unwrap();
        assert_eq!((strict.stale_while_revalidate, strict.stale_if_error), (Duration::ZERO, Duration::ZERO));
        assert!(
            r.storable(false, StatusCode::OK, &headers(&[("cache-control", "no-cache, max-age=60")]))
                .unwrap()
                .revalidate_always
        );
    }

    #[test]
    fn vary_values_normalise_lists_and_tell_absence_apart() {
        let names = vary_names(&headers(&[
            ("vary", "Accept-Encoding, accept-language"),
            ("vary", "accept-encoding"),
        ]))
        .unwrap();
        assert_eq!(names, vec![header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE]);
        let a = vary_values(&headers(&[("accept-encoding", "gzip,  br")]), &names);
        let b = vary_values(&headers(&[("accept-encoding", "gzip"), ("accept-encoding", "br")]), &names);
        assert_eq!(a, b);
        assert_eq!(a, vec![Some("gzip,br".to_owned()), None]);
        assert_ne!(
            a,
            vary_values(&headers(&[("accept-encoding", "gzip, br"), ("accept-language", "")]), &names)
        );
    }

    #[test]
    fn client_conditionals() {
        let stored = headers(&[("etag", "W/\"v1\""), ("last-modified", "Thu, 03 Dec 2026 06:00:00 GMT")]);
        assert!(client_not_modified(&headers(&[("if-none-match", "\"v0\", \"v1\"")]), &stored));
        assert!(client_not_modified(&headers(&[("if-none-match", "*")]), &stored));
        assert!(!client_not_modified(&headers(&[("if-none-match", "\"v2\"")]), &stored));
        // If-None-Match present: If-Modified-Since is not looked at.
        let both =
            headers(&[("if-none-match", "\"v2\""), ("if-modified-since", "Thu, 03 Dec 2026 07:00:00 GMT")]);
        assert!(!client_not_modified(&both, &stored));
        assert!(client_not_modified(
            &headers(&[("if-modified-since", "Thu, 03 Dec 2026 06:00:00 GMT")]),
            &stored
        ));
        assert!(!client_not_modified(
            &headers(&[("if-modified-since", "Thu, 03 Dec 2026 05:59:59 GMT")]),
            &stored
        ));
        assert!(!client_not_modified(&headers(&[]), &stored));
    }

    #[test]
    fn which_requests_may_use_the_cache() {
        let h = HeaderMap::new();
        assert!(request_cacheable(&Method::GET, &h, false));
        assert!(request_cacheable(&Method::HEAD, &h, false));
        assert!(!request_cacheable(&Method::POST, &h, false));
        assert!(!request_cacheable(&Method::GET, &h, true));
        assert!(!request_cacheable(&Method::GET, &headers(&[("range", "bytes=0-1")]), false));
    }
}
