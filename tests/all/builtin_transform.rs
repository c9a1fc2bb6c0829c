//! End-to-end tests of the built-in `transform` plugin through the gateway: a real
//! upstream reports what it received (method, target, headers, body), the client
//! checks what came back.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use sluice::Gateway;
use tempfile::TempDir;

use crate::harness::{Client, Reply, TestServer, full, url};

/// An upstream that answers with JSON describing the request it received, body
/// included (as text).
async fn recorder() -> TestServer {
    TestServer::start(|req: Request<Incoming>| async move {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), Value::from(v.to_str().unwrap_or("?"))))
            .collect();
        let doc = json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(full(serde_json::to_vec(&doc).unwrap()))
            .unwrap()
    })
    .await
}

/// A gateway with one route to `upstream` whose chain is the `transform` plugin
/// with `config` (YAML, indented for the `config:` key). The plugins folder is an
/// empty temporary one, so the built-in plugin is used.
async fn start(up: &TestServer, route_match: &str, config: &str) -> (Gateway, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "version: 1
listeners:
  - name: public
    address: 127.0.0.1:0
plugins:
  dir: {plugins}
  cache_dir: {cache}
upstreams:
  app:
    targets:
      - address: {addr}
routes:
  - name: app
    match: {route_match}
    target: {{ upstream: app }}
    plugins:
      - name: transform
        config:
{config}",
        plugins = dir.path().join("plugins").display(),
        cache = dir.path().join("cache").display(),
        addr = up.addr,
    );
    let gw = match Gateway::builder().config_yaml(&yaml) {
        Ok(b) => b.start().await.unwrap_or_else(|e| panic!("gateway failed to start: {e}")),
        Err(e) => panic!("config rejected:\n{e}"),
    };
    (gw, dir)
}

async fn post_json(gw: &Gateway, target: &str, headers: &[(&str, &str)], body: &str, ct: &str) -> Reply {
    let mut req = Request::post(url(gw.addr("public"), target)).header("content-type", ct);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Client::http1().send(req.body(full(Bytes::copy_from_slice(body.as_bytes()))).unwrap()).await
}

const REQUEST_RULES: &str = r#"          request:
            headers:
              rename: { x-old: x-new }
              remove: [x-debug]
              set: { x-user: "{{header.x-client}}-{{path.id}}", x-route: "{{route}}" }
              add: { x-tag: added }
            path:
              regex: { pattern: "^/users/([0-9]+)/posts/(?P<post>[0-9]+)$", replace: "/v2/posts/${post}/author/$1" }
            query:
              remove: [debug]
              add: { post: "{{path.post}}" }
            body:
              rename: [{ from: /title, to: /post/title }]
              remove: [/secret]
              set:
                - { pointer: /author/id, value: "{{path.id}}", as: number }
                - { pointer: /author/groups, value: "{{consumer.groups|none}}" }
                - { pointer: /meta, value: { method: "{{method}}", q: "{{query.q}}", client: "{{header.x-client}}" } }
"#;

const POSTS: &str = "{ path: \"/users/{id}/posts/{post}\" }";

#[tokio::test]
async fn the_upstream_sees_rewritten_headers_path_query_and_json_body() {
    let up = recorder().await;
    let (gw, _dir) = start(&up, POSTS, REQUEST_RULES).await;
    let reply = post_json(
        &gw,
        "/users/42/posts/7?debug=1&q=hello%20world",
        &[("x-client", "web"), ("x-debug", "1"), ("x-old", "o"), ("x-tag", "mine")],
        r#"{"title": "T", "secret": "s", "keep": [1, 2]}"#,
        "application/json",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["uri"], "/v2/posts/7/author/42?q=hello%20world&post=7", "path regex captures and query");
    let h = &seen["headers"];
    assert_eq!(h["x-user"], "web-42", "header template with a path param");
    assert_eq!(h["x-route"], "app");
    assert_eq!(h["x-new"], "o");
    assert!(h.get("x-old").is_none() && h.get("x-debug").is_none(), "{h}");
    let body: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "post": {"title": "T"},
            "keep": [1, 2],
            "author": {"id": 42, "groups": "none"},
            "meta": {"method": "POST", "q": "hello world", "client": "web"},
        })
    );
    assert_eq!(
        h["content-length"],
        seen["body"].as_str().unwrap().len().to_string(),
        "length follows the body"
    );
}

