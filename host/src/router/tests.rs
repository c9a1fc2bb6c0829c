//! Router tests: matching, every precedence rule, and load-time problems.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};

use super::pattern::{boundary_lengths, cmp_prefix, prefix_matches};
use super::{RouteMatch, Router};
use crate::config::{EchoConfig, MatchConfig, Problem, RouteConfig, RouteTargetConfig};

/// A route under construction.
#[derive(Clone)]
struct R(RouteConfig);

fn route(name: &str) -> R {
    R(RouteConfig {
        name: name.parse().unwrap(),
        matcher: MatchConfig::default(),
        target: RouteTargetConfig::Echo(EchoConfig::default()),
        listeners: Vec::new(),
        plugins: Vec::new(),
        upgrades: Vec::new(),
        cache: None,
    })
}

impl R {
    fn path(mut self, p: &str) -> R {
        self.0.matcher.path = Some(p.to_owned());
        self
    }
    fn prefix(mut self, p: &str) -> R {
        self.0.matcher.path_prefix = Some(p.to_owned());
        self
    }
    fn hosts(mut self, h: &[&str]) -> R {
        self.0.matcher.hosts = h.iter().map(|s| s.to_string()).collect();
        self
    }
    fn methods(mut self, m: &[&str]) -> R {
        self.0.matcher.methods = m.iter().map(|s| s.to_string()).collect();
        self
    }
    fn header(mut self, k: &str, v: &str) -> R {
        self.0.matcher.headers.insert(k.to_owned(), v.to_owned());
        self
    }
    fn query(mut self, k: &str, v: &str) -> R {
        self.0.matcher.query.insert(k.to_owned(), v.to_owned());
        self
    }
}

fn build(routes: &[R]) -> Result<Router, Vec<Problem>> {
    let given: Vec<(usize, &RouteConfig)> = routes.iter().map(|r| &r.0).enumerate().collect();
    Router::build(&given)
}

fn router(routes: &[R]) -> Router {
    build(routes).unwrap_or_else(|p| panic!("unexpected problems: {p:?}"))
}

/// A request.
struct Req<'a> {
    host: Option<&'a str>,
    method: Method,
    path: &'a str,
    headers: HeaderMap,
}

fn req(path: &str) -> Req<'_> {
    Req { host: None, method: Method::GET, path, headers: HeaderMap::new() }
}

impl<'a> Req<'a> {
    fn host(mut self, h: &'a str) -> Self {
        self.host = Some(h);
        self
    }
    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.append(k, HeaderValue::from_static(v));
        self
    }
    fn on(&self, r: &Router) -> Option<RouteMatch> {
        r.find(self.host, &self.method, self.path, &self.headers)
    }
    /// The winning route's index.
    fn route(&self, r: &Router) -> Option<usize> {
        self.on(r).map(|m| m.route)
    }
}

fn problems(routes: &[R]) -> Vec<(String, String)> {
    match build(routes) {
        Ok(_) => panic!("expected problems"),
        Err(p) => p.into_iter().map(|p| (p.path, p.message)).collect(),
    }
}

// ---- matching -------------------------------------------------------------------

#[test]
fn empty_router_matches_nothing() {
    assert_eq!(req("/").route(&router(&[])), None);
}

#[test]
fn exact_path_is_byte_exact() {
    let r = router(&[route("a").path("/users")]);
    assert_eq!(req("/users").route(&r), Some(0));
    for miss in ["/users/", "/Users", "/users/x", "/user", "/%75sers", "users", "*"] {
        assert_eq!(req(miss).route(&r), None, "{miss}");
    }
}

#[test]
fn params_capture_one_non_empty_segment() {
    let r = router(&[route("a").path("/users/{id}/posts/{post_id}")]);
    let m = req("/users/42/posts/a%20b").on(&r).unwrap();
    assert_eq!(m.route, 0);
    assert_eq!(
        m.params,
        vec![(Arc::from("id"), "42".to_owned()), (Arc::from("post_id"), "a%20b".to_owned())]
    );
    for miss in ["/users//posts/1", "/users/1/posts/", "/users/1/posts/2/", "/users/1/posts", "/users/1/x/2"]
    {
        assert_eq!(req(miss).route(&r), None, "{miss}");
    }
}

