//! Plugin author tools through the library API: the offline harness makes the
//! decisions a gateway makes, with a fixed clock and a store of its own per run;
//! components for the wrong world or the wrong `sluice:plugin` version get the
//! errors the README documents.

use std::path::Path;

use serde_json::{Value, json};
use sluice::devkit::harness::{self, Decision, Golden, Outcome};
use sluice::plugins::compat;
use sluice_tests::plugins as wasm;

use crate::harness::{Client, TestServer, url};
use crate::plugins::{Plugins, app_route};

async fn run(plugin: &str, config: &Value, fixture: &str) -> Outcome {
    let fixture = harness::parse_fixture(fixture).unwrap();
    harness::run(Path::new(plugin), config, &fixture)
        .await
        .unwrap_or_else(|e| panic!("harness run failed: {e:#}"))
}

#[tokio::test]
async fn the_harness_makes_the_decisions_a_gateway_run_makes() {
    let up = TestServer::echo().await;
    let p = Plugins::with(&[("guard", wasm::GUARD)]);
    let gw = p
        .start(&app_route(up.addr, "      - name: guard\n        config: { blocked_prefix: /admin }\n"))
        .await;
    let config = json!({ "blocked_prefix": "/admin" });

    // Refused by the plugin: the same status, body and content type.
    let offline = run(wasm::GUARD, &config, "path: /admin/users\n").await;
    let live = Client::http1().get(&url(gw.addr("public"), "/admin/users")).await;
    assert_eq!(offline.decision, Decision::Respond);
    assert!(offline.upstream_request.is_none());
    assert_eq!(offline.response.status, live.status.as_u16());
    assert_eq!(offline.response.body, live.text());
    assert_eq!(Some(offline.response.headers["content-type"].as_str()), live.header("content-type"));

    // Let through: the upstream sees the plugin's header in both runs.
    let offline = run(wasm::GUARD, &config, "path: /orders?limit=5\nheaders: { x-client: a }\n").await;
    let live = Client::http1().get(&url(gw.addr("public"), "/orders?limit=5")).await;
    assert_eq!(offline.decision, Decision::Continue);
    let seen = offline.upstream_request.expect("the upstream got the request");
    assert_eq!(seen.path, "/orders?limit=5");
    assert_eq!(seen.headers["x-client"], "a");
    assert_eq!(live.json()["headers"]["x-guarded"], json!(seen.headers["x-guarded"]));
    assert_eq!(offline.response.status, 200);

    // A config the plugin rejects fails the run with the gateway's message.
    let fixture = harness::parse_fixture("path: /\n").unwrap();
    let err = harness::run(Path::new(wasm::GUARD), &json!({ "blocked_prefix": "admin" }), &fixture)
        .await
        .expect_err("a rejected config fails the run");
    assert!(format!("{err:#}").contains("blocked_prefix must start with `/`"), "{err:#}");
}

#[tokio::test]
async fn every_run_gets_a_fresh_store_while_a_gateway_keeps_counting() {
    let config = json!({ "key": "devkit-fresh-store" });
    for _ in 0..2 {
        let offline = run(wasm::KV_COUNTER, &config, "path: /count\n").await;
        assert_eq!(offline.response.body, "1", "each harness run starts from an empty kv");
    }
    let up = TestServer::echo().await;
    let p = Plugins::with(&[("kv-counter", wasm::KV_COUNTER)]);
    let gw = p
        .start(&app_route(
            up.addr,
            "      - name: kv-counter\n        grants: { kv: true }\n        config: { key: devkit-fresh-store }\n",
        ))
        .await;
    let a = Client::http1().get(&url(gw.addr("public"), "/count")).await.text();
    let b = Client::http1().get(&url(gw.addr("public"), "/count")).await.text();
    assert_eq!((a.as_str(), b.as_str()), ("1", "2"), "the harness runs did not touch the gateway's store");
}

#[tokio::test]
async fn the_clock_is_fixed_and_a_fixture_can_move_it() {
    // The built-in `auth`, by name. The token is valid from 4102444799 (nbf) to
    // 4102444800 (exp): only a clock set inside that second accepts it.
    let tokens: Value =
        serde_json::from_str(include_str!("../../plugins/auth/tests-data/tokens.json")).unwrap();
    let token = tokens["not_yet_valid"].as_str().unwrap();
    let config = json!({ "jwt": {
        "keys": [{ "kid": "rsa-1", "pem": include_str!("../../plugins/auth/tests-data/rsa1.pub.pem") }],
        "issuer": ["https://issuer.test"],
        "audience": ["sluice-tests"],
    }});
    let request = format!("headers: {{ authorization: 'Bearer {token}' }}\n");
    let now = run("auth", &config, &request).await;
    assert_eq!(now.decision, Decision::Respond);
    assert_eq!(now.response.status, 401, "{}", now.response.body);

    let later = run("auth", &config, &format!("{request}now_ms: 4102444799500\n")).await;
    assert_eq!(later.decision, Decision::Continue, "{:?}", later.response);
    assert_eq!(later.response.status, 200);
}

