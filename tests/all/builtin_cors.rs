//! End-to-end tests of the built-in `cors` plugin through the gateway: preflights are
//! answered by the gateway (the upstream counts what reaches it), actual requests go
//! upstream and come back with the CORS headers.

use http::Request;
use sluice::Gateway;
use tempfile::TempDir;

use crate::harness::{Client, Reply, TestServer, full, url};

const APP: &str = r#"{ allow_origins: ["https://app.example.com", "https://*.example.org"], allow_methods: [GET, POST, PUT], allow_headers: [content-type, x-token], expose_headers: [x-request-id, x-total], allow_credentials: true, max_age: 600 }"#;

/// Starts a gateway with one route to `up` whose chain is `cors` with `config`, or
/// returns the load error.
async fn try_start(up: &TestServer, config: &str) -> Result<(Gateway, TempDir), String> {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "version: 1
listeners:
  - name: public
    address: 127.0.0.1:0
plugins:
  dir: {}
  cache_dir: {}
upstreams:
  app:
    targets:
      - address: {}
routes:
  - name: app
    match: {{ path_prefix: / }}
    target: {{ upstream: app }}
    plugins:
      - name: cors
        config: {config}
",
        dir.path().join("plugins").display(),
        dir.path().join("cache").display(),
        up.addr,
    );
    let gw = Gateway::builder()
        .config_yaml(&yaml)
        .map_err(|e| e.to_string())?
        .start()
        .await
        .map_err(|e| e.to_string())?;
    Ok((gw, dir))
}

async fn start(up: &TestServer, config: &str) -> (Gateway, TempDir) {
    try_start(up, config).await.unwrap_or_else(|e| panic!("gateway failed to start: {e}"))
}