#[tokio::test]
async fn a_malformed_json_body_gets_400_and_never_reaches_the_upstream() {
    let up = recorder().await;
    let (gw, _dir) = start(&up, POSTS, REQUEST_RULES).await;
    let reply = post_json(&gw, "/users/1/posts/2", &[], "{\"title\": oops", "application/json").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let err = reply.json();
    assert_eq!(err["error"]["status"], 400);
    assert_eq!(err["error"]["code"], "invalid_json_body");
    assert!(err["error"]["message"].as_str().unwrap().contains("not valid JSON"), "{err}");
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn non_json_bodies_pass_untouched_while_headers_and_path_still_change() {
    let up = recorder().await;
    let (gw, _dir) = start(&up, POSTS, REQUEST_RULES).await;
    for (ct, body) in
        [("text/plain", "{\"title\": oops"), ("application/x-www-form-urlencoded", "a=1&secret=2")]
    {
        let reply = post_json(&gw, "/users/1/posts/2", &[("x-client", "cli")], body, ct).await;
        assert_eq!(reply.status, 200, "{ct}: {}", reply.text());
        let seen = reply.json();
        assert_eq!(seen["body"], body, "{ct} body untouched");
        assert_eq!(seen["uri"], "/v2/posts/2/author/1?post=2");
        assert_eq!(seen["headers"]["x-user"], "cli-1");
    }
}

#[tokio::test]
async fn the_client_sees_mapped_status_response_headers_and_json_fields() {
    // A JSON 404 under /json, a text 404 elsewhere, both with an internal header.
    let up = TestServer::start(|req: Request<Incoming>| async move {
        let json = req.uri().path().starts_with("/json");
        let (ct, body) = if json {
            ("application/json", r#"{"error": "missing", "internal": {"trace": "abc"}}"#)
        } else {
            ("text/plain", "not found: {internal}")
        };
        Response::builder()
            .status(404)
            .header("content-type", ct)
            .header("x-internal", "secret")
            .body(full(body))
            .unwrap()
    })
    .await;
    let config = r#"          response:
            status: { 404: 200, "500": 503 }
            headers:
              remove: [x-internal]
              set: { x-upstream-status: "{{status}}", x-item: "{{path.id}}", x-client: "{{header.x-client|anonymous}}" }
            body:
              remove: [/internal]
              set:
                - { pointer: /found, value: false }
                - { pointer: /id, value: "{{path.id}}" }
                - { pointer: /upstream_status, value: "{{status}}" }
"#;
    let (gw, _dir) = start(&up, "{ path: \"/{kind}/{id}\" }", config).await;
    let req =
        Request::get(url(gw.addr("public"), "/json/17")).header("x-client", "web").body(full("")).unwrap();
    let reply = Client::http1().send(req).await;
    assert_eq!(reply.status, 200, "404 mapped to 200");
    assert_eq!(reply.header("x-upstream-status"), Some("404"));
    assert_eq!(reply.header("x-item"), Some("17"), "request data reaches response templates");
    assert_eq!(reply.header("x-client"), Some("web"));
    assert_eq!(reply.header("x-internal"), None);
    assert_eq!(reply.json(), json!({"error": "missing", "found": false, "id": "17", "upstream_status": 404}));

    let reply = Client::http1().get(&url(gw.addr("public"), "/text/3")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-client"), Some("anonymous"));
    assert_eq!(reply.text(), "not found: {internal}", "a non-JSON response body passes untouched");
}

#[tokio::test]
async fn a_header_only_config_leaves_bodies_streaming_through() {
    let up = recorder().await;
    let config = "          request:\n            headers: { set: { x-a: \"1\" } }\n          response:\n            headers: { set: { x-b: \"2\" } }\n";
    let (gw, _dir) = start(&up, "{ path_prefix: / }", config).await;
    let body = "x".repeat(200_000);
    let reply = post_json(&gw, "/big", &[], &body, "application/json").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-b"), Some("2"));
    let seen = reply.json();
    assert_eq!(seen["headers"]["x-a"], "1");
    assert_eq!(
        seen["body"].as_str().unwrap().len(),
        body.len(),
        "an invalid JSON body passes: no body rules"
    );
}

#[tokio::test]
async fn a_bad_rule_fails_the_load_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nplugins:\n  dir: {}\n  cache_dir: {}\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: transform\n        config: {{ request: {{ path: {{ regex: {{ pattern: \"([0-9]+\", replace: /x }} }} }} }}\n",
        dir.path().join("plugins").display(),
        dir.path().join("cache").display(),
    );
    let err = match Gateway::builder().config_yaml(&yaml) {
        Ok(b) => match b.start().await {
            Ok(_) => panic!("the config was accepted"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    assert!(err.contains("routes[0].plugins[0].config"), "{err}");
    assert!(err.contains("request.path.regex.pattern"), "{err}");
}
