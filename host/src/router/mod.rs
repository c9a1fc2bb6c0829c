//! The router: host + method + path (+ headers) → the winning route's config index and
//! its path parameters. One [`Router`] per listener, built once per snapshot with
//! [`Router::build`], read-only afterwards; [`Router::find`] runs on every request.
//!
//! # Matching
//!
//! A route matches a request when every condition of its `match` holds:
//!
//! - **`hosts`**: the request's host (from `Host`, or the HTTP/2 `:authority`), with the
//!   port removed, compared ASCII-case-insensitively. An entry is either an exact name
//!   (`api.example.com`) or a wildcard `*.example.com`, which matches exactly one
//!   extra, non-empty label in front (`a.example.com`, but neither `example.com` nor
//!   `a.b.example.com`). An empty list matches any host, including a request without
//!   one. The edge already dropped a trailing dot (`example.com.` is `example.com`).
//!   Non-ASCII names must be written in their `xn--` form; `*` alone is rejected
//!   (leave the list empty instead).
//! - **`methods`**: the request's method is one of those listed, compared exactly
//!   (methods are case-sensitive; `get` in config is rejected). `HEAD` is not implied
//!   by `GET`. An empty list matches any method.
//! - **the path**, exactly one of:
//!   - `path`: the whole path. A segment written `{name}` matches any one non-empty
//!     segment and captures it as parameter `name`; every other segment must be equal
//!     byte for byte. `/users/{id}` matches `/users/5` but not `/users/`, `/users/5/`
//!     (a trailing slash is a segment of its own) or `/users/5/x`.
//!   - `path_prefix`: the path starts with the prefix on a segment boundary. `/api`
//!     matches `/api`, `/api/` and `/api/x` but not `/apix`; `/api/` matches `/api/`
//!     and `/api/x` but not `/api`; `/` matches every path.
//! - **`headers`**: for each `name: value`, the request has that header (names are
//!   case-insensitive) and one of its values equals `value` exactly (case-sensitive);
//!   the value `"*"` only requires the header to be present.
//!
//! Paths are matched as the edge left them (`proxy::edge`): dot segments removed,
//! slashes merged and escapes of unreserved characters decoded, as the listener's
//! `paths` settings say; nothing else is decoded — `%20` is not a space, and case
//! matters. Hosts arrive validated, without a trailing dot. Write config paths the way
//! clients send them (percent-encoded); characters that never appear unencoded in a
//! request path (spaces, non-ASCII, `?`, `#`) are rejected at load rather than never
//! matching. A request path that does not start with `/` (such as `OPTIONS *`) matches
//! no route.
//!
//! # Precedence
//!
//! When several routes match, the most specific wins; the order is total, so the
//! outcome never depends on hashing or build details:
//!
//! 1. **Host**: routes naming the exact host, then routes with a matching wildcard, then
//!    routes for any host. These are tiers, not filters: a request whose host has
//!    routes but none of them matches falls through to the wildcard routes, then to
//!    the any-host routes. (Only one wildcard can match a given host — it matches one
//!    label — so "longer suffix first" never has to decide anything.)
//! 2. **Path**, within a host tier: an exact literal `path`; then `{param}` patterns —
//!    more literal segments first, then the one whose first literal comes earlier
//!    (`/a/{x}` before `/{x}/b`), then more segments; then prefixes, longer first
//!    (in segments, then bytes).
//! 3. Routes that list `methods` before routes for any method.
//! 4. More `headers` conditions first.
//! 5. Config order: the route written first wins.
//!
//! # Load-time errors
//!
//! [`Router::build`] reports, at `routes[<index>].match…`: a missing or doubled path
//! condition, a path or prefix not starting with `/`, `*`, `?` or `#` in paths, `{…}`
//! that is not a whole segment, empty (`{}`), invalid or duplicate parameter names,
//! parameters in a prefix, bad hosts, methods and headers, and two routes with
//! identical match conditions (the later one could never be chosen; parameter names do
//! not count: `/u/{id}` and `/u/{uid}` are the same match).
//!
//! # Cost
//!
//! Built at load: a hash map per exact host (keyed lowercase), per wildcard suffix, and
//! one any-host table; in each, exact paths and prefixes are hash maps and patterns are
//! bucketed by segment count and first segment (see `table.rs`). A lookup is a handful
//! of hash probes, allocates nothing unless it captures parameters, and lowercases a
//! host only when it has uppercase letters — on the stack.

