//! Native unit tests through the SDK's testing module.

use serde_json::{Value, json};
use sluice_plugin_sdk::testing::{self, FakeRequest, FakeResponse};
use sluice_plugin_sdk::{Phases, Plugin};

use crate::{Transform, TransformConfig};

fn plugin(config: Value) -> Transform {
    testing::configure(&config.to_string()).unwrap_or_else(|e| panic!("config rejected: {e}"))
}

fn rejected(config: Value) -> String {
    match testing::configure::<Transform>(&config.to_string()) {
        Ok(_) => panic!("config accepted: {config}"),
        Err(e) => e,
    }
}

fn body(req: &FakeRequest) -> Value {
    serde_json::from_slice(&req.body).unwrap()
}

#[test]
fn headers_are_renamed_removed_set_and_added_with_templates() {
    let t = plugin(json!({"request": {"headers": {
        "rename": {"x-old": "x-new"},
        "remove": ["x-debug"],
        "set": {"x-user": "{{consumer.name}}", "x-route": "{{route}} {{method}}", "x-none": "{{header.absent}}"},
        "add": {"x-tag": "b"},
    }}}));
    let mut req = FakeRequest::new("GET", "/")
        .with_header("x-old", "1")
        .with_header("x-old", "2")
        .with_header("x-debug", "yes")
        .with_header("x-tag", "a")
        .with_consumer("ann", &["staff"]);
    assert!(t.on_request(&mut req.as_request()).is_continue());
    assert_eq!(req.headers.get_all("x-new"), ["1", "2"]);
    assert_eq!(req.header("x-old"), None);
    assert_eq!(req.header("x-debug"), None);
    assert_eq!(req.header("x-user").as_deref(), Some("ann"));
    assert_eq!(req.header("x-route").as_deref(), Some("test GET"));
    assert_eq!(req.header("x-none"), None, "a single missing placeholder skips the rule");
    assert_eq!(req.headers.get_all("x-tag"), ["a", "b"]);

    let t = plugin(json!({"request": {"headers": {"set": {"x-echo": "v={{query.v}}"}}}}));
    let mut req = FakeRequest::new("GET", "/?v=a%0D%0Ab");
    assert!(t.on_request(&mut req.as_request()).is_continue());
    assert_eq!(req.header("x-echo"), None, "a decoded line break never reaches a header");
    assert!(testing::logs().iter().any(|l| l.contains("x-echo")), "{:?}", testing::logs());
}

#[test]
fn the_path_is_rewritten_with_regex_captures_and_the_query_is_kept_and_changed() {
    let err = rejected(json!({"request": {"path": {"regex": {"pattern": "^/x", "replace": "/y?z"}}}}));
    assert!(err.contains("request.path.regex.replace"), "{err}");

    let t = plugin(json!({"request": {
        "path": {"strip_prefix": "/api", "regex": {"pattern": "^/users/(?P<id>[0-9]+)/posts/([0-9]+)$", "replace": "/v2/posts/$2/by/${id}"}},
        "query": {"remove": ["debug"], "add": {"user": "{{path.id}}"}},
    }}));
    let mut req = FakeRequest::new("GET", "/api/users/42/posts/7?debug=1&q=a%20b").with_param("id", "42");
    assert!(t.on_request(&mut req.as_request()).is_continue());
    assert_eq!(req.path, "/v2/posts/7/by/42");
    assert_eq!(req.query.as_deref(), Some("q=a%20b&user=42"));

    let mut req = FakeRequest::new("GET", "/elsewhere");
    assert!(t.on_request(&mut req.as_request()).is_continue());
    assert_eq!((req.path.as_str(), req.query.as_deref()), ("/elsewhere", None), "no match, no change");
}

