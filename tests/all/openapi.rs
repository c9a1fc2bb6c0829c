//! OpenAPI contracts end to end: the petstore document (`tests/data/petstore.yaml`)
//! read by the gateway through `spec: { $file: … }`, requests checked by the built-in
//! `openapi-validate` in front of a real upstream (which counts what reaches it),
//! responses logged or blocked, the document imported into a config that serves,
//! the admin API's combined document, and a reload when the document changes.

use std::path::Path;
use std::time::Duration;

use http::Request;
use serde_json::{Value, json};
use sluice::Gateway;
use tempfile::TempDir;

use crate::harness::{AccessLog, Client, Reply, TestServer, full, url};

const PETSTORE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/petstore.yaml");

/// The config: one route for the whole API (`/`) through `openapi-validate` (with
/// `extra` config lines) to `up`, a `/health` route without a document, an admin
/// listener. The document is copied beside the config and referenced relatively.
fn config(dir: &Path, up: &TestServer, extra: &str) -> String {
    std::fs::copy(PETSTORE, dir.join("petstore.yaml")).unwrap();
    format!(
        "version: 1
admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: public
    address: 127.0.0.1:0
plugins:
  dir: {plugins}
  cache_dir: {cache}
upstreams:
  pets:
    targets:
      - address: {addr}
routes:
  - name: petstore
    match: {{ path_prefix: / }}
    target: {{ upstream: pets }}
    plugins:
      - name: openapi-validate
        config:
          spec: {{ $file: petstore.yaml }}
{extra}
  - name: health
    match: {{ path: /health, methods: [GET] }}
    target: {{ static: {{ body: ok }} }}
",
        plugins = dir.join("plugins").display(),
        cache = dir.join("cache").display(),
        addr = up.addr,
    )
}

async fn start(up: &TestServer, extra: &str) -> (Gateway, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, config(dir.path(), up, extra)).unwrap();
    let gw = match Gateway::builder().config_file(&path) {
        Ok(b) => b.start().await.unwrap_or_else(|e| panic!("gateway failed to start: {e}")),
        Err(e) => panic!("config rejected:\n{e}"),
    };
    (gw, dir)
}

async fn post_json(gw: &Gateway, path: &str, body: &str) -> Reply {
    let req = Request::post(url(gw.addr("public"), path))
        .header("content-type", "application/json")
        .body(full(body.to_owned()))
        .unwrap();
    Client::http1().send(req).await
}

