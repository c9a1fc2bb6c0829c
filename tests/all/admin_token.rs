//! The admin listener's bearer token: required beyond loopback, checked on every
//! request but the health check, rotated by a reload of `admin.token_file`.

use http::{Method, Request, StatusCode};
use sluice::Gateway;

use crate::harness::{Client, full, gateway, url};

fn config(admin: &str) -> String {
    format!(
        "version: 1\nadmin: {admin}\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\n\
         routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ static: {{ body: ok }} }}\n"
    )
}

fn rejected(yaml: &str) -> String {
    match Gateway::builder().config_yaml(yaml) {
        Ok(_) => panic!("the config was accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

async fn call(gw: &Gateway, method: Method, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(url(gw.addr("admin"), path));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let reply = Client::http1().send(req.body(full("")).unwrap()).await;
    (reply.status, reply.header("www-authenticate").unwrap_or_default().to_owned())
}

#[test]
fn an_admin_listener_beyond_loopback_without_a_token_is_a_config_error() {
    let err = rejected(&config("{ address: 0.0.0.0:9901 }"));
    assert!(err.contains("admin.address") && err.contains("admin.token_file"), "{err}");
    // With a token it is accepted (checked, not bound: tests stay on loopback).
    assert!(Gateway::builder().config_yaml(&config("{ address: 0.0.0.0:9901, token: s3cret }")).is_ok());
    // Loopback needs none.
    assert!(Gateway::builder().config_yaml(&config("{ address: 127.0.0.1:9901 }")).is_ok());

    let both = rejected(&config("{ address: 127.0.0.1:0, token: a, token_file: t }"));
    assert!(both.contains("admin.token") && both.contains("not both"), "{both}");
    let blank = rejected(&config("{ address: 127.0.0.1:0, token: '  ' }"));
    assert!(blank.contains("admin.token") && blank.contains("empty"), "{blank}");
}

#[tokio::test]
async fn with_a_token_every_admin_request_but_the_health_check_needs_it() {
    let gw = gateway(&config("{ address: 127.0.0.1:0, token: s3cret-token }")).await;
    for (method, path) in [(Method::GET, "/metrics"), (Method::GET, "/-/status"), (Method::POST, "/-/reload")]
    {
        let (status, challenge) = call(&gw, method.clone(), path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without a token");
        assert_eq!(challenge, "Bearer realm=\"sluice-admin\"");
        let (status, _) = call(&gw, method.clone(), path, Some("s3cret-toke")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with a wrong token");
    }
    assert_eq!(call(&gw, Method::GET, "/metrics", Some("s3cret-token")).await.0, StatusCode::OK);
    assert_eq!(call(&gw, Method::GET, "/-/status", Some("s3cret-token")).await.0, StatusCode::OK);
    assert_eq!(call(&gw, Method::GET, "/-/health", None).await.0, StatusCode::OK, "probes need no token");
    // The dashboard's static files carry no data; what they fetch needs the token.
    assert_eq!(call(&gw, Method::GET, "/", None).await.0, StatusCode::OK);
    assert_eq!(call(&gw, Method::GET, "/-/dashboard.js", None).await.0, StatusCode::OK);
    assert_eq!(call(&gw, Method::GET, "/-/calls", None).await.0, StatusCode::UNAUTHORIZED);
    // The gateway's own listener is not affected.
    assert_eq!(Client::http1().get(&url(gw.addr("public"), "/")).await.text(), "ok");
}

#[tokio::test]
async fn a_token_file_is_read_at_load_and_rotated_by_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), "first\n").unwrap();
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, config("{ address: 127.0.0.1:0, token_file: admin-token }")).unwrap();
    let gw = Gateway::builder().config_file(&path).unwrap().start().await.unwrap();
    assert_eq!(call(&gw, Method::GET, "/metrics", Some("first")).await.0, StatusCode::OK, "trimmed");

    std::fs::write(dir.path().join("admin-token"), "second").unwrap();
    assert_eq!(call(&gw, Method::POST, "/-/reload", Some("first")).await.0, StatusCode::OK);
    assert_eq!(call(&gw, Method::GET, "/metrics", Some("first")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&gw, Method::GET, "/metrics", Some("second")).await.0, StatusCode::OK);

    // An unreadable token file fails the reload; the token in force stays.
    std::fs::remove_file(dir.path().join("admin-token")).unwrap();
    let reply = Client::http1()
        .send(
            Request::post(url(gw.addr("admin"), "/-/reload"))
                .header("authorization", "Bearer second")
                .body(full(""))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.text().contains("admin.token_file"), "{}", reply.text());
    assert_eq!(call(&gw, Method::GET, "/metrics", Some("second")).await.0, StatusCode::OK);
}
