//! Origin patterns: exact origins and `scheme://*.domain[:port]` wildcards.

/// One entry of `allow_origins` other than `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    /// The exact host, or for a wildcard the suffix after `*` (`.example.com`).
    host: String,
    wildcard: bool,
    /// The port as written (`None`: the scheme's default).
    port: Option<String>,
}

/// Splits `scheme://host[:port]` (lower-cased); `None` when it is not shaped so.
fn split(origin: &str) -> Option<(String, String, Option<String>)> {
    let lower = origin.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    if scheme.is_empty() || rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    // An IPv6 literal keeps its colons inside brackets.
    let (host, port) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(rest[i + 1..].to_owned())),
        _ => (rest, None),
    };
    if host.is_empty()
        || port.as_deref().is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Some((scheme.to_owned(), host.to_owned(), port))
}

impl OriginPattern {
    /// Parses `https://app.example.com`, `http://localhost:3000` or
    /// `https://*.example.com` (with an optional port). The literal `null` origin is
    /// accepted as an exact origin.
    pub fn parse(s: &str) -> Result<OriginPattern, String> {
        if s.eq_ignore_ascii_case("null") {
            return Ok(OriginPattern {
                scheme: String::new(),
                host: "null".into(),
                wildcard: false,
                port: None,
            });
        }
        let bad = || {
            format!(
                "`{s}` is not an origin or origin pattern: expected `scheme://host[:port]` without a path or \
                 trailing `/`, like `https://app.example.com` or `https://*.example.com`"
            )
        };
        let (scheme, host, port) = split(s).ok_or_else(bad)?;
        let (wildcard, host) = match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 && !suffix.contains('*') => {
                (true, suffix.to_owned())
            }
            Some(_) => {
                return Err(format!(
                    "`{s}`: `*` may only stand for whole leftmost labels, as in `https://*.example.com`"
                ));
            }
            None if host.contains('*') => {
                return Err(format!(
                    "`{s}`: `*` may only stand for whole leftmost labels, as in `https://*.example.com`"
                ));
            }
            None => (false, host),
        };
        Ok(OriginPattern { scheme, host, wildcard, port })
    }

    /// Whether the request's `Origin` matches.
    pub fn matches(&self, origin: &str) -> bool {
        if self.host == "null" && self.scheme.is_empty() {
            return origin.eq_ignore_ascii_case("null");
        }
        let Some((scheme, host, port)) = split(origin) else { return false };
        if scheme != self.scheme || port != self.port {
            return false;
        }
        if !self.wildcard {
            return host == self.host;
        }
        match host.strip_suffix(self.host.as_str()) {
            Some(sub) => {
                !sub.is_empty() && !sub.starts_with('.') && !sub.ends_with('.') && !sub.contains(['[', ']'])
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_match_whole_and_case_insensitively() {
        let p = OriginPattern::parse("https://App.example.com").unwrap();
        assert!(p.matches("https://app.example.com"));
        assert!(!p.matches("http://app.example.com"));
        assert!(!p.matches("https://app.example.com:8443"));
        assert!(!p.matches("https://app.example.com.evil.net"));
        let p = OriginPattern::parse("http://localhost:3000").unwrap();
        assert!(p.matches("http://localhost:3000"));
        assert!(!p.matches("http://localhost:3001"));
        assert!(OriginPattern::parse("null").unwrap().matches("null"));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let p = OriginPattern::parse("https://*.example.com").unwrap();
        assert!(p.matches("https://a.example.com"));
        assert!(p.matches("https://a.b.example.com"));
        assert!(!p.matches("https://example.com"));
        assert!(!p.matches("https://evilexample.com"));
        assert!(!p.matches("https://a.example.com.evil.net"));
        assert!(!p.matches("http://a.example.com"));
        assert!(!p.matches("https://a.example.com:444"));
        assert!(!p.matches("null"));
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for bad in [
            "example.com",
            "https://example.com/",
            "https://*example.com",
            "https://a.*.com",
            "https://x:",
            "*.example.com",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