#[test]
fn trailing_slash_is_a_segment() {
    let r = router(&[route("a").path("/users/{id}"), route("b").path("/users/{id}/")]);
    assert_eq!(req("/users/5").route(&r), Some(0));
    assert_eq!(req("/users/5/").route(&r), Some(1));
}

#[test]
fn exact_route_has_no_params() {
    let r = router(&[route("a").path("/x")]);
    assert_eq!(req("/x").on(&r), Some(RouteMatch { route: 0, params: Vec::new() }));
}

#[test]
fn prefix_matches_on_segment_boundaries() {
    let r = router(&[route("api").prefix("/api")]);
    for hit in ["/api", "/api/", "/api/x", "/api/x/y"] {
        assert_eq!(req(hit).route(&r), Some(0), "{hit}");
    }
    for miss in ["/apix", "/ap", "/", "/API"] {
        assert_eq!(req(miss).route(&r), None, "{miss}");
    }
}

#[test]
fn prefix_with_trailing_slash() {
    let r = router(&[route("a").prefix("/api/")]);
    assert_eq!(req("/api/").route(&r), Some(0));
    assert_eq!(req("/api/x").route(&r), Some(0));
    assert_eq!(req("/api").route(&r), None);
}

#[test]
fn root_prefix_matches_every_path() {
    let r = router(&[route("all").prefix("/")]);
    for p in ["/", "/a", "/a/b/", "//"] {
        assert_eq!(req(p).route(&r), Some(0), "{p}");
    }
    assert_eq!(req("*").route(&r), None);
}

#[test]
fn prefix_helpers_agree() {
    for path in ["/", "/a", "/a/", "/a/b", "/a/b/", "//x", "/a//b"] {
        let lens: Vec<usize> = boundary_lengths(path).collect();
        let mut sorted = lens.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        sorted.dedup();
        assert_eq!(lens, sorted, "{path}: longest first, no duplicates");
        for n in 1..=path.len() {
            let prefix = &path[..n];
            assert_eq!(prefix_matches(prefix, path), lens.contains(&n), "{prefix} on {path}");
        }
    }
}

#[test]
fn probing_order_is_prefix_precedence() {
    // Lookups probe a path's boundary prefixes longest first; that must be the
    // documented precedence (segments, then bytes) among prefixes of one path.
    for path in ["/a/b/c", "/a/b/", "/api//v1/x/"] {
        let probes: Vec<&str> = boundary_lengths(path).map(|n| &path[..n]).collect();
        let mut ranked = probes.clone();
        ranked.sort_by(|a, b| cmp_prefix(a, b));
        assert_eq!(probes, ranked, "{path}");
    }
}

#[test]
fn methods_match_exactly_and_head_is_not_implied() {
    let r = router(&[route("a").path("/x").methods(&["GET", "POST"])]);
    assert_eq!(req("/x").route(&r), Some(0));
    assert_eq!(req("/x").method(Method::POST).route(&r), Some(0));
    assert_eq!(req("/x").method(Method::HEAD).route(&r), None);
    assert_eq!(req("/x").method(Method::DELETE).route(&r), None);
}

#[test]
fn extension_methods() {
    let r = router(&[route("a").path("/x").methods(&["PURGE"])]);
    let purge = Method::from_bytes(b"PURGE").unwrap();
    assert_eq!(req("/x").method(purge).route(&r), Some(0));
    assert_eq!(req("/x").route(&r), None);
}

