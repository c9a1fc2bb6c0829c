//! Routing precedence end to end: the most specific route wins.

use crate::harness::{Client, config, gateway, url};

const ROUTES: &str = r#"
routes:
  - name: catch-all
    match: { path_prefix: / }
    target: { echo: {} }
  - name: api-prefix
    match: { path_prefix: /api }
    target: { echo: {} }
  - name: api-v1-prefix
    match: { path_prefix: /api/v1 }
    target: { echo: {} }
  - name: user-by-id
    match: { path: "/api/v1/users/{id}" }
    target: { echo: {} }
  - name: user-me
    match: { path: /api/v1/users/me }
    target: { echo: {} }
  - name: user-delete
    match: { path: "/api/v1/users/{id}", methods: [DELETE] }
    target: { echo: {} }
  - name: canary
    match: { path_prefix: /api, headers: { x-canary: "1" } }
    target: { echo: {} }
  - name: wildcard-host
    match: { hosts: ["*.example.com"], path_prefix: / }
    target: { echo: {} }
  - name: exact-host
    match: { hosts: [admin.example.com], path_prefix: / }
    target: { echo: {} }
"#;

#[tokio::test]
async fn most_specific_route_wins() {
    let gw = gateway(&config(ROUTES)).await;
    let addr = gw.addr("public");
    let client = Client::http1();
    let route_of = |method: &'static str, path: &'static str, host: Option<&'static str>, canary: bool| {
        let client = client.clone();
        async move {
            let mut req = http::Request::builder().method(method).uri(url(addr, path));
            if let Some(h) = host {
                req = req.header("host", h);
            }
            if canary {
                req = req.header("x-canary", "1");
            }
            let reply = client.send(req.body(crate::harness::full("")).unwrap()).await;
            assert_eq!(reply.status, 200, "{method} {path}");
            (reply.json()["route"].as_str().unwrap().to_owned(), reply.json()["params"].clone())
        }
    };
    assert_eq!(route_of("GET", "/", None, false).await.0, "catch-all");
    assert_eq!(route_of("GET", "/apix", None, false).await.0, "catch-all");
    assert_eq!(route_of("GET", "/api", None, false).await.0, "api-prefix");
    assert_eq!(route_of("GET", "/api/v2/x", None, false).await.0, "api-prefix");
    assert_eq!(route_of("GET", "/api/v1/things", None, false).await.0, "api-v1-prefix");
    let (route, params) = route_of("GET", "/api/v1/users/42", None, false).await;
    assert_eq!(route, "user-by-id");
    assert_eq!(params["id"], "42");
    assert_eq!(route_of("GET", "/api/v1/users/me", None, false).await.0, "user-me");
    assert_eq!(route_of("DELETE", "/api/v1/users/42", None, false).await.0, "user-delete");
    assert_eq!(route_of("GET", "/api/v1/users/42/posts", None, false).await.0, "api-v1-prefix");
    assert_eq!(route_of("GET", "/api/other", None, true).await.0, "canary");
    assert_eq!(route_of("GET", "/api", Some("shop.example.com"), false).await.0, "wildcard-host");
    assert_eq!(route_of("GET", "/api", Some("ADMIN.example.com:8443"), false).await.0, "exact-host");
    assert_eq!(route_of("GET", "/x", Some("a.b.example.com"), false).await.0, "catch-all");
    gw.shutdown().await;
}

#[tokio::test]
async fn routes_can_be_limited_to_listeners() {
    let yaml = r#"version: 1
listeners:
  - { name: public, address: "127.0.0.1:0" }
  - { name: internal, address: "127.0.0.1:0" }
routes:
  - name: everywhere
    match: { path_prefix: / }
    target: { static: { body: everywhere } }
  - name: admin
    match: { path_prefix: /admin }
    target: { static: { body: admin } }
    listeners: [internal]
"#;
    let gw = gateway(yaml).await;
    let client = Client::http1();
    assert_eq!(client.get(&url(gw.addr("internal"), "/admin/x")).await.text(), "admin");
    assert_eq!(client.get(&url(gw.addr("public"), "/admin/x")).await.text(), "everywhere");
    gw.shutdown().await;
}

/// A version chosen by query parameter, header or path prefix: each its own route.
#[tokio::test]
async fn a_version_is_chosen_by_query_header_or_path_prefix() {
    let gw = gateway(&config(
        r#"
routes:
  - name: v1
    match: { path_prefix: /items }
    target: { static: { body: v1 } }
  - name: v2-by-query
    match: { path_prefix: /items, query: { version: "2" } }
    target: { static: { body: v2 } }
  - name: v2-by-header
    match: { path_prefix: /items, headers: { x-api-version: "2" } }
    target: { static: { body: v2 } }
  - name: v2-by-prefix
    match: { path_prefix: /v2/items }
    target: { static: { body: v2 } }
"#,
    ))
    .await;
    let client = Client::http1();
    let at = |p: &str| url(gw.addr("public"), p);
    assert_eq!(client.get(&at("/items/7")).await.text(), "v1");
    assert_eq!(client.get(&at("/items/7?version=2")).await.text(), "v2");
    assert_eq!(client.get(&at("/items/7?sort=asc&version=2")).await.text(), "v2");
    assert_eq!(client.get(&at("/items/7?version=3")).await.text(), "v1");
    assert_eq!(client.get(&at("/v2/items/7")).await.text(), "v2");
    let req = http::Request::get(at("/items/7"))
        .header("x-api-version", "2")
        .body(crate::harness::full(""))
        .unwrap();
    assert_eq!(client.send(req).await.text(), "v2");
}
