use serde_json::{Value, json};
use sluice_plugin_sdk::testing::{self, FakeRequest, FakeResponse};
use sluice_plugin_sdk::{Decision, Phases, Plugin};

use crate::{OpenapiValidate, OpenapiValidateConfig};

fn petstore() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Petstore", "version": "1"},
        "paths": {
            "/pets": {
                "get": {
                    "operationId": "listPets",
                    "parameters": [
                        {"$ref": "#/components/parameters/Limit"},
                        {"name": "tag", "in": "query", "schema": {"type": "array", "items": {"enum": ["dog", "cat"]}}},
                        {"name": "x-trace", "in": "header", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-f]+$"}}
                    ],
                    "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Pet"}}}}}}
                },
                "post": {
                    "operationId": "createPet",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewPet"}}}},
                    "responses": {"201": {"description": "made"}, "default": {"description": "error"}}
                }
            },
            "/pets/{petId}": {
                "parameters": [{"name": "petId", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}}],
                "get": {"operationId": "showPet", "responses": {"2XX": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}}}}
            },
            "/pets/mine": {"get": {"operationId": "myPets",
                "parameters": [{"name": "session", "in": "cookie", "required": true, "schema": {"type": "string", "minLength": 4}}],
                "responses": {"200": {"description": "ok"}}}}
        },
        "components": {
            "parameters": {"Limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}},
            "schemas": {
                "NewPet": {"type": "object", "required": ["name"], "additionalProperties": false,
                           "properties": {"name": {"type": "string", "minLength": 1}, "tag": {"type": "string", "nullable": true}}},
                "Pet": {"type": "object", "required": ["id", "name"], "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}
            }
        }
    })
}

fn plugin(extra: Value) -> OpenapiValidate {
    let mut config = json!({"spec": petstore()});
    config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    testing::configure(&config.to_string()).unwrap()
}

/// The answer's status and problem body (`Value::Null` when it continued).
fn run(p: &OpenapiValidate, mut req: FakeRequest) -> (Option<u16>, Value) {
    match p.on_request(&mut req.as_request()) {
        Decision::Continue => (None, Value::Null),
        Decision::Respond(r) => {
            assert_eq!(
                r.headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str()),
                Some("application/problem+json")
            );
            (Some(r.status), serde_json::from_slice(&r.body).unwrap())
        }
    }
}

fn fields(problem: &Value) -> Vec<(String, String)> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned()))
        .collect()
}

fn post(body: &str) -> FakeRequest {
    FakeRequest::new("POST", "/pets").with_header("content-type", "application/json").with_body(body)
}