#[test]
fn header_conditions() {
    let r = router(&[route("a").path("/x").header("X-Version", "2").header("x-beta", "*")]);
    assert_eq!(req("/x").header("x-version", "2").header("x-beta", "").route(&r), Some(0));
    assert_eq!(req("/x").header("x-version", "2").route(&r), None, "x-beta missing");
    assert_eq!(req("/x").header("x-version", "3").header("x-beta", "1").route(&r), None);
    assert_eq!(req("/x").header("x-version", "V2").header("x-beta", "1").route(&r), None);
    // One of several values is enough.
    let sent_twice = req("/x").header("x-version", "1").header("x-version", "2").header("x-beta", "1");
    assert_eq!(sent_twice.route(&r), Some(0));
}

#[test]
fn hosts_are_case_insensitive_exact_names() {
    let r = router(&[route("a").path("/").hosts(&["API.example.com"])]);
    assert_eq!(req("/").host("api.example.com").route(&r), Some(0));
    assert_eq!(req("/").host("Api.Example.COM").route(&r), Some(0));
    assert_eq!(req("/").host("example.com").route(&r), None);
    assert_eq!(req("/").host("api.example.com.").route(&r), None, "trailing dot is kept");
    assert_eq!(req("/").route(&r), None, "no host");
}

#[test]
fn wildcard_matches_exactly_one_label() {
    let r = router(&[route("a").path("/").hosts(&["*.example.com"])]);
    assert_eq!(req("/").host("a.example.com").route(&r), Some(0));
    assert_eq!(req("/").host("A-1.EXAMPLE.com").route(&r), Some(0));
    for miss in ["example.com", "a.b.example.com", ".example.com", "aexample.com", "a.example.org"] {
        assert_eq!(req("/").host(miss).route(&r), None, "{miss}");
    }
}

#[test]
fn empty_hosts_match_any_host_or_none() {
    let r = router(&[route("a").path("/")]);
    assert_eq!(req("/").route(&r), Some(0));
    assert_eq!(req("/").host("whatever.test").route(&r), Some(0));
    assert_eq!(req("/").host("").route(&r), Some(0));
}

#[test]
fn overlong_host_only_matches_any_host_routes() {
    let long = "a".repeat(300);
    let r = router(&[route("h").path("/").hosts(&["*.example.com"]), route("any").prefix("/")]);
    assert_eq!(req("/").host(&long).route(&r), Some(1));
}

#[test]
fn route_with_several_hosts() {
    let r = router(&[route("a").path("/").hosts(&["a.test", "*.b.test"])]);
    assert_eq!(req("/").host("a.test").route(&r), Some(0));
    assert_eq!(req("/").host("x.b.test").route(&r), Some(0));
    assert_eq!(req("/").host("b.test").route(&r), None);
}

#[test]
fn returns_config_index_of_a_subset() {
    let routes = [route("a").path("/a"), route("b").path("/b"), route("c").path("/c")];
    let given = vec![(0, &routes[0].0), (2, &routes[2].0)];
    let r = Router::build(&given).unwrap();
    assert_eq!(req("/c").route(&r), Some(2));
    assert_eq!(req("/b").route(&r), None);
}

// ---- precedence ---------------------------------------------------------------

#[test]
fn exact_host_beats_wildcard_beats_any() {
    let r = router(&[
        route("any").prefix("/"),
        route("wild").prefix("/").hosts(&["*.example.com"]),
        route("exact").prefix("/").hosts(&["api.example.com"]),
    ]);
    assert_eq!(req("/x").host("api.example.com").route(&r), Some(2));
    assert_eq!(req("/x").host("web.example.com").route(&r), Some(1));
    assert_eq!(req("/x").host("other.test").route(&r), Some(0));
}

#[test]
fn host_beats_path_specificity() {
    let r = router(&[route("any-exact").path("/x"), route("host-prefix").prefix("/").hosts(&["h.test"])]);
    assert_eq!(req("/x").host("h.test").route(&r), Some(1));
}

