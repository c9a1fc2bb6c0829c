//! Host conditions: parsing `hosts` entries (exact names and `*.suffix` wildcards) and
//! turning a request's host into the lowercase form the host tables are keyed by,
//! without allocating.

/// Longest host name accepted in config (DNS allows 253 bytes). Longer request hosts
/// can only match routes without a host condition.
pub(super) const MAX_HOST_LEN: usize = 253;

/// A compiled `hosts` entry, lowercased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum HostPattern {
    /// `api.example.com`.
    Exact(Box<str>),
    /// `*.example.com`, stored as the suffix after `*.`: `example.com`.
    Wildcard(Box<str>),
}

impl HostPattern {
    /// Parses one `hosts` entry.
    pub(super) fn parse(s: &str) -> Result<HostPattern, String> {
        if s == "*" {
            return Err("`*` alone is not a host pattern; leave `hosts` empty to match any host".to_owned());
        }
        let (wildcard, name) = match s.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, s),
        };
        if name.is_empty() {
            return Err("empty host name".to_owned());
        }
        if name.contains('*') {
            return Err(format!("`{s}`: `*` is only allowed as a whole first label, like `*.example.com`"));
        }
        if !name.is_ascii() {
            return Err(format!("`{s}`: write internationalized names in their `xn--` form"));
        }
        if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '/' | '@')) {
            return Err(format!("`{s}`: character {c:?} is not allowed in a host name"));
        }
        let port = if name.starts_with('[') { name.contains("]:") } else { name.contains(':') };
        if port {
            return Err(format!("`{s}`: hosts are matched without the port; remove it"));
        }
        if name.len() > MAX_HOST_LEN {
            return Err(format!("host name longer than {MAX_HOST_LEN} bytes"));
        }
        let name = name.to_ascii_lowercase().into_boxed_str();
        Ok(if wildcard { HostPattern::Wildcard(name) } else { HostPattern::Exact(name) })
    }
}

/// Calls `f` with `host` in lowercase: borrowed as is when it has no uppercase letter
/// (the usual case), otherwise lowercased into a stack buffer. `None` (without calling
/// `f`) when `host` is too long to match any host entry.
pub(super) fn with_lowercase<R>(host: &str, f: impl FnOnce(&str) -> R) -> Option<R> {
    if host.len() > MAX_HOST_LEN {
        return None;
    }
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(f(host));
    }
    let mut buf = [0u8; MAX_HOST_LEN];
    let lower = &mut buf[..host.len()];
    lower.copy_from_slice(host.as_bytes());
    lower.make_ascii_lowercase();
    // Only ASCII bytes changed, so this is still the valid UTF-8 it was.
    std::str::from_utf8(lower).ok().map(f)
}

/// The suffix a wildcard entry must have to match `host` (already lowercase): what
/// follows the first label, which must be non-empty. `a.example.com` → `example.com`.
pub(super) fn wildcard_suffix(host: &str) -> Option<&str> {
    match host.split_once('.') {
        Some((label, rest)) if !label.is_empty() && !rest.is_empty() => Some(rest),
        _ => None,
    }
}
