//! Native unit tests through the SDK's testing module.

use serde_json::{Value, json};
use sluice_plugin_sdk::testing::{self, FakeRequest};
use sluice_plugin_sdk::{Decision, Plugin, Reply};

use crate::{Cors, CorsConfig};

fn plugin(config: Value) -> Cors {
    testing::configure(&config.to_string()).unwrap_or_else(|e| panic!("config rejected: {e}"))
}

fn reply(d: Decision) -> Reply {
    match d {
        Decision::Respond(r) => r,
        Decision::Continue => panic!("expected a response"),
    }
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn preflight(origin: &str, method: &str, headers: Option<&str>) -> FakeRequest {
    let req = FakeRequest::new("OPTIONS", "/api")
        .with_header("origin", origin)
        .with_header("access-control-request-method", method);
    match headers {
        Some(h) => req.with_header("access-control-request-headers", h),
        None => req,
    }
}

fn app() -> Cors {
    plugin(json!({
        "allow_origins": ["https://app.example.com", "https://*.example.org"],
        "allow_methods": ["get", "POST"],
        "allow_headers": ["Content-Type", "X-Token"],
        "expose_headers": ["x-request-id"],
        "allow_credentials": true,
        "max_age": 600,
    }))
}

#[test]
fn an_allowed_preflight_is_answered_with_204_and_the_cors_headers() {
    let cors = app();
    let mut req = preflight("https://app.example.com", "POST", Some("content-type, x-token"));
    let r = reply(cors.on_request(&mut req.as_request()));
    assert_eq!(r.status, 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(header(&r, "access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(header(&r, "access-control-allow-headers"), Some("content-type, x-token"));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    assert!(header(&r, "vary").unwrap().starts_with("Origin"));

    let mut req = preflight("https://deep.sub.example.org", "GET", None);
    let r = reply(cors.on_request(&mut req.as_request()));
    assert_eq!(r.status, 204, "wildcard subdomain");
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://deep.sub.example.org"));
    assert_eq!(header(&r, "access-control-allow-headers"), None);
}

#[test]
fn a_refused_preflight_gets_403_without_cors_headers() {
    let cors = app();
    for (req, why) in [
        (preflight("https://evil.com", "GET", None), "origin `https://evil.com`"),
        (preflight("https://example.org", "GET", None), "origin `https://example.org`"),
        (preflight("https://app.example.com", "DELETE", None), "method `DELETE`"),
        (preflight("https://app.example.com", "GET", Some("x-token, x-other")), "header `x-other`"),
    ] {
        let mut req = req.with_header("x-request-id", "from-the-client").with_request_id("rid-9");
        let r = reply(cors.on_request(&mut req.as_request()));
        assert_eq!(r.status, 403);
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "cors_preflight_refused");
        assert_eq!(body["error"]["request_id"], "rid-9", "the gateway's id, not a client header");
        assert!(body["error"]["message"].as_str().unwrap().contains(why), "{body}");
    }
}

#[test]
fn actual_requests_continue_and_allowed_origins_get_headers_on_the_response() {
    let cors = app();
    let mut req = FakeRequest::new("GET", "/api").with_header("origin", "https://app.example.com");
    assert!(cors.on_request(&mut req.as_request()).is_continue());
    let mut resp = req.response(200).with_header("vary", "Accept-Encoding");
    assert!(cors.on_response(&mut resp.as_response()).is_continue());
    assert_eq!(resp.header("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert_eq!(resp.header("access-control-allow-credentials").as_deref(), Some("true"));
    assert_eq!(resp.header("access-control-expose-headers").as_deref(), Some("x-request-id"));
    assert_eq!(resp.header("vary").as_deref(), Some("Accept-Encoding, Origin"));

    let mut req = FakeRequest::new("GET", "/api").with_header("origin", "https://evil.com");
    assert!(cors.on_request(&mut req.as_request()).is_continue(), "CORS is enforced by the browser");
    let mut resp = req.response(200).with_header("access-control-allow-origin", "https://evil.com");
    assert!(cors.on_response(&mut resp.as_response()).is_continue());
    assert_eq!(resp.header("access-control-allow-credentials"), None);
    assert_eq!(resp.header("vary").as_deref(), Some("Origin"));

    let mut req = FakeRequest::new("OPTIONS", "/api").with_header("origin", "https://app.example.com");
    assert!(cors.on_request(&mut req.as_request()).is_continue(), "OPTIONS without ACRM is not a preflight");
}

#[test]
fn any_origin_without_credentials_answers_star_and_does_not_vary() {
    let cors = plugin(json!({"allow_origins": ["*"], "allow_methods": ["*"], "allow_headers": ["*"]}));
    let mut req = preflight("https://whoever.net", "PURGE", Some("X-Custom"));
    let r = reply(cors.on_request(&mut req.as_request()));
    assert_eq!(r.status, 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&r, "access-control-allow-methods"), Some("PURGE"));
    assert_eq!(header(&r, "access-control-allow-headers"), Some("x-custom"));
    assert_eq!(header(&r, "access-control-allow-credentials"), None);

    let mut req = FakeRequest::new("GET", "/").with_header("origin", "https://whoever.net");
    assert!(cors.on_request(&mut req.as_request()).is_continue());
    let mut resp = req.response(200);
    assert!(cors.on_response(&mut resp.as_response()).is_continue());
    assert_eq!(resp.header("access-control-allow-origin").as_deref(), Some("*"));
    assert_eq!(resp.header("vary"), None);
}

#[test]
fn invalid_configs_name_the_field() {
    let cases = [
        (json!({"allow_origins": ["*"], "allow_credentials": true}), "allow_origins: `*` cannot be combined"),
        (json!({"allow_origins": []}), "allow_origins: list at least one"),
        (json!({"allow_origins": ["https://ok.com", "https://*bad.com"]}), "allow_origins[1]"),
        (json!({"allow_origins": ["https://ok.com/"]}), "allow_origins[0]"),
        (
            json!({"allow_origins": ["https://ok.com"], "allow_methods": ["GET", "*"]}),
            "allow_methods: `*` must be the only",
        ),
        (json!({"allow_origins": ["https://ok.com"], "allow_headers": ["bad header"]}), "allow_headers[0]"),
        (
            json!({"allow_origins": ["https://ok.com"], "expose_headers": ["*"], "allow_credentials": true}),
            "expose_headers",
        ),
        (json!({"allow_origins": ["https://ok.com"], "max_age": -1}), "invalid config"),
        (json!({"allow_origin": ["https://ok.com"]}), "unknown field `allow_origin`"),
        (json!({}), "missing field `allow_origins`"),
    ];
    for (config, expected) in cases {
        let err = match testing::configure::<Cors>(&config.to_string()) {
            Ok(_) => panic!("accepted: {config}"),
            Err(e) => e,
        };
        assert!(err.contains(expected), "{config}: {err}");
    }
}

/// The JSON Schema of the config, kept in `schema.json` (rewrite with `SLUICE_BLESS=1`).
#[test]
fn schema_json_is_up_to_date() {
    let schema = serde_json::to_string_pretty(&schemars::schema_for!(CorsConfig)).unwrap() + "\n";
    testing::golden(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json"), &schema);
}