#[test]
fn falls_through_host_tiers() {
    let r = router(&[
        route("exact").path("/only").hosts(&["api.example.com"]),
        route("wild").path("/w").hosts(&["*.example.com"]),
        route("any").prefix("/"),
    ]);
    assert_eq!(req("/only").host("api.example.com").route(&r), Some(0));
    assert_eq!(req("/w").host("api.example.com").route(&r), Some(1));
    assert_eq!(req("/z").host("api.example.com").route(&r), Some(2));
}

#[test]
fn falls_through_on_method_and_headers() {
    let r = router(&[
        route("exact-post").path("/x").hosts(&["h.test"]).methods(&["POST"]),
        route("exact-hdr").path("/x").hosts(&["h.test"]).header("x-a", "1").methods(&["GET"]),
        route("any").path("/x"),
    ]);
    assert_eq!(req("/x").host("h.test").route(&r), Some(2));
    assert_eq!(req("/x").host("h.test").header("x-a", "1").route(&r), Some(1));
    assert_eq!(req("/x").host("h.test").method(Method::POST).route(&r), Some(0));
}

#[test]
fn exact_path_beats_pattern_beats_prefix() {
    let r = router(&[
        route("prefix").prefix("/users"),
        route("param").path("/users/{id}"),
        route("exact").path("/users/me"),
    ]);
    assert_eq!(req("/users/me").route(&r), Some(2));
    assert_eq!(req("/users/5").route(&r), Some(1));
    assert_eq!(req("/users/5/x").route(&r), Some(0));
    assert_eq!(req("/users").route(&r), Some(0));
}

#[test]
fn exact_path_beats_pattern_even_with_methods() {
    // Path precedence (2) comes before method precedence (3).
    let r = router(&[route("param").path("/users/{id}").methods(&["GET"]), route("exact").path("/users/me")]);
    assert_eq!(req("/users/me").route(&r), Some(1));
}

#[test]
fn more_literal_segments_win() {
    let r = router(&[route("two-params").path("/{a}/{b}/c"), route("one-param").path("/{a}/b/c")]);
    assert_eq!(req("/a/b/c").route(&r), Some(1));
    assert_eq!(req("/a/x/c").route(&r), Some(0));
}

#[test]
fn earlier_literal_wins() {
    let r = router(&[route("late").path("/{x}/b"), route("early").path("/a/{y}")]);
    let m = req("/a/b").on(&r).unwrap();
    assert_eq!(m.route, 1);
    assert_eq!(m.params, vec![(Arc::from("y"), "b".to_owned())]);
    assert_eq!(req("/z/b").route(&r), Some(0));
}

#[test]
fn earlier_literal_wins_across_first_segment_buckets() {
    // `/a/{x}/c` is bucketed under its first literal, `/{x}/b/c` under params; the
    // merge must still respect ranks in both directions.
    let r = router(&[
        route("p1").path("/{x}/b/c"),
        route("p2").path("/a/{x}/c"),
        route("p3").path("/a/{x}/{y}"),
        route("p4").path("/{x}/{y}/c"),
    ]);
    assert_eq!(req("/a/b/c").route(&r), Some(1));
    assert_eq!(req("/z/b/c").route(&r), Some(0));
    assert_eq!(req("/a/q/z").route(&r), Some(2));
    assert_eq!(req("/z/q/c").route(&r), Some(3));
}

#[test]
fn patterns_filed_under_later_literals() {
    let r = router(&[
        route("second").path("/{a}/x/{b}"),
        route("third").path("/{a}/{b}/y"),
        route("first").path("/q/{a}/{b}"),
        route("none").path("/{a}/{b}/{c}"),
    ]);
    assert_eq!(req("/q/x/y").route(&r), Some(2));
    assert_eq!(req("/z/x/y").route(&r), Some(0));
    assert_eq!(req("/z/w/y").route(&r), Some(1));
    assert_eq!(req("/z/w/v").route(&r), Some(3));
}

