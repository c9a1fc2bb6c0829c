//! The aggregate target: parallel calls composed into one JSON answer, with templated
//! paths, per-call timeouts, optional and required calls, and merged objects.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::harness::{Client, TestServer, full, gateway, url};

/// An upstream answering JSON that names the path and query it was asked for and the
/// `x-tenant` header it got.
async fn describing(name: &'static str) -> TestServer {
    TestServer::start(move |req: Request<Incoming>| {
        let seen = serde_json::json!({
            "from": name,
            "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
            "tenant": req.headers().get("x-tenant").and_then(|v| v.to_str().ok()),
        });
        async move {
            Response::builder()
                .header("content-type", "application/json")
                .body(full(seen.to_string()))
                .unwrap()
        }
    })
    .await
}

/// An upstream that never answers (its handler waits forever).
async fn silent() -> TestServer {
    TestServer::start(|_req| async {
        std::future::pending::<()>().await;
        Response::new(full(""))
    })
    .await
}

async fn status(code: u16) -> TestServer {
    TestServer::start(move |_req| async move { Response::builder().status(code).body(full("nope")).unwrap() })
        .await
}

fn config(upstreams: &[(&str, &TestServer)], calls: &str) -> String {
    let ups: String = upstreams
        .iter()
        .map(|(n, s)| format!("  {n}: {{ targets: [{{ address: \"{}\" }}] }}\n", s.addr))
        .collect();
    format!(
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nupstreams:\n{ups}routes:\n  - name: agg_{}\n    match: {{ path: \"/dash/{{user}}\" }}\n    target:\n      aggregate:\n        calls:\n{calls}",
        upstreams.len()
    )
}

async fn get(gw: &sluice::Gateway, path: &str) -> crate::harness::Reply {
    let req = Request::get(url(gw.addr("public"), path)).header("x-tenant", "acme").body(full("")).unwrap();
    // A call without a timeout that hung would hang the test: bound it.
    tokio::time::timeout(Duration::from_secs(20), Client::http1().send(req)).await.expect("answered")
}

#[tokio::test]
async fn calls_are_made_with_templated_paths_and_composed_under_their_names() {
    let (users, orders) = (describing("users").await, describing("orders").await);
    let gw = gateway(&config(
        &[("users", &users), ("orders", &orders)],
        "          - { name: profile, upstream: users, path: \"/users/{user}\" }\n          - { name: orders, upstream: orders, path: \"/orders?user={user}&limit={query.limit}\" }\n",
    ))
    .await;
    let r = get(&gw, "/dash/a%20b?limit=5%2B1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["profile"]["from"], "users");
    // A path parameter goes in as the client wrote it; a query value is encoded anew.
    assert_eq!(body["profile"]["path"], "/users/a%20b");
    assert_eq!(body["orders"]["path"], "/orders?user=a%20b&limit=5%2B1");
    assert_eq!(body["orders"]["tenant"], "acme", "calls carry the request's headers");
    assert!(body.get("_errors").is_none(), "{body}");
}

#[tokio::test]
async fn a_slow_and_a_failing_optional_call_leave_nulls_and_errors_and_the_rest_is_served() {
    let (users, slow, broken) = (describing("users").await, silent().await, status(500).await);
    let gw = gateway(&config(
        &[("users", &users), ("slow", &slow), ("broken", &broken)],
        "          - { name: profile, upstream: users, path: \"/users/{user}\" }\n          - { name: recs, upstream: slow, path: /recs, timeout: 200ms, required: false }\n          - { name: ads, upstream: broken, path: /ads, required: false }\n",
    ))
    .await;
    let r = get(&gw, "/dash/7").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["profile"]["path"], "/users/7");
    assert!(body["recs"].is_null() && body["ads"].is_null(), "{body}");
    assert!(body["_errors"]["recs"].as_str().unwrap().contains("200ms"), "{body}");
    assert!(body["_errors"]["ads"].as_str().unwrap().contains("500"), "{body}");
    assert_eq!((slow.request_count(), broken.request_count()), (1, 1));
}

#[tokio::test]
async fn a_required_call_that_fails_fails_the_request() {
    let (users, slow, broken) = (describing("users").await, silent().await, status(503).await);
    let gw = gateway(&config(
        &[("users", &users), ("broken", &broken)],
        "          - { name: profile, upstream: users, path: /u }\n          - { name: billing, upstream: broken, path: /b }\n",
    ))
    .await;
    let r = get(&gw, "/dash/1").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_failed");

    let gw = gateway(&config(
        &[("users", &users), ("slow", &slow), ("x", &broken)],
        "          - { name: profile, upstream: users, path: /u }\n          - { name: ledger, upstream: slow, path: /l, timeout: 150ms }\n",
    ))
    .await;
    let r = get(&gw, "/dash/1").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(slow.request_count(), 1);
}

#[tokio::test]
async fn merged_calls_put_their_fields_at_the_top_level() {
    let (a, b) = (describing("a").await, describing("b").await);
    let gw = gateway(&config(
        &[("a", &a), ("b", &b)],
        "          - { name: first, upstream: a, path: /a, merge: true }\n          - { name: second, upstream: b, path: /b }\n",
    ))
    .await;
    let body = get(&gw, "/dash/x").await.json();
    assert_eq!(body["from"], "a");
    assert_eq!(body["path"], "/a");
    assert_eq!(body["second"]["from"], "b");
    assert!(body.get("first").is_none(), "{body}");
}