mod conditions;
mod host;
mod pattern;
mod table;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::config::{Problem, RouteConfig};

use conditions::{HeaderCondition, Methods, QueryCondition};
use host::HostPattern;
use pattern::PathMatcher;
use table::{Entry, Table, TableBuilder};

/// Hash maps of the lookup tables: foldhash, seeded per process. An unkeyed fast hasher
/// was once tried by time alone and showed no clear win; counted, SipHash cost ~160
/// instructions per lookup on these short keys (BENCHMARKS.md, P1, 2026-12-04). The
/// keys come from the config; a request only looks them up. The snapshot's listener →
/// router map is one too.
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Path parameters captured by `{name}` segments, in pattern order.
pub type PathParams = Vec<(Arc<str>, String)>;

/// The result of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The winning route's index in the config's `routes` (the `config_index` it was
    /// given to [`Router::build`] with), which is also its index in
    /// [`Snapshot::routes`](crate::snapshot::Snapshot::routes).
    pub route: usize,
    /// Captured path parameters, in pattern order; empty for routes without any.
    pub params: PathParams,
}

/// A compiled, immutable routing table.
#[derive(Debug, Default)]
pub struct Router {
    entries: Box<[Entry]>,
    exact_hosts: Map<Box<str>, Table>,
    /// Keyed by the suffix after `*.`.
    wildcard_hosts: Map<Box<str>, Table>,
    any_host: Table,
}

impl Router {
    /// Compiles `routes` (a subset of the config's routes, with their positions in the
    /// config for error paths: `(config_index, route)`). Every problem is reported.
    pub fn build(routes: &[(usize, &RouteConfig)]) -> Result<Router, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut entries = Vec::with_capacity(routes.len());
        let mut exact_hosts: HashMap<Box<str>, TableBuilder> = HashMap::new();
        let mut wildcard_hosts: HashMap<Box<str>, TableBuilder> = HashMap::new();
        let mut any_host = TableBuilder::default();
        // Match key → (config index, name) of the first route with it.
        let mut seen: HashMap<String, (usize, &str)> = HashMap::new();