async fn send(gw: &Gateway, method: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(url(gw.addr("public"), "/api/items"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Client::http1().send(req.body(full("")).unwrap()).await
}

async fn preflight(gw: &Gateway, origin: &str, method: &str, headers: Option<&str>) -> Reply {
    let mut h = vec![("origin", origin), ("access-control-request-method", method)];
    if let Some(requested) = headers {
        h.push(("access-control-request-headers", requested));
    }
    send(gw, "OPTIONS", &h).await
}

#[tokio::test]
async fn an_allowed_preflight_is_answered_by_the_gateway_with_204() {
    let up = TestServer::echo().await;
    let (gw, _dir) = start(&up, APP).await;
    let reply = preflight(&gw, "https://app.example.com", "PUT", Some("Content-Type, X-Token")).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(reply.header("access-control-allow-methods"), Some("GET, POST, PUT"));
    assert_eq!(reply.header("access-control-allow-headers"), Some("content-type, x-token"));
    assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(reply.header("access-control-max-age"), Some("600"));
    assert!(reply.header("vary").unwrap().contains("Origin"));
    assert!(reply.body.is_empty());
    assert_eq!(up.request_count(), 0, "a preflight never reaches the upstream");
}

#[tokio::test]
async fn a_wildcard_pattern_allows_subdomains_but_not_the_domain_or_lookalikes() {
    let up = TestServer::echo().await;
    let (gw, _dir) = start(&up, APP).await;
    let reply = preflight(&gw, "https://eu.shop.example.org", "GET", None).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://eu.shop.example.org"));
    for origin in [
        "https://example.org",
        "https://evilexample.org",
        "http://shop.example.org",
        "https://shop.example.org.evil.net",
    ] {
        let reply = preflight(&gw, origin, "GET", None).await;
        assert_eq!(reply.status, 403, "{origin}");
        assert_eq!(reply.header("access-control-allow-origin"), None, "{origin}");
    }
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn a_refused_preflight_gets_403_with_a_json_error_and_no_cors_headers() {
    let up = TestServer::echo().await;
    let (gw, _dir) = start(&up, APP).await;
    for (origin, method, headers, why) in [
        ("https://evil.com", "GET", None, "origin"),
        ("https://app.example.com", "DELETE", None, "method `DELETE`"),
        ("https://app.example.com", "POST", Some("content-type, x-admin"), "header `x-admin`"),
    ] {
        let reply = preflight(&gw, origin, method, headers).await;
        assert_eq!(reply.status, 403);
        assert_eq!(reply.header("access-control-allow-origin"), None);
        assert_eq!(reply.header("access-control-allow-credentials"), None);
        let err = reply.json();
        assert_eq!(err["error"]["code"], "cors_preflight_refused");
        assert!(err["error"]["message"].as_str().unwrap().contains(why), "{err}");
    }
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn an_actual_request_from_an_allowed_origin_gets_the_cors_headers() {
    let up = TestServer::echo().await;
    let (gw, _dir) = start(&up, APP).await;
    let reply = send(&gw, "GET", &[("origin", "https://app.example.com"), ("cookie", "s=1")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["headers"]["origin"], "https://app.example.com", "the upstream sees the request");
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(reply.header("access-control-expose-headers"), Some("x-request-id, x-total"));
    assert_eq!(reply.header("vary"), Some("Origin"));
    assert_eq!(up.request_count(), 1);

    // An OPTIONS request without Access-Control-Request-Method is not a preflight.
    let reply = send(&gw, "OPTIONS", &[("origin", "https://app.example.com")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn an_actual_request_from_another_origin_is_served_without_cors_headers() {
    let up = TestServer::echo().await;
    let (gw, _dir) = start(&up, APP).await;
    for headers in [&[("origin", "https://evil.com")][..], &[][..]] {
        let reply = send(&gw, "GET", headers).await;
        assert_eq!(reply.status, 200, "the browser, not the gateway, blocks it");
        assert_eq!(reply.header("access-control-allow-origin"), None);
        assert_eq!(reply.header("access-control-allow-credentials"), None);
        assert_eq!(reply.header("vary"), Some("Origin"), "caches must not reuse it for another origin");
    }
}

#[tokio::test]
async fn any_origin_without_credentials_answers_star() {
    let up = TestServer::echo().await;
    let (gw, _dir) = start(&up, "{ allow_origins: [\"*\"], allow_headers: [\"*\"] }").await;
    let reply = preflight(&gw, "https://anyone.net", "PATCH", Some("x-whatever")).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("access-control-allow-headers"), Some("x-whatever"));
    assert_eq!(reply.header("access-control-allow-credentials"), None);
    let reply = send(&gw, "GET", &[("origin", "https://anyone.net")]).await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("vary"), None);
}

#[tokio::test]
async fn star_with_credentials_is_refused_at_load() {
    let up = TestServer::echo().await;
    let err = match try_start(&up, "{ allow_origins: [\"*\"], allow_credentials: true }").await {
        Ok(_) => panic!("the config was accepted"),
        Err(e) => e,
    };
    assert!(err.contains("routes[0].plugins[0].config"), "{err}");
    assert!(err.contains("`*` cannot be combined with allow_credentials"), "{err}");
}

#[tokio::test]
async fn an_answer_from_a_plugin_behind_cors_keeps_the_consumer_in_the_access_log() {
    // auth sets the consumer, rate-limit then answers 429, and that answer goes back
    // through cors's response phase: the access log must still name the consumer.
    let log = crate::harness::AccessLog::get();
    let yaml = "version: 1
listeners:
  - name: public
    address: 127.0.0.1:0
routes:
  - name: consumer-kept
    match: { path_prefix: / }
    target: { echo: {} }
    plugins:
      - name: cors
        config: { allow_origins: [\"https://app.example.com\"] }
      - name: auth
        config: { api_key: { keys: [{ key: right-key, consumer: billing }] } }
      - name: rate-limit
        grants: { kv: true }
        config: { key: [consumer], limits: [{ name: tiny, rate: 1, per: 1h }] }
";
    let gw = Gateway::builder().config_yaml(yaml).unwrap().start().await.unwrap();
    let client = Client::http1();
    let send = || {
        let req = http::Request::get(url(gw.addr("public"), "/x"))
            .header("origin", "https://app.example.com")
            .header("x-api-key", "right-key")
            .body(full(""))
            .unwrap();
        client.send(req)
    };
    let (first, second) = (send().await, send().await);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(second.status, 429, "{}", second.text());
    assert_eq!(second.header("access-control-allow-origin"), Some("https://app.example.com"));
    let lines = log.wait_for(2, |l| l["route"] == "consumer-kept").await;
    let statuses: Vec<&str> = lines.iter().map(|l| l["status"].as_str()).collect();
    assert_eq!(statuses, ["200", "429"], "{lines:?}");
    for line in &lines {
        assert_eq!(line["consumer"], "billing", "{line:?}");
    }
}

#[tokio::test]
async fn the_gateways_error_answers_to_a_failed_request_phase_carry_the_cors_headers() {
    // A browser reads an error only if it carries CORS headers: a plugin that panics
    // (500), runs past its deadline (503) or gets a body too large to buffer (413)
    // behind cors gets the gateway's JSON error with cors's headers on it.
    use sluice_tests::plugins as wasm;
    let p = crate::plugins::Plugins::with(&[
        ("panicker", wasm::PANICKER),
        ("looper", wasm::LOOPER),
        ("body-upper", wasm::BODY_UPPER),
    ]);
    let route = |name: &str, plugin: &str| {
        format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: cors\n        config: {{ allow_origins: [\"https://app.example.com\"] }}\n      - {plugin}\n"
        )
    };
    let gw = p
        .start(&format!(
            "routes:\n{}{}{}",
            route("panics", "name: panicker"),
            route("loops", "{ name: looper, limits: { deadline: 20ms } }"),
            route("buffers", "{ name: body-upper, limits: { max_body: 16B } }"),
        ))
        .await;
    let client = Client::http1();
    for (path, status, code) in [
        ("/panics", 500, "plugin_failed"),
        ("/loops", 503, "plugin_timeout"),
        ("/buffers", 413, "body_too_large"),
    ] {
        let req = http::Request::post(url(gw.addr("public"), path))
            .header("origin", "https://app.example.com")
            .body(full("a body longer than sixteen bytes"))
            .unwrap();
        let r = client.send(req).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], code, "{path}: {}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"), "{path}");
    }
}
