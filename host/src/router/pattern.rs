//! Path conditions: exact paths (with `{name}` parameters) and segment-boundary
//! prefixes. Owns their parsing and validation, their matching against a raw request
//! path, and their order of precedence.

use std::cmp::Ordering;
use std::sync::Arc;

use super::PathParams;

/// A compiled `path` or `path_prefix` condition.
#[derive(Debug, Clone)]
pub(super) enum PathMatcher {
    /// A literal path without parameters, compared byte for byte.
    Exact(Box<str>),
    /// A path with at least one `{name}` segment.
    Pattern(Pattern),
    /// A prefix matched on segment boundaries.
    Prefix(Box<str>),
}

/// One `/`-separated piece of a pattern.
#[derive(Debug, Clone)]
pub(super) enum Segment {
    /// Must equal the request's segment exactly (it may be empty: `/a//b`, `/a/`).
    Literal(Box<str>),
    /// Matches any one non-empty segment and captures it under this name.
    Param(Arc<str>),
}

/// A path pattern with at least one parameter.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    segments: Box<[Segment]>,
    literals: usize,
}

impl PathMatcher {
    /// Parses a `path` condition.
    pub(super) fn parse_path(s: &str) -> Result<PathMatcher, String> {
        check_chars(s)?;
        let rest = &s[1..];
        let mut segments = Vec::new();
        let mut has_param = false;
        for seg in rest.split('/') {
            match parse_segment(seg)? {
                Some(name) => {
                    if segments.iter().any(|s| matches!(s, Segment::Param(n) if **n == *name)) {
                        return Err(format!("duplicate parameter name `{{{name}}}`"));
                    }
                    has_param = true;
                    segments.push(Segment::Param(Arc::from(name)));
                }
                None => segments.push(Segment::Literal(seg.into())),
            }
        }
        if !has_param {
            return Ok(PathMatcher::Exact(s.into()));
        }
        let literals = segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
        Ok(PathMatcher::Pattern(Pattern { segments: segments.into_boxed_slice(), literals }))
    }

    /// Parses a `path_prefix` condition.
    pub(super) fn parse_prefix(s: &str) -> Result<PathMatcher, String> {
        check_chars(s)?;
        if s.contains(['{', '}']) {
            return Err("path parameters (`{name}`) are not supported in `path_prefix`; \
                        use `path` for a pattern"
                .to_owned());
        }
        Ok(PathMatcher::Prefix(s.into()))
    }

    /// The condition with parameter names erased, so that `/u/{id}` and `/u/{uid}` —
    /// which match exactly the same paths — compare equal. Used to find duplicates.
    pub(super) fn shape(&self) -> String {
        match self {
            PathMatcher::Exact(p) => format!("path {p}"),
            PathMatcher::Prefix(p) => format!("prefix {p}"),
            PathMatcher::Pattern(p) => {
                let mut out = String::from("path ");
                for seg in &p.segments {
                    out.push('/');
                    match seg {
                        Segment::Literal(l) => out.push_str(l),
                        Segment::Param(_) => out.push_str("{}"),
                    }
                }
                out
            }
        }
    }
}

/// Checks what every path and prefix needs: a leading `/` and only characters that can
/// appear, unencoded, in a request path.
fn check_chars(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!("`{s}` must start with `/`"));
    }
    if s.contains('*') {
        return Err("`*` is not supported in paths; use `path_prefix` to match everything \
                    under a path"
            .to_owned());
    }
    if s.contains('?') {
        return Err("`?` is not allowed: routes match the path without its query".to_owned());
    }
    if s.contains('#') {
        return Err("`#` is not allowed: fragments are never sent to servers".to_owned());
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "character {c:?} never appears unencoded in a request path; write it \
             percent-encoded, as clients send it (paths are compared as sent, not decoded)"
        ));
    }
    Ok(())
}