        let mut order: Vec<&(usize, &RouteConfig)> = routes.iter().collect();
        order.sort_by_key(|(i, _)| *i);
        for &(index, route) in order {
            let Some((entry, hosts)) = compile(index, route, &mut problems) else { continue };
            let key = match_key(&hosts, &entry);
            if let Some((_, first)) = seen.get(&key) {
                problems.push(Problem::new(
                    format!("routes[{index}].match"),
                    format!(
                        "route `{}` has the same match as route `{first}`; it can never be chosen",
                        route.name
                    ),
                ));
                continue;
            }
            seen.insert(key, (index, route.name.as_str()));

            let id = u32::try_from(entries.len()).expect("fewer than 2^32 routes");
            entries.push(entry);
            if hosts.is_empty() {
                any_host.push(id);
            }
            for h in hosts {
                match h {
                    HostPattern::Exact(h) => exact_hosts.entry(h).or_default().push(id),
                    HostPattern::Wildcard(s) => wildcard_hosts.entry(s).or_default().push(id),
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        let finish = |m: HashMap<Box<str>, TableBuilder>| {
            m.into_iter().map(|(k, b)| (k, b.finish(&entries))).collect::<Map<_, _>>()
        };
        let exact_hosts = finish(exact_hosts);
        let wildcard_hosts = finish(wildcard_hosts);
        let any_host = any_host.finish(&entries);
        Ok(Router { entries: entries.into_boxed_slice(), exact_hosts, wildcard_hosts, any_host })
    }

    /// Finds the most specific route for a request (see the module doc). `host` is the
    /// request's host without port, as sent (not yet lowercased); `path` is the raw path
    /// without the query.
    pub fn find(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<RouteMatch> {
        self.find_with_query(host, method, path, None, headers)
    }

    /// [`Router::find`] for a request whose target has a query (without the `?`),
    /// which routes with `match.query` conditions look at.
    pub fn find_with_query(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<RouteMatch> {
        if let Some(host) = host
            && !host.is_empty()
            && !(self.exact_hosts.is_empty() && self.wildcard_hosts.is_empty())
            && let Some(Some(m)) = host::with_lowercase(host, |host| {
                let in_exact = self.exact_hosts.get(host);
                if let Some(m) = in_exact.and_then(|t| t.find(&self.entries, method, path, query, headers)) {
                    return Some(m);
                }
                let wildcard = host::wildcard_suffix(host).and_then(|s| self.wildcard_hosts.get(s));
                wildcard.and_then(|t| t.find(&self.entries, method, path, query, headers))
            })
        {
            return Some(m);
        }
        self.any_host.find(&self.entries, method, path, query, headers)
    }
}

/// Compiles one route, or adds its problems.
fn compile(
    index: usize,
    route: &RouteConfig,
    problems: &mut Vec<Problem>,
) -> Option<(Entry, BTreeSet<HostPattern>)> {
    let m = &route.matcher;
    let at = |field: &str| format!("routes[{index}].match{field}");
    let before = problems.len();

    let mut hosts = BTreeSet::new();
    for (i, h) in m.hosts.iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(h) => {
                hosts.insert(h);
            }
            Err(e) => problems.push(Problem::new(at(&format!(".hosts[{i}]")), e)),
        }
    }

    let methods = Methods::parse(&m.methods).unwrap_or_else(|errs| {
        for (i, e) in errs {
            problems.push(Problem::new(at(&format!(".methods[{i}]")), e));
        }
        Methods::parse(&[]).expect("no methods is valid")
    });

    let path = match (&m.path, &m.path_prefix) {
        (Some(p), None) => {
            PathMatcher::parse_path(p).map_err(|e| problems.push(Problem::new(at(".path"), e))).ok()
        }
        (None, Some(p)) => {
            PathMatcher::parse_prefix(p).map_err(|e| problems.push(Problem::new(at(".path_prefix"), e))).ok()
        }
        (Some(_), Some(_)) => {
            problems.push(Problem::new(at(""), "give either `path` or `path_prefix`, not both"));
            None
        }
        (None, None) => {
            problems.push(Problem::new(at(""), "one of `path` and `path_prefix` is required"));
            None
        }
    };

    let mut headers = Vec::with_capacity(m.headers.len());
    for (name, value) in &m.headers {
        match HeaderCondition::parse(name, value) {
            Ok(h) => headers.push(h),
            Err(e) => problems.push(Problem::new(at(&format!(".headers.{name}")), e)),
        }
    }
    headers.sort();
    headers.dedup();

    let mut query = Vec::with_capacity(m.query.len());
    for (name, value) in &m.query {
        match QueryCondition::parse(name, value) {
            Ok(q) => query.push(q),
            Err(e) => problems.push(Problem::new(at(&format!(".query.{name}")), e)),
        }
    }

    if problems.len() > before {
        return None;
    }
    let entry = Entry {
        config_index: index,
        methods,
        headers: headers.into_boxed_slice(),
        query: query.into_boxed_slice(),
        path: path?,
    };
    Some((entry, hosts))
}

/// Two routes with equal keys take exactly the same requests.
fn match_key(hosts: &BTreeSet<HostPattern>, e: &Entry) -> String {
    format!("{hosts:?} {:?} {} {:?} {:?}", e.methods.key(), e.path.shape(), e.headers, e.query)
}