#[test]
fn many_literal_positions_fall_back_to_a_scan() {
    // Ten patterns of ten segments, each with its only literal at another position.
    let routes: Vec<R> = (0..10)
        .map(|at| {
            let segs: Vec<String> =
                (0..10).map(|i| if i == at { "lit".to_owned() } else { format!("{{p{i}}}") }).collect();
            route(&format!("r{at}")).path(&format!("/{}", segs.join("/")))
        })
        .collect();
    let r = router(&routes);
    for at in 0..10 {
        let segs: Vec<&str> = (0..10).map(|i| if i == at { "lit" } else { "v" }).collect();
        assert_eq!(req(&format!("/{}", segs.join("/"))).route(&r), Some(at));
    }
    assert_eq!(req("/lit/lit/v/v/v/v/v/v/v/v").route(&r), Some(0), "earlier literal wins");
    assert_eq!(req("/v/v/v/v/v/v/v/v/v/v").route(&r), None);
}

#[test]
fn longer_prefix_wins() {
    let r = router(&[
        route("root").prefix("/"),
        route("api").prefix("/api"),
        route("api-slash").prefix("/api/"),
        route("v1").prefix("/api/v1"),
    ]);
    assert_eq!(req("/api/v1/x").route(&r), Some(3));
    assert_eq!(req("/api/v2").route(&r), Some(2));
    assert_eq!(req("/api").route(&r), Some(1));
    assert_eq!(req("/other").route(&r), Some(0));
}

#[test]
fn methods_listed_beat_any_method() {
    let r = router(&[route("any").path("/x"), route("get").path("/x").methods(&["GET"])]);
    assert_eq!(req("/x").route(&r), Some(1));
    assert_eq!(req("/x").method(Method::PUT).route(&r), Some(0));
    let r = router(&[route("any").prefix("/x"), route("get").prefix("/x").methods(&["GET"])]);
    assert_eq!(req("/x/y").route(&r), Some(1));
    let r = router(&[route("any").path("/x/{a}"), route("get").path("/x/{b}").methods(&["GET"])]);
    assert_eq!(req("/x/y").route(&r), Some(1));
}

#[test]
fn more_headers_win() {
    let r = router(&[
        route("one").path("/x").header("a", "1"),
        route("two").path("/x").header("a", "1").header("b", "*"),
        route("none").path("/x"),
    ]);
    assert_eq!(req("/x").header("a", "1").header("b", "x").route(&r), Some(1));
    assert_eq!(req("/x").header("a", "1").route(&r), Some(0));
    assert_eq!(req("/x").route(&r), Some(2));
}

#[test]
fn query_conditions_take_decoded_parameters_and_rank_like_headers() {
    let r = router(&[
        route("v2").prefix("/api").query("version", "2"),
        route("beta").prefix("/api").query("beta", "*").header("x-a", "1"),
        route("any").prefix("/api"),
    ]);
    let find = |q: Option<&str>| {
        r.find_with_query(None, &Method::GET, "/api/x", q, &HeaderMap::new()).map(|m| m.route)
    };
    assert_eq!(find(Some("version=2")), Some(0));
    assert_eq!(find(Some("a=1&version=2&b")), Some(0), "anywhere in the query");
    assert_eq!(find(Some("version=%32")), Some(0), "percent-decoded");
    assert_eq!(find(Some("version=1")), Some(2));
    assert_eq!(find(Some("versions=2")), Some(2), "the whole name");
    assert_eq!(find(None), Some(2));
    assert_eq!(find(Some("beta")), Some(2), "`beta` needs its header too");
    let both = r.find_with_query(None, &Method::GET, "/api/x", Some("beta&version=2"), &{
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h
    });
    assert_eq!(both.map(|m| m.route), Some(1), "two conditions outrank one");
    // `find` has no query: only routes without query conditions take it.
    assert_eq!(req("/api/x").route(&r), Some(2));
    // The same conditions twice is a duplicate; another value is not.
    let dup = problems(&[route("a").path("/x").query("v", "1"), route("b").path("/x").query("v", "1")]);
    assert_eq!(dup.len(), 1, "{dup:?}");
    assert!(build(&[route("a").path("/x").query("v", "1"), route("b").path("/x").query("v", "2")]).is_ok());
}

