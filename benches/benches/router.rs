//! Router lookups: a ~10-route and a ~1000-route table (exact paths, `{param}`
//! patterns, prefixes, exact and wildcard hosts), hits of every kind and misses.
//!
//! `cargo bench -p sluice-benches --bench router`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use sluice::config::{EchoConfig, MatchConfig, RouteConfig, RouteTargetConfig};
use sluice::router::Router;

#[derive(Default)]
struct Table(Vec<RouteConfig>);

impl Table {
    fn add(&mut self, hosts: &[&str], methods: &[&str], path: Option<&str>, prefix: Option<&str>) {
        let n = self.0.len();
        self.0.push(RouteConfig {
            name: format!("r{n}").parse().unwrap(),
            matcher: MatchConfig {
                hosts: hosts.iter().map(|s| s.to_string()).collect(),
                methods: methods.iter().map(|s| s.to_string()).collect(),
                path: path.map(str::to_owned),
                path_prefix: prefix.map(str::to_owned),
                headers: Default::default(),
                query: Default::default(),
            },
            target: RouteTargetConfig::Echo(EchoConfig::default()),
            listeners: Vec::new(),
            plugins: Vec::new(),
            upgrades: Vec::new(),
            cache: None,
        });
    }

    fn router(&self) -> Router {
        let given: Vec<(usize, &RouteConfig)> = self.0.iter().enumerate().collect();
        Router::build(&given).unwrap_or_else(|p| panic!("{p:?}"))
    }
}

/// ~10 routes: what a small gateway has.
fn small() -> Table {
    let mut t = Table::default();
    t.add(&[], &["GET"], Some("/health"), None);
    t.add(&[], &[], Some("/svc7/health"), None);
    t.add(&[], &["GET"], Some("/svc7/items/{id}"), None);
    t.add(&[], &[], Some("/svc7/items/{id}/parts/{part}"), None);
    t.add(&[], &[], None, Some("/svc7"));
    t.add(&["h7.example.com"], &[], Some("/users/{id}"), None);
    t.add(&["h7.example.com"], &[], None, Some("/api"));
    t.add(&["*.t7.example.com"], &[], Some("/v1/{x}"), None);
    t.add(&[], &[], Some("/{tenant}/r99/{id}"), None);
    t.add(&[], &[], None, Some("/static/"));
    t
}

/// 1000 routes: 100 services × 5 any-host routes, 100 hosts × 3, 50 wildcards × 2, and
/// 100 patterns starting with a parameter (the slowest kind to index).
fn large() -> Table {
    let mut t = Table::default();
    for s in 0..100 {
        t.add(&[], &[], Some(&format!("/svc{s}/health")), None);
        t.add(&[], &["GET", "HEAD"], Some(&format!("/svc{s}/items")), None);
        t.add(&[], &["GET"], Some(&format!("/svc{s}/items/{{id}}")), None);
        t.add(&[], &[], Some(&format!("/svc{s}/items/{{id}}/parts/{{part}}")), None);
        t.add(&[], &[], None, Some(&format!("/svc{s}")));
    }
    for h in 0..100 {
        let host = format!("h{h}.example.com");
        t.add(&[&host], &[], Some("/"), None);
        t.add(&[&host], &[], None, Some("/api"));
        t.add(&[&host], &[], Some("/users/{id}"), None);
    }
    for w in 0..50 {
        let host = format!("*.t{w}.example.com");
        t.add(&[&host], &[], None, Some("/"));
        t.add(&[&host], &[], Some("/v1/{x}"), None);
    }
    for k in 0..100 {
        t.add(&[], &[], Some(&format!("/{{tenant}}/r{k}/{{id}}")), None);
    }
    assert_eq!(t.0.len(), 1000);
    t
}

/// (label, host, path, expect a match)
const LOOKUPS: &[(&str, Option<&str>, &str, bool)] = &[
    ("exact", None, "/svc7/health", true),
    ("param", None, "/svc7/items/12345", true),
    ("param2", None, "/svc7/items/12345/parts/abc", true),
    ("prefix", None, "/svc7/other/deep/path", true),
    ("host_exact", Some("h7.example.com"), "/users/42", true),
    ("host_upper", Some("H7.Example.COM"), "/users/42", true),
    ("host_wildcard", Some("a.t7.example.com"), "/v1/things", true),
    ("param_first", None, "/acme/r99/1", true),
    ("miss", None, "/nope/nothing/here", false),
    ("miss_host", Some("unknown.example.org"), "/nope", false),
];

fn bench(c: &mut Criterion) {
    let headers = HeaderMap::new();
    for (name, table) in [("10", small()), ("1000", large())] {
        let router = table.router();
        let mut group = c.benchmark_group(format!("router/{name}"));
        for &(label, host, path, hit) in LOOKUPS {
            // The tables are built so that every lookup has the expected outcome.
            assert_eq!(router.find(host, &Method::GET, path, &headers).is_some(), hit, "{label}");
            group.bench_function(label, |b| {
                b.iter(|| router.find(black_box(host), black_box(&Method::GET), black_box(path), &headers))
            });
        }
        group.finish();
    }
    c.bench_function("router/build/1000", |b| {
        let table = large();
        b.iter(|| table.router())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