/// `Some(name)` for a `{name}` segment, `None` for a literal one.
fn parse_segment(seg: &str) -> Result<Option<&str>, String> {
    if !seg.contains(['{', '}']) {
        return Ok(None);
    }
    let name = seg
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .filter(|n| !n.contains(['{', '}']))
        .ok_or_else(|| format!("`{seg}`: a parameter must be a whole segment, like `/users/{{id}}`"))?;
    if name.is_empty() {
        return Err("empty parameter name `{}`".to_owned());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("invalid parameter name `{name}`: use letters, digits and `_`"));
    }
    Ok(Some(name))
}

impl Pattern {
    /// Number of segments, which is also the number of `/` in every path it matches.
    pub(super) fn len(&self) -> usize {
        self.segments.len()
    }

    /// The position and text of the first literal segment, if any.
    pub(super) fn first_literal(&self) -> Option<(usize, &str)> {
        self.segments.iter().enumerate().find_map(|(i, s)| match s {
            Segment::Literal(l) => Some((i, &**l)),
            Segment::Param(_) => None,
        })
    }

    /// Whether `path` matches; allocates nothing.
    pub(super) fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else { return false };
        let mut parts = rest.split('/');
        for seg in &self.segments {
            let Some(part) = parts.next() else { return false };
            let ok = match seg {
                Segment::Literal(l) => **l == *part,
                Segment::Param(_) => !part.is_empty(),
            };
            if !ok {
                return false;
            }
        }
        parts.next().is_none()
    }

    /// The parameters of a path that [`matches`](Self::matches).
    pub(super) fn capture(&self, path: &str) -> PathParams {
        let mut params = Vec::with_capacity(self.segments.len() - self.literals);
        for (seg, part) in self.segments.iter().zip(path[1..].split('/')) {
            if let Segment::Param(name) = seg {
                params.push((Arc::clone(name), part.to_owned()));
            }
        }
        params
    }

    /// Precedence between patterns: `Less` means `self` is more specific. More literal
    /// segments first; then, at the first position where one has a literal and the other
    /// a parameter, the literal wins; then more segments.
    pub(super) fn cmp_specificity(&self, other: &Pattern) -> Ordering {
        other.literals.cmp(&self.literals).then_with(|| {
            for (a, b) in self.segments.iter().zip(other.segments.iter()) {
                match (a, b) {
                    (Segment::Literal(_), Segment::Param(_)) => return Ordering::Less,
                    (Segment::Param(_), Segment::Literal(_)) => return Ordering::Greater,
                    _ => {}
                }
            }
            other.segments.len().cmp(&self.segments.len())
        })
    }
}

/// Precedence between prefixes: `Less` means `a` is more specific. Longer first, counted
/// in non-empty segments, then in bytes.
#[cfg(test)]
pub(super) fn cmp_prefix(a: &str, b: &str) -> Ordering {
    let segments = |p: &str| p.split('/').filter(|s| !s.is_empty()).count();
    segments(b).cmp(&segments(a)).then_with(|| b.len().cmp(&a.len()))
}

/// Whether `prefix` matches `path` on a segment boundary.
#[cfg(test)]
pub(super) fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

/// The lengths of the prefixes of `path` that end on a segment boundary, longest first:
/// the whole path, then before and after every `/` (`/a/b` → 4, 3, 2, 1 for `/a/b`,
/// `/a/`, `/a`, `/`). Prefix lookups probe exactly these.
pub(super) fn boundary_lengths(path: &str) -> impl Iterator<Item = usize> + '_ {
    let len = path.len();
    std::iter::once(len).chain(
        path.bytes()
            .enumerate()
            .rev()
            .filter(|&(_, b)| b == b'/')
            // Before a `/` that follows another `/` is the same length as after that one.
            .flat_map(move |(i, _)| {
                let before = i > 0 && path.as_bytes()[i - 1] != b'/';
                [(i + 1 != len).then_some(i + 1), before.then_some(i)]
            })
            .flatten(),
    )
}