#[test]
fn methods_rank_before_headers() {
    let r = router(&[route("hdr").path("/x").header("a", "1"), route("get").path("/x").methods(&["GET"])]);
    assert_eq!(req("/x").header("a", "1").route(&r), Some(1));
}

#[test]
fn config_order_breaks_ties() {
    let r = router(&[
        route("first").path("/x").methods(&["GET"]),
        route("second").path("/x").methods(&["GET", "POST"]),
    ]);
    assert_eq!(req("/x").route(&r), Some(0));
    assert_eq!(req("/x").method(Method::POST).route(&r), Some(1));
    let r = router(&[route("first").path("/{a}/x"), route("second").path("/{a}/{b}").methods(&["GET"])]);
    assert_eq!(req("/q/x").route(&r), Some(0), "path specificity before methods");
}

#[test]
fn order_does_not_depend_on_the_given_order() {
    let routes = [route("a").path("/x").methods(&["GET"]), route("b").path("/x").methods(&["GET", "PUT"])];
    let given = vec![(1, &routes[1].0), (0, &routes[0].0)];
    assert_eq!(req("/x").route(&Router::build(&given).unwrap()), Some(0));
}

// ---- problems -----------------------------------------------------------------

#[test]
fn identical_matches_are_rejected() {
    let p = problems(&[
        route("a").path("/users/{id}").hosts(&["A.test", "b.test"]).methods(&["GET", "POST"]),
        route("other").path("/users/{id}"),
        route("b").path("/users/{uid}").hosts(&["b.test", "a.test"]).methods(&["POST", "GET", "GET"]),
    ]);
    assert_eq!(
        p,
        vec![(
            "routes[2].match".to_owned(),
            "route `b` has the same match as route `a`; it can never be chosen".to_owned()
        )]
    );
    let p =
        problems(&[route("a").prefix("/x").header("X-A", "1"), route("b").prefix("/x").header("x-a", "1")]);
    assert_eq!(p[0].0, "routes[1].match");
}

#[test]
fn similar_matches_are_fine() {
    router(&[
        route("a").path("/x"),
        route("b").prefix("/x"),
        route("c").path("/x").methods(&["GET"]),
        route("d").path("/x").header("a", "*"),
        route("e").path("/x").header("a", "1"),
        route("f").path("/x").hosts(&["x.test"]),
        route("g").path("/x").hosts(&["*.x.test"]),
    ]);
}

#[test]
fn bad_paths_are_reported_at_their_field() {
    let cases = [
        ("users", "must start with `/`"),
        ("/users/{}", "empty parameter name `{}`"),
        ("/a/{id}/b/{id}", "duplicate parameter name `{id}`"),
        ("/users/x{id}", "must be a whole segment"),
        ("/users/{id}x", "must be a whole segment"),
        ("/users/{a}{b}", "must be a whole segment"),
        ("/users/{{id}}", "must be a whole segment"),
        ("/users/id}", "must be a whole segment"),
        ("/users/{a.b}", "invalid parameter name"),
        ("/users/*", "`*` is not supported"),
        ("/users?x=1", "`?` is not allowed"),
        ("/a#b", "`#` is not allowed"),
        ("/a b", "percent-encoded"),
        ("/café", "percent-encoded"),
    ];
    for (path, expected) in cases {
        let p = problems(&[route("ok").path("/fine"), route("bad").path(path)]);
        assert_eq!(p.len(), 1, "{path}: {p:?}");
        assert_eq!(p[0].0, "routes[1].match.path", "{path}");
        assert!(p[0].1.contains(expected), "{path}: {}", p[0].1);
    }
    for (prefix, expected) in
        [("api", "must start with `/`"), ("/api/*", "`*`"), ("/u/{id}", "not supported")]
    {
        let p = problems(&[route("bad").prefix(prefix)]);
        assert_eq!(p[0].0, "routes[0].match.path_prefix", "{prefix}");
        assert!(p[0].1.contains(expected), "{prefix}: {}", p[0].1);
    }
}