#[tokio::test]
async fn golden_files_are_written_then_checked() {
    let dir = tempfile::tempdir().unwrap();
    let golden = dir.path().join("blocked.expected.json");
    let config = json!({ "blocked_prefix": "/admin" });
    let outcome = run(wasm::GUARD, &config, "path: /admin\n").await;
    assert_eq!(
        harness::check_golden(&outcome, &golden, false).unwrap(),
        Golden::Created,
        "a missing file is written"
    );
    assert_eq!(harness::check_golden(&outcome, &golden, false).unwrap(), Golden::Matches, "and then matches");

    let other = run(wasm::GUARD, &config, "path: /elsewhere\n").await;
    let Golden::Differs(diff) = harness::check_golden(&other, &golden, false).unwrap() else {
        panic!("a different outcome is a failure")
    };
    assert!(
        diff.contains("-   \"decision\": \"respond\"") && diff.contains("+   \"decision\": \"continue\""),
        "{diff}"
    );
    assert_eq!(
        harness::check_golden(&other, &golden, true).unwrap(),
        Golden::Blessed,
        "blessing rewrites the file"
    );
    let written: Outcome = serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
    assert_eq!(written, other);
}

/// A component built from `wit` for `world`: every export traps, every import of the
/// world is imported — what a language toolchain emits for that world.
fn component_for(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_str("test.wit", wit).unwrap();
    let world = resolve.select_world(&[pkg], Some(world)).unwrap();
    let mut module = wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    sluice::devkit::componentize::componentize(&module, None).unwrap()
}

/// The host's WIT at another version, with `extra` added to the `clock` interface.
fn wit_at(version: &str, extra: &str) -> String {
    let wit = compat::WIT.replace(
        &format!("package sluice:plugin@{};", compat::WIT_VERSION),
        &format!("package sluice:plugin@{version};"),
    );
    assert_ne!(wit, compat::WIT);
    wit.replacen("interface clock {", &format!("interface clock {{\n    {extra}"), 1)
}

/// The load error of the component `bytes` listed on a route.
async fn load_error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("candidate.wasm");
    std::fs::write(&file, bytes).unwrap();
    let p = Plugins::with(&[("candidate", file.to_str().unwrap())]);
    p.rejected(&app_route("127.0.0.1:9".parse().unwrap(), "      - name: candidate\n")).await
}

#[tokio::test]
async fn wrong_world_and_wrong_version_components_get_the_documented_errors() {
    // Built for the next incompatible version.
    let err = load_error(&component_for(&wit_at("0.2.0", ""), "plugin")).await;
    assert!(
        err.contains("targets sluice:plugin@0.2.0, but this gateway implements sluice:plugin@0.1.2")
            && err.contains("sluice plugin wit"),
        "{err}"
    );

    // Some other world altogether.
    let other = "package acme:proxy@1.0.0;\nworld handler { export handle: func(path: string) -> u16; }\n";
    let err = load_error(&component_for(other, "handler")).await;
    assert!(err.contains("does not implement the world sluice:plugin/plugin@0.1.2"), "{err}");
    assert!(err.contains("it exports `handle`") && err.contains("Missing: `info`, `configure`"), "{err}");

    // A newer compatible version that uses a function this gateway lacks.
    let err = load_error(&component_for(&wit_at("0.1.9", "now-us: func() -> u64;"), "plugin")).await;
    assert!(err.contains("was built against sluice:plugin@0.1.9, newer than this gateway's 0.1.2"), "{err}");

    // A newer compatible version using nothing new links: what stops this one is
    // only that its route does not grant the capabilities it imports.
    let err = load_error(&component_for(&wit_at("0.1.9", ""), "plugin")).await;
    assert!(err.contains("imports `kv`, which is not granted"), "{err}");
    assert!(!err.contains("0.1.9"), "{err}");
    // So does an older one (plugins built before `tokens` came in 0.1.2).
    for older in ["0.1.0", "0.1.1"] {
        let err = load_error(&component_for(&wit_at(older, ""), "plugin")).await;
        assert!(err.contains("imports `kv`, which is not granted"), "{older}: {err}");
    }

    // A core module that was never made a component.
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_str("plugin.wit", compat::WIT).unwrap();
    let world = resolve.select_world(&[pkg], Some("plugin")).unwrap();
    let core = wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    let err = load_error(&core).await;
    assert!(
        err.contains("is a core WebAssembly module, not a component") && err.contains("componentize"),
        "{err}"
    );
    assert!(!err.contains("  "), "no runs of spaces in the message: {err:?}");
}

#[tokio::test]
async fn a_rejected_config_is_reported_at_the_users_config_file_not_the_generated_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guard.yaml");
    std::fs::write(&config, "# the guard's settings\nblocked_prefx: /admin\n").unwrap();
    let request = dir.path().join("request.yaml");
    std::fs::write(&request, "path: /\n").unwrap();
    let fixture = harness::read_fixture(&request).unwrap();
    let sources = harness::Sources { config: Some(&config), fixture: Some(&request) };
    let err =
        harness::run_from(Path::new(wasm::GUARD), &harness::read_config(&config).unwrap(), &fixture, sources)
            .await
            .expect_err("the typo fails the run");
    let err = format!("{err:#}");
    assert!(err.starts_with(&format!("{}:2:1: blocked_prefx: ", config.display())), "{err}");
    assert!(err.contains("unknown field `blocked_prefx`"), "{err}");
    assert!(!err.contains("<inline config>") && !err.contains("routes[0]"), "{err}");
}
