//! One host group's routing table: the routes that share a host condition (one exact
//! host, one wildcard suffix, or "any host"), indexed so that a lookup costs a few hash
//! probes rather than a scan of every route.
//!
//! - exact literal paths: a hash map from path to its routes;
//! - `{param}` patterns: ranked once in precedence order, then bucketed by segment count
//!   (a pattern only matches paths with as many `/`) and filed under their first
//!   literal segment (position and text); a lookup merges, in rank order, the lists
//!   filed under the path's own segments with the patterns that have no literal;
//! - prefixes: a hash map from prefix to its routes, probed with the path's own
//!   segment-boundary prefixes, longest first, skipping lengths no prefix has.
//!
//! Each list of routes sharing one path condition is sorted by the remaining tie-breaks:
//! methods listed first, then more header and query conditions, then config order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use http::{HeaderMap, Method};

use super::conditions::{HeaderCondition, Methods, QueryCondition};
use super::pattern::{self, PathMatcher};
use super::{Map, RouteMatch};

/// A compiled route: its conditions other than the host, and its config index.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) config_index: usize,
    pub(super) methods: Methods,
    pub(super) headers: Box<[HeaderCondition]>,
    pub(super) query: Box<[QueryCondition]>,
    pub(super) path: PathMatcher,
}

impl Entry {
    /// Method, header and query conditions.
    fn accepts(&self, method: &Method, query: Option<&str>, headers: &HeaderMap) -> bool {
        self.methods.matches(method)
            && self.headers.iter().all(|h| h.matches(headers))
            && self.query.iter().all(|q| q.matches(query))
    }

    /// The tie-break after the path: methods listed, more header and query
    /// conditions, config order.
    fn tie_key(&self) -> (bool, Reverse<usize>, usize) {
        (!self.methods.is_restricted(), Reverse(self.headers.len() + self.query.len()), self.config_index)
    }

    fn matched(&self, path: &str) -> RouteMatch {
        let params = match &self.path {
            PathMatcher::Pattern(p) => p.capture(path),
            _ => Vec::new(),
        };
        RouteMatch { route: self.config_index, params }
    }
}

/// Collects the routes of one host group; [`finish`](Self::finish) indexes them.
#[derive(Debug, Default)]
pub(super) struct TableBuilder {
    routes: Vec<u32>,
}

impl TableBuilder {
    pub(super) fn push(&mut self, id: u32) {
        self.routes.push(id);
    }

    pub(super) fn finish(self, entries: &[Entry]) -> Table {
        let mut exact: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut prefixes: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut patterns = Vec::new();
        for &id in &self.routes {
            match &entries[id as usize].path {
                PathMatcher::Exact(p) => exact.entry(p).or_default().push(id),
                PathMatcher::Prefix(p) => prefixes.entry(p).or_default().push(id),
                PathMatcher::Pattern(_) => patterns.push(id),
            }
        }
        let by_tie = |ids: &mut Vec<u32>| ids.sort_by_key(|&id| entries[id as usize].tie_key());

        let exact = exact
            .into_iter()
            .map(|(p, mut ids)| {
                by_tie(&mut ids);
                (p.into(), ids.into_boxed_slice())
            })
            .collect();

        let mut prefix_lens = Vec::new();
        let prefixes = prefixes
            .into_iter()
            .map(|(p, mut ids)| {
                by_tie(&mut ids);
                if prefix_lens.len() <= p.len() {
                    prefix_lens.resize(p.len() + 1, false);
                }
                prefix_lens[p.len()] = true;
                (p.into(), ids.into_boxed_slice())
            })
            .collect();

        let pattern_of = |id: u32| match &entries[id as usize].path {
            PathMatcher::Pattern(p) => p,
            _ => unreachable!("only patterns are ranked"),
        };
        patterns.sort_by(|&a, &b| {
            pattern_of(a)
                .cmp_specificity(pattern_of(b))
                .then_with(|| entries[a as usize].tie_key().cmp(&entries[b as usize].tie_key()))
        });
        let mut buckets: Vec<Bucket> = Vec::new();
        // Per segment count: first literal's position → its text → ranks.
        let mut literals: Vec<BTreeMap<usize, HashMap<&str, Vec<u32>>>> = Vec::new();
        for (rank, &id) in patterns.iter().enumerate() {
            let p = pattern_of(id);
            if buckets.len() <= p.len() {
                buckets.resize_with(p.len() + 1, Bucket::default);
                literals.resize_with(p.len() + 1, BTreeMap::new);
            }
            let rank = rank as u32;
            buckets[p.len()].all.push(rank);
            match p.first_literal() {
                Some((at, text)) => {
                    literals[p.len()].entry(at).or_default().entry(text).or_default().push(rank)
                }
                None => buckets[p.len()].no_literal.push(rank),
            }
        }
        for (bucket, by_position) in buckets.iter_mut().zip(literals) {
            bucket.first_literal = by_position
                .into_iter()
                .map(|(at, texts)| {
                    let texts = texts.into_iter().map(|(t, r)| (t.into(), r.into_boxed_slice()));
                    (at, texts.collect())
                })
                .collect();
        }

        Table {
            exact,
            patterns: patterns.into_boxed_slice(),
            buckets: buckets.into_boxed_slice(),
            prefixes,
            prefix_lens: prefix_lens.into_boxed_slice(),
        }
    }
}