/// The `errors` of a problem+json answer as (field, message).
fn errors(reply: &Reply) -> Vec<(String, String)> {
    assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{}", reply.text());
    let body = reply.json();
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {body}"))
        .iter()
        .map(|e| (e["field"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn a_pet_without_a_name_is_a_400_naming_it_and_never_reaches_the_upstream() {
    let up = TestServer::echo().await;
    let (gw, _dir) = start(&up, "").await;
    let bad = post_json(&gw, "/pets", "{}").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(errors(&bad), [("/name".to_owned(), "is required".to_owned())]);
    let problem = bad.json();
    assert_eq!(problem["status"], 400);
    assert_eq!(problem["title"], "Request does not match the API contract");
    assert!(problem["detail"].as_str().unwrap().contains("createPet"), "{problem}");
    let wrong_type = post_json(&gw, "/pets", r#"{"name": 7}"#).await;
    assert_eq!(errors(&wrong_type), [("/name".to_owned(), "must be of type string".to_owned())]);
    assert_eq!(up.request_count(), 0, "refused requests stay at the gateway");

    let good = post_json(&gw, "/pets", r#"{"name": "rex"}"#).await;
    assert_eq!(good.status, 200, "{}", good.text());
    assert_eq!(good.json()["uri"], "/pets", "the echo upstream answered: {}", good.text());
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn parameters_are_checked_by_their_schema() {
    let up = TestServer::echo().await;
    let (gw, _dir) = start(&up, "").await;
    let client = Client::http1();
    let bad = client.get(&url(gw.addr("public"), "/pets?limit=abc")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(errors(&bad), [("query.limit".to_owned(), "must be of type integer".to_owned())]);
    assert_eq!(bad.json()["errors"][0]["in"], "query");
    let too_many = client.get(&url(gw.addr("public"), "/pets?limit=101")).await;
    assert_eq!(errors(&too_many), [("query.limit".to_owned(), "must be at most 100".to_owned())]);
    let zero = client.get(&url(gw.addr("public"), "/pets/0")).await;
    assert_eq!(errors(&zero), [("path.petId".to_owned(), "must be at least 1".to_owned())]);
    assert_eq!(up.request_count(), 0);
    assert_eq!(client.get(&url(gw.addr("public"), "/pets?limit=10")).await.status, 200);
    assert_eq!(client.get(&url(gw.addr("public"), "/pets/12")).await.status, 200);
    // What the document does not have: 404, 405 with Allow.
    assert_eq!(client.get(&url(gw.addr("public"), "/owners")).await.status, 404);
    let req = Request::delete(url(gw.addr("public"), "/pets")).body(full("")).unwrap();
    let not_allowed = client.send(req).await;
    assert_eq!(not_allowed.status, 405);
    assert_eq!(not_allowed.header("allow"), Some("GET, POST"));
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn responses_breaking_the_contract_are_logged_by_default_and_blocked_when_asked() {
    // The echo upstream answers a JSON object without `id`: not a `Pet`.
    let up = TestServer::echo().await;
    let log = AccessLog::get();
    let (gw, _dir) = start(&up, "").await;
    let reply = Client::http1().get(&url(gw.addr("public"), "/pets/31337")).await;
    assert_eq!(reply.status, 200, "logged, not blocked");
    let lines = log
        .wait_for(1, |l| {
            l.get("path").is_some_and(|p| p == "/pets/31337")
                && l.get("annotations").is_some_and(|a| a.contains("openapi_response=invalid"))
        })
        .await;
    let all = log.wait_for(1, |l| l.get("path").is_some_and(|p| p == "/pets/31337")).await;
    assert_eq!(lines.len(), 1, "the access log line is annotated: {all:?}");

    let (gw, _dir) = start(&up, "          responses: block").await;
    let blocked = Client::http1().get(&url(gw.addr("public"), "/pets/3")).await;
    assert_eq!(blocked.status, 502, "{}", blocked.text());
    let fields = errors(&blocked);
    assert!(fields.contains(&("/id".to_owned(), "is required".to_owned())), "{fields:?}");
    assert_eq!(blocked.json()["errors"][0]["in"], "response");
}

#[tokio::test]
async fn the_imported_document_serves_and_validates() {
    let up = TestServer::echo().await;
    let mut doc: Value = sluice::openapi::read_document(Path::new(PETSTORE)).unwrap();
    doc["servers"] = json!([{"url": format!("http://{}", up.addr)}]);
    let options = sluice::openapi::ImportOptions {
        spec_ref: PETSTORE.to_owned(),
        listen: Some("127.0.0.1:0".to_owned()),
        ..Default::default()
    };
    let yaml = sluice::openapi::import(&doc, &options).unwrap();
    let gw = crate::harness::gateway(&yaml).await;
    let routes: Vec<String> = gw.snapshot().config.config.routes.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(routes, ["pets", "showPetById"], "{yaml}");
    let bad = post_json(&gw, "/pets", "{}").await;
    assert_eq!(errors(&bad), [("/name".to_owned(), "is required".to_owned())]);
    assert_eq!(post_json(&gw, "/pets", r#"{"name":"rex"}"#).await.status, 200);
    let client = Client::http1();
    let bad = client.get(&url(gw.addr("public"), "/pets?limit=abc")).await;
    assert_eq!(errors(&bad), [("query.limit".to_owned(), "must be of type integer".to_owned())]);
    assert_eq!(client.get(&url(gw.addr("public"), "/pets/x")).await.status, 400);
    // Methods the document does not list are not routed at all.
    let req = Request::delete(url(gw.addr("public"), "/pets/1")).body(full("")).unwrap();
    assert_eq!(client.send(req).await.status, 404);
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn the_admin_api_serves_the_combined_document() {
    let up = TestServer::echo().await;
    let (gw, _dir) = start(&up, "").await;
    let reply = Client::http1().get(&url(gw.addr("admin"), "/-/openapi.json")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["paths"]["/pets"]["post"]["operationId"], "createPet");
    assert_eq!(doc["paths"]["/pets"]["get"]["x-sluice-route"], "petstore");
    assert_eq!(doc["paths"]["/pets/{petId}"]["get"]["operationId"], "showPetById");
    assert_eq!(doc["components"]["schemas"]["NewPet"]["required"], json!(["name"]));
    assert_eq!(doc["paths"]["/health"]["get"]["x-sluice-route"], "health", "routes without a document too");
    assert!(doc["paths"]["/health"].get("post").is_none());
}

/// Starts the gateway with the document at `spec` (relative to the config's folder),
/// watches the config, edits the document (write and rename, as editors do) and waits
/// for the new contract to answer.
async fn edit_and_see_the_reload(spec: &str) {
    let up = TestServer::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), &up, "").replace("$file: petstore.yaml", &format!("$file: {spec}"));
    let doc = dir.path().join(spec);
    std::fs::create_dir_all(doc.parent().unwrap()).unwrap();
    std::fs::copy(PETSTORE, &doc).unwrap();
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, text).unwrap();
    let gw = Gateway::builder().config_file(&path).unwrap().start().await.unwrap();
    let _watch = sluice::reload::watch_config(gw.clone(), &path).unwrap();
    assert_eq!(post_json(&gw, "/pets", r#"{"name":"rex"}"#).await.status, 200);
    let edited =
        std::fs::read_to_string(PETSTORE).unwrap().replace("required: [name]", "required: [name, tag]");
    let tmp = doc.with_extension("tmp");
    std::fs::write(&tmp, edited).unwrap();
    std::fs::rename(&tmp, &doc).unwrap();
    let mut last = None;
    for _ in 0..200 {
        let reply = post_json(&gw, "/pets", r#"{"name":"rex"}"#).await;
        if reply.status == 400 {
            assert_eq!(errors(&reply), [("/tag".to_owned(), "is required".to_owned())]);
            assert!(gw.snapshot().generation > 1, "a new generation serves");
            return;
        }
        last = Some(reply.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the edited document {spec} never took effect (last status {last:?})");
}

#[tokio::test]
async fn editing_the_referenced_document_reloads_the_contract() {
    edit_and_see_the_reload("petstore.yaml").await;
}

#[tokio::test]
async fn a_document_in_another_folder_is_watched_too() {
    edit_and_see_the_reload("specs/petstore.yaml").await;
}

#[tokio::test]
async fn a_missing_document_is_a_config_error_at_the_reference() {
    let up = TestServer::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), &up, "").replace("$file: petstore.yaml", "$file: nope.yaml");
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, text).unwrap();
    let err = Gateway::builder().config_file(&path).unwrap_err().to_string();
    assert!(err.contains("sluice.yaml:20:"), "located at the plugin's config: {err}");
    assert!(err.contains("routes[0].plugins[0].config.spec.$file: nope.yaml: cannot read the file"), "{err}");
}