#[test]
fn path_and_prefix_exactly_one() {
    let p = problems(&[route("none"), route("both").path("/a").prefix("/a")]);
    assert_eq!(p[0].0, "routes[0].match");
    assert_eq!(p[1].0, "routes[1].match");
}

#[test]
fn bad_hosts_methods_and_headers() {
    let p = problems(&[route("a").path("/").hosts(&[
        "ok.test",
        "*",
        "a.*.test",
        "x.test:80",
        "bücher.test",
        "*.",
    ])]);
    let at: Vec<&str> = p.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        at,
        [
            "routes[0].match.hosts[1]",
            "routes[0].match.hosts[2]",
            "routes[0].match.hosts[3]",
            "routes[0].match.hosts[4]",
            "routes[0].match.hosts[5]"
        ]
    );
    let p = problems(&[route("a").path("/").methods(&["GET", "get", "BAD METHOD"])]);
    assert_eq!(
        p[0],
        ("routes[0].match.methods[1]".to_owned(), "methods are case-sensitive; write `GET`".to_owned())
    );
    assert_eq!(p[1].0, "routes[0].match.methods[2]");
    let p = problems(&[route("a").path("/").header("bad name", "1").header("ok", "bad\nvalue")]);
    assert_eq!(p.len(), 2);
    assert!(p.iter().any(|(a, _)| a == "routes[0].match.headers.bad name"));
    assert!(p.iter().any(|(a, _)| a == "routes[0].match.headers.ok"));
}

#[test]
fn all_problems_are_reported_with_config_indexes() {
    let routes = [route("a").path("x"), route("b").path("/ok"), route("c").prefix("y")];
    let given = vec![(4, &routes[0].0), (7, &routes[1].0), (9, &routes[2].0)];
    let p: Vec<String> = Router::build(&given).unwrap_err().into_iter().map(|p| p.path).collect();
    assert_eq!(p, ["routes[4].match.path", "routes[9].match.path_prefix"]);
}

// ---- a larger table -----------------------------------------------------------

#[test]
fn many_routes_agree_with_a_linear_reference() {
    // Each request's winner is known by construction; the indexed tables must find it.
    let mut routes = Vec::new();
    for s in 0..50 {
        routes.push(route(&format!("exact{s}")).path(&format!("/svc{s}/health")));
        routes.push(route(&format!("param{s}")).path(&format!("/svc{s}/items/{{id}}")));
        routes.push(route(&format!("deep{s}")).path(&format!("/svc{s}/items/{{id}}/parts/{{part}}")));
        routes.push(route(&format!("prefix{s}")).prefix(&format!("/svc{s}")));
        routes.push(route(&format!("host{s}")).prefix("/").hosts(&[&format!("h{s}.test")]));
    }
    routes.push(route("generic").path("/{svc}/items/{id}"));
    let r = router(&routes);
    for s in 0..50 {
        let base = s * 5;
        assert_eq!(req(&format!("/svc{s}/health")).route(&r), Some(base));
        let m = req(&format!("/svc{s}/items/9")).on(&r).unwrap();
        assert_eq!((m.route, m.params[0].1.as_str()), (base + 1, "9"));
        let m = req(&format!("/svc{s}/items/9/parts/p")).on(&r).unwrap();
        assert_eq!((m.route, m.params.len()), (base + 2, 2));
        assert_eq!(req(&format!("/svc{s}/other")).route(&r), Some(base + 3));
        assert_eq!(req(&format!("/svc{s}/health")).host(&format!("H{s}.test")).route(&r), Some(base + 4));
    }
    assert_eq!(req("/zzz/items/1").route(&r), Some(250));
    assert_eq!(req("/zzz/other").route(&r), None);
}