#[test]
fn json_body_fields_are_renamed_removed_and_set_from_templates() {
    let t = plugin(json!({"request": {"body": {
        "rename": [{"from": "/userName", "to": "/user/name"}],
        "remove": ["/password"],
        "set": [
            {"pointer": "/user/id", "value": "{{path.id}}", "as": "number"},
            {"pointer": "/meta", "value": {"by": "{{consumer.name}}", "groups": "{{consumer.groups}}", "q": "{{query.q}}"}},
            {"pointer": "/note", "value": "from {{header.x-client|unknown}}"},
            {"pointer": "/skipped", "value": "{{header.absent}}"},
            {"pointer": "/flag", "value": true},
        ],
    }}}));
    let mut req = FakeRequest::new("POST", "/users/9?q=hi")
        .with_param("id", "9")
        .with_consumer("ann", &["a", "b"])
        .with_header("content-type", "application/json; charset=utf-8")
        .with_body(r#"{"userName": "Ann", "password": "secret", "keep": [1]}"#);
    assert!(t.on_request(&mut req.as_request()).is_continue());
    assert_eq!(
        body(&req),
        json!({
            "user": {"name": "Ann", "id": 9},
            "keep": [1],
            "meta": {"by": "ann", "groups": ["a", "b"], "q": "hi"},
            "note": "from unknown",
            "flag": true,
        })
    );
}

#[test]
fn malformed_json_gets_a_400_in_the_gateway_shape_and_other_bodies_pass() {
    let t = plugin(json!({"request": {"body": {"remove": ["/a"]}}}));
    let mut req = FakeRequest::new("POST", "/")
        .with_header("content-type", "application/json")
        .with_header("x-request-id", "from-the-client")
        .with_request_id("rid-1")
        .with_body("{not json");
    let decision = t.on_request(&mut req.as_request());
    assert_eq!(decision.status(), Some(400));
    let sluice_plugin_sdk::Decision::Respond(reply) = decision else { unreachable!() };
    let err: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(err["error"]["status"], 400);
    assert_eq!(err["error"]["code"], "invalid_json_body");
    assert_eq!(err["error"]["request_id"], "rid-1");
    assert!(reply.headers.contains(&("content-type".into(), "application/json".into())));

    for (ct, body) in [("text/plain", "{not json"), ("application/x-www-form-urlencoded", "a=1")] {
        let mut req = FakeRequest::new("POST", "/").with_header("content-type", ct).with_body(body);
        assert!(t.on_request(&mut req.as_request()).is_continue());
        assert_eq!(req.body, body.as_bytes(), "{ct} passes untouched");
    }
    let mut req = FakeRequest::new("POST", "/").with_header("content-type", "application/json");
    assert!(t.on_request(&mut req.as_request()).is_continue(), "an empty body passes");
}

#[test]
fn a_value_that_does_not_convert_is_a_400() {
    let t = plugin(
        json!({"request": {"body": {"set": [{"pointer": "/id", "value": "{{path.id}}", "as": "number"}]}}}),
    );
    let mut req = FakeRequest::new("POST", "/")
        .with_param("id", "abc")
        .with_header("content-type", "application/json")
        .with_body("{}");
    assert_eq!(t.on_request(&mut req.as_request()).status(), Some(400));
}

#[test]
fn responses_get_status_mapping_headers_and_json_fields_with_request_data() {
    let t = plugin(json!({"response": {
        "status": {"404": 200},
        "headers": {"set": {"x-upstream-status": "{{status}}", "x-user": "{{header.x-user}}"}, "remove": ["server"]},
        "body": {"set": [{"pointer": "/found", "value": false}, {"pointer": "/path", "value": "{{path}}"}], "remove": ["/internal"]},
    }}));
    assert_eq!(t.phases(), Phases::REQUEST | Phases::RESPONSE | Phases::RESPONSE_BODY);
    let mut req = FakeRequest::new("GET", "/things/1").with_header("x-user", "ann");
    assert!(t.on_request(&mut req.as_request()).is_continue());
    let mut resp = req.response(404);
    resp.headers = FakeResponse::new(404)
        .with_header("server", "up")
        .with_header("content-type", "application/json")
        .headers;
    resp.body = br#"{"internal": 1, "error": "nope"}"#.to_vec();
    assert!(t.on_response(&mut resp.as_response()).is_continue());
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-upstream-status").as_deref(), Some("404"));
    assert_eq!(resp.header("x-user").as_deref(), Some("ann"));
    assert_eq!(resp.header("server"), None);
    let doc: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(doc, json!({"error": "nope", "found": false, "path": "/things/1"}));

    let mut resp = req.response(500).with_header("content-type", "application/json");
    resp.body = b"{broken".to_vec();
    assert!(t.on_response(&mut resp.as_response()).is_continue());
    assert_eq!((resp.status, resp.body.as_slice()), (500, &b"{broken"[..]), "malformed upstream JSON passes");
}

#[test]
fn phases_follow_the_config() {
    assert_eq!(plugin(json!({})).phases(), Phases::empty());
    let headers_only = plugin(json!({"request": {"headers": {"set": {"x-a": "1"}}}}));
    assert_eq!(headers_only.phases(), Phases::REQUEST);
    let body = plugin(json!({"request": {"body": {"remove": ["/a"]}}}));
    assert_eq!(body.phases(), Phases::REQUEST | Phases::REQUEST_BODY);
    let status = plugin(json!({"response": {"status": {"500": 503}}}));
    assert_eq!(status.phases(), Phases::RESPONSE);
    // Header rules that need the response (a rename, `{{status}}`) or the final
    // consumer keep the response phase.
    for headers in [
        json!({"rename": {"a": "b"}}),
        json!({"set": {"x-s": "{{status}}"}}),
        json!({"set": {"x-u": "{{consumer.name}}"}}),
    ] {
        let t = plugin(json!({"response": {"headers": headers}}));
        assert_eq!(t.phases(), Phases::RESPONSE, "{headers}");
    }
}

#[test]
fn response_headers_known_in_the_request_phase_are_response_edits_without_a_response_phase() {
    let t = plugin(json!({"response": {"headers": {
        "set": {"x-gateway": "sluice", "x-path": "{{path}}"},
        "add": {"vary": "x-tenant"},
        "remove": ["server"],
    }}}));
    assert_eq!(t.phases(), Phases::REQUEST, "no response-phase call");
    let mut req = FakeRequest::new("GET", "/things");
    assert!(t.on_request(&mut req.as_request()).is_continue());
    assert!(req.headers.get("x-gateway").is_none(), "the request is untouched");
    let mut resp = FakeResponse::new(200)
        .with_header("server", "up")
        .with_header("vary", "accept")
        .with_header("x-gateway", "old");
    req.apply_response_edits(&mut resp);
    assert_eq!(resp.header("server"), None);
    assert_eq!(resp.headers.get_all("vary"), ["accept", "x-tenant"]);
    assert_eq!(resp.headers.get_all("x-gateway"), ["sluice"]);
    assert_eq!(resp.header("x-path").as_deref(), Some("/things"));
}

#[test]
fn invalid_configs_name_the_field() {
    let cases = [
        (
            json!({"request": {"path": {"regex": {"pattern": "(", "replace": "/"}}}}),
            "request.path.regex.pattern",
        ),
        (json!({"request": {"body": {"remove": ["a/b"]}}}), "request.body.remove[0]"),
        (
            json!({"response": {"body": {"set": [{"pointer": "/a~9", "value": 1}]}}}),
            "response.body.set[0].pointer",
        ),
        (
            json!({"request": {"body": {"set": [{"pointer": "/a", "value": "{{status}}"}]}}}),
            "request.body.set[0].value",
        ),
        (json!({"request": {"headers": {"set": {"bad header": "x"}}}}), "request.headers.set.bad header"),
        (json!({"request": {"headers": {"remove": ["content-length"]}}}), "managed by the gateway"),
        // The host refuses it on every request: refused at load, not a fault per request.
        (
            json!({"response": {"headers": {"remove": ["Proxy-Connection"]}}}),
            "response.headers.remove: `Proxy-Connection` is managed by the gateway",
        ),
        (json!({"response": {"status": {"abc": 200}}}), "response.status: `abc`"),
        (json!({"response": {"status": {"404": 42}}}), "response.status.404"),
        (json!({"request": {"headers": {"set": {"x-a": "{{nope}}"}}}}), "unknown placeholder"),
        (json!({"request": {"path": {"strip_prefix": "api"}}}), "request.path.strip_prefix"),
        (
            json!({"request": {"body": {"set": [{"pointer": "/a", "value": 1, "as": "number"}]}}}),
            "request.body.set[0].as",
        ),
        (json!({"request": {"headerz": {}}}), "unknown field `headerz`"),
    ];
    for (config, expected) in cases {
        let err = rejected(config.clone());
        assert!(err.contains(expected), "{config}: {err}");
    }
}

/// The JSON Schema of the config, kept in `schema.json` (rewrite with `SLUICE_BLESS=1`).
#[test]
fn schema_json_is_up_to_date() {
    let schema = serde_json::to_string_pretty(&schemars::schema_for!(TransformConfig)).unwrap() + "\n";
    testing::golden(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json"), &schema);
}