/// Segment text → ranks (ascending).
type RankMap = Map<Box<str>, Box<[u32]>>;

/// Most rank lists a lookup merges: one per first-literal position, plus the patterns
/// without literals. Buckets needing more scan `all` instead.
const MAX_MERGED: usize = 8;

/// The patterns with one segment count. Each is filed under its first literal segment
/// (position and text): a path can only match patterns filed under its own segment at
/// that position, so a lookup probes one map per position in use.
#[derive(Debug, Default)]
struct Bucket {
    /// First literal's position → its text → ranks (ascending).
    first_literal: Box<[(usize, RankMap)]>,
    /// Ranks (ascending) of patterns made only of parameters.
    no_literal: Vec<u32>,
    /// Every rank (ascending), for buckets too varied to merge on the stack.
    all: Vec<u32>,
}

impl Bucket {
    /// Candidate rank lists for `rest` (the path after its leading `/`), into `lists`;
    /// how many were written, or `None` when there are too many to merge.
    fn candidates<'b>(&'b self, rest: &str, lists: &mut [&'b [u32]; MAX_MERGED]) -> Option<usize> {
        if self.first_literal.len() >= MAX_MERGED {
            return None;
        }
        let mut n = 0;
        let mut segments = rest.split('/').enumerate();
        for (at, texts) in &self.first_literal {
            // Positions are ascending, so one pass over the path's segments serves all.
            let Some((_, segment)) = segments.find(|&(i, _)| i == *at) else { break };
            if let Some(ranks) = texts.get(segment) {
                lists[n] = ranks;
                n += 1;
            }
        }
        if !self.no_literal.is_empty() {
            lists[n] = &self.no_literal;
            n += 1;
        }
        Some(n)
    }
}

/// See the module doc.
#[derive(Debug, Default)]
pub(super) struct Table {
    exact: Map<Box<str>, Box<[u32]>>,
    /// Route ids of the patterns, most specific first; a pattern's rank is its position.
    patterns: Box<[u32]>,
    /// Indexed by segment count.
    buckets: Box<[Bucket]>,
    prefixes: Map<Box<str>, Box<[u32]>>,
    /// `prefix_lens[n]`: some prefix is `n` bytes long.
    prefix_lens: Box<[bool]>,
}

impl Table {
    /// The most specific route of this group that takes the request.
    pub(super) fn find(
        &self,
        entries: &[Entry],
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<RouteMatch> {
        let first = |ids: &[u32]| {
            ids.iter().map(|&id| &entries[id as usize]).find(|e| e.accepts(method, query, headers))
        };

        if let Some(e) = self.exact.get(path).and_then(|ids| first(ids)) {
            return Some(e.matched(path));
        }

        if !self.buckets.is_empty()
            && let Some(rest) = path.strip_prefix('/')
        {
            let segments = 1 + rest.bytes().filter(|&b| b == b'/').count();
            if let Some(bucket) = self.buckets.get(segments) {
                let ok = |e: &Entry| {
                    matches!(&e.path, PathMatcher::Pattern(p) if p.matches(path))
                        && e.accepts(method, query, headers)
                };
                let mut lists: [&[u32]; MAX_MERGED] = [&[]; MAX_MERGED];
                let found = match bucket.candidates(rest, &mut lists) {
                    Some(n) => self.first_pattern(entries, &mut lists[..n], ok),
                    None => self.first_pattern(entries, &mut [&bucket.all[..]], ok),
                };
                if let Some(e) = found {
                    return Some(e.matched(path));
                }
            }
        }

        if !self.prefix_lens.is_empty() {
            for len in pattern::boundary_lengths(path) {
                if !self.prefix_lens.get(len).copied().unwrap_or(false) {
                    continue;
                }
                if let Some(e) = self.prefixes.get(&path[..len]).and_then(|ids| first(ids)) {
                    return Some(e.matched(path));
                }
            }
        }
        None
    }

    /// The first entry, in rank order over the union of ascending rank lists, that
    /// satisfies `ok`.
    fn first_pattern<'e>(
        &self,
        entries: &'e [Entry],
        lists: &mut [&[u32]],
        ok: impl Fn(&Entry) -> bool,
    ) -> Option<&'e Entry> {
        loop {
            let (i, rank) = lists
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.first().map(|&r| (i, r)))
                .min_by_key(|&(_, r)| r)?;
            lists[i] = &lists[i][1..];
            let e = &entries[self.patterns[rank as usize] as usize];
            if ok(e) {
                return Some(e);
            }
        }
    }
}