#[test]
fn a_body_missing_a_required_field_is_a_400_naming_it() {
    let p = plugin(json!({}));
    let (status, problem) = run(&p, post("{}"));
    assert_eq!(status, Some(400));
    assert_eq!(problem["status"], 400);
    assert_eq!(problem["type"], "urn:sluice:problem:request-validation");
    assert_eq!(problem["title"], "Request does not match the API contract");
    assert_eq!(fields(&problem), [("/name".to_owned(), "is required".to_owned())]);
    assert_eq!(problem["errors"][0]["in"], "body");
    assert!(problem["detail"].as_str().unwrap().contains("createPet"), "{problem}");
    assert_eq!(run(&p, post(r#"{"name":"rex"}"#)).0, None);
    assert_eq!(run(&p, post(r#"{"name":"rex","tag":null}"#)).0, None, "nullable");
}

#[test]
fn every_body_problem_is_listed() {
    let p = plugin(json!({}));
    let (status, problem) = run(&p, post(r#"{"name": "", "tag": 3, "owner": "x"}"#));
    assert_eq!(status, Some(400));
    assert_eq!(
        fields(&problem),
        [
            ("/name".to_owned(), "must have at least 1 characters".to_owned()),
            ("/owner".to_owned(), "is not allowed".to_owned()),
            ("/tag".to_owned(), "must be of type string or null".to_owned()),
        ]
    );
    let (_, problem) = run(&p, post("{not json"));
    assert!(fields(&problem)[0].1.starts_with("is not valid JSON"), "{problem}");
    // Without a content type, a body is read as the JSON the operation takes.
    let (_, problem) = run(&p, FakeRequest::new("POST", "/pets").with_body("{}"));
    assert_eq!(fields(&problem), [("/name".to_owned(), "is required".to_owned())]);
    let (status, problem) = run(&p, FakeRequest::new("POST", "/pets"));
    assert_eq!((status, fields(&problem)), (Some(400), vec![(String::new(), "is required".to_owned())]));
    // An undocumented media type is a 415.
    let req = FakeRequest::new("POST", "/pets").with_header("content-type", "text/plain").with_body("rex");
    assert_eq!(run(&p, req).0, Some(415));
    // max_errors caps the list.
    let p = plugin(json!({"max_errors": 1}));
    assert_eq!(fields(&run(&p, post(r#"{"name": "", "tag": 3}"#)).1).len(), 1);
}

#[test]
fn parameters_are_read_as_their_schema_s_type() {
    let p = plugin(json!({}));
    let get = |target: &str| FakeRequest::new("GET", target).with_header("x-trace", "ab12");
    assert_eq!(run(&p, get("/pets?limit=10&tag=dog&tag=cat")).0, None);
    let (status, problem) = run(&p, get("/pets?limit=abc"));
    assert_eq!(status, Some(400));
    assert_eq!(fields(&problem), [("query.limit".to_owned(), "must be of type integer".to_owned())]);
    assert_eq!(problem["errors"][0]["in"], "query");
    let (_, problem) = run(&p, get("/pets?limit=0&tag=cow"));
    assert_eq!(
        fields(&problem),
        [
            ("query.limit".to_owned(), "must be at least 1".to_owned()),
            ("query.tag.0".to_owned(), r#"must be one of "dog", "cat""#.to_owned()),
        ]
    );
    // A required header, and its pattern.
    let (_, problem) = run(&p, FakeRequest::new("GET", "/pets"));
    assert_eq!(fields(&problem), [("header.x-trace".to_owned(), "is required".to_owned())]);
    let (_, problem) = run(&p, FakeRequest::new("GET", "/pets").with_header("x-trace", "XYZ"));
    assert_eq!(
        fields(&problem),
        [("header.x-trace".to_owned(), "must match the pattern `^[0-9a-f]+$`".to_owned())]
    );
    // Path parameters (declared on the path item); literal templates win.
    assert_eq!(run(&p, FakeRequest::new("GET", "/pets/7")).0, None);
    let (_, problem) = run(&p, FakeRequest::new("GET", "/pets/0"));
    assert_eq!(fields(&problem), [("path.petId".to_owned(), "must be at least 1".to_owned())]);
    // Cookies.
    let mine = |cookie: &str| FakeRequest::new("GET", "/pets/mine").with_header("cookie", cookie);
    assert_eq!(run(&p, mine("theme=dark; session=abcd")).0, None);
    let (_, problem) = run(&p, mine("theme=dark"));
    assert_eq!(fields(&problem), [("cookie.session".to_owned(), "is required".to_owned())]);
    let (_, problem) = run(&p, mine("session=ab"));
    assert_eq!(
        fields(&problem),
        [("cookie.session".to_owned(), "must have at least 4 characters".to_owned())]
    );
}

#[test]
fn undocumented_paths_and_methods_are_404_and_405_unless_allowed() {
    let p = plugin(json!({}));
    let (status, problem) = run(&p, FakeRequest::new("GET", "/owners"));
    assert_eq!(status, Some(404));
    assert_eq!(problem["type"], "urn:sluice:problem:undocumented-operation");
    let mut req = FakeRequest::new("DELETE", "/pets");
    match p.on_request(&mut req.as_request()) {
        Decision::Respond(r) => {
            assert_eq!(r.status, 405);
            assert!(r.headers.contains(&("allow".to_owned(), "GET, POST".to_owned())), "{:?}", r.headers);
        }
        other => panic!("{other:?}"),
    }
    // HEAD is checked as GET.
    assert_eq!(run(&p, FakeRequest::new("HEAD", "/pets/3")).0, None);
    let p = plugin(json!({"undocumented": "allow"}));
    assert_eq!(run(&p, FakeRequest::new("GET", "/owners")).0, None);
}

#[test]
fn a_pinned_path_and_a_prefix() {
    let p = plugin(json!({"path": "/pets/{petId}", "prefix": "/api"}));
    assert_eq!(run(&p, FakeRequest::new("GET", "/api/pets/3")).0, None);
    assert_eq!(run(&p, FakeRequest::new("GET", "/api/pets/x")).0, Some(400));
    assert_eq!(run(&p, FakeRequest::new("GET", "/pets/3")).0, Some(404), "not under the prefix");
    // Only the pinned template's operations were compiled, and only they need bodies.
    assert_eq!(p.phases(), Phases::REQUEST | Phases::RESPONSE | Phases::RESPONSE_BODY);
    let p = plugin(json!({"responses": "off"}));
    assert_eq!(p.phases(), Phases::REQUEST | Phases::REQUEST_BODY);
}

fn respond(p: &OpenapiValidate, target: &str, status: u16, body: &str) -> Decision {
    let mut req = FakeRequest::new("GET", target).with_header("x-trace", "1");
    assert!(p.on_request(&mut req.as_request()).is_continue());
    let mut resp: FakeResponse = req.response(status).with_header("content-type", "application/json");
    resp.body = body.as_bytes().to_vec();
    p.on_response(&mut resp.as_response())
}

#[test]
fn responses_are_logged_by_default_and_blocked_when_asked() {
    let p = plugin(json!({}));
    assert!(respond(&p, "/pets/1", 200, r#"{"id": 1, "name": "rex"}"#).is_continue());
    assert!(testing::logs().is_empty(), "{:?}", testing::logs());
    assert!(respond(&p, "/pets/1", 200, r#"{"name": "rex"}"#).is_continue(), "log mode lets it through");
    let logs = testing::logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs[0].contains("showPet") && logs[0].contains("/id is required"), "{logs:?}");
    assert!(testing::annotations().contains(&("openapi_response".to_owned(), "invalid".to_owned())));
    // Without a content type the body is read as the promised JSON; empty, it is not checked.
    let mut req = FakeRequest::new("GET", "/pets/1");
    assert!(p.on_request(&mut req.as_request()).is_continue());
    let mut resp = req.response(200);
    resp.body = br#"{"id": "1", "name": "rex"}"#.to_vec();
    assert!(p.on_response(&mut resp.as_response()).is_continue());
    assert!(testing::logs()[1].contains("/id must be of type integer"), "{:?}", testing::logs());
    let mut resp = req.response(200);
    assert!(p.on_response(&mut resp.as_response()).is_continue());
    assert_eq!(testing::logs().len(), 2);
    // An undocumented status is a problem too.
    assert!(respond(&p, "/pets/1", 500, "{}").is_continue());
    assert!(testing::logs()[2].contains("500 is not a documented status"), "{:?}", testing::logs());

    let p = plugin(json!({"responses": "block"}));
    match respond(&p, "/pets", 200, r#"[{"id": "x", "name": "rex"}]"#) {
        Decision::Respond(r) => {
            assert_eq!(r.status, 502);
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["errors"][0]["field"], "/0/id", "{body}");
            assert_eq!(body["errors"][0]["in"], "response");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_documents_are_config_errors_naming_the_pointer() {
    let bad = |spec: Value, extra: Value| {
        let mut config = json!({"spec": spec});
        config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        testing::configure::<OpenapiValidate>(&config.to_string()).err().unwrap()
    };
    let e = bad(json!({"swagger": "2.0"}), json!({}));
    assert!(e.contains("/openapi: an OpenAPI 3.0 or 3.1 document is needed"), "{e}");
    let mut spec = petstore();
    spec["components"]["schemas"]["NewPet"]["properties"]["name"]["if"] = json!({});
    let e = bad(spec, json!({}));
    assert!(e.contains("spec/components/schemas/NewPet/properties/name: unsupported keyword `if`"), "{e}");
    let mut spec = petstore();
    spec["paths"]["/pets"]["get"]["parameters"][1]["style"] = json!("deepObject");
    let e = bad(spec, json!({}));
    assert!(e.contains("spec/paths/~1pets/get/parameters/1/style: parameter style `deepObject`"), "{e}");
    let e = bad(petstore(), json!({"path": "/nope"}));
    assert!(e.contains("path: the document has no path `/nope`"), "{e}");
    let e = bad(petstore(), json!({"prefix": "api"}));
    assert!(e.contains("prefix"), "{e}");
}

/// Mutated bodies, queries and paths: every answer is a pass or a 4xx problem, never
/// a panic (a trap in the gateway).
#[test]
fn mutated_requests_get_a_pass_or_a_4xx_never_a_panic() {
    let iters = std::env::var("SLUICE_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let mut rng = fastrand::Rng::with_seed(1);
    let p = plugin(json!({"responses": "off"}));
    let seeds: [&[u8]; 4] = [br#"{"name": "rex", "tag": "dog"}"#, b"[1, {\"a\": null}]", b"\"x\"", b"{}"];
    let targets = ["/pets?limit=10&tag=dog", "/pets/7", "/pets/mine", "/pets/%zz?limit=%41", "/"];
    let noise = b"{}[]\",:0123456789.eE+-truefalsnul \\/%?&=~\xff\x00";
    for _ in 0..iters {
        let mut body = seeds[rng.usize(..seeds.len())].to_vec();
        let mut target = targets[rng.usize(..targets.len())].as_bytes().to_vec();
        for _ in 0..rng.usize(1..6) {
            let buf = if rng.bool() { &mut body } else { &mut target };
            let at = rng.usize(..=buf.len());
            match rng.u8(..3) {
                0 => buf.insert(at, noise[rng.usize(..noise.len())]),
                1 if at < buf.len() => drop(buf.remove(at)),
                _ => buf.insert(at, b'/'),
            }
        }
        let target = format!("/{}", String::from_utf8_lossy(&target).trim_start_matches('/'));
        let method = ["GET", "POST", "HEAD"][rng.usize(..3)];
        let req = FakeRequest::new(method, &target)
            .with_header("content-type", "application/json")
            .with_header("x-trace", "ab")
            .with_header("cookie", "session=abcdef")
            .with_body(body.clone());
        let mut req = req;
        match p.on_request(&mut req.as_request()) {
            Decision::Continue => {}
            Decision::Respond(r) => {
                assert!((400..500).contains(&r.status), "{method} {target} {body:?}: {}", r.status);
                let problem: Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(problem["status"], r.status);
            }
        }
    }
}

/// The JSON Schema of the config, kept in `schema.json` (rewrite with `SLUICE_BLESS=1`).
#[test]
fn schema_json_is_up_to_date() {
    let schema = serde_json::to_string_pretty(&schemars::schema_for!(OpenapiValidateConfig)).unwrap() + "\n";
    testing::golden(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json"), &schema);
}
