//! Built-in plugin micro-benchmarks (P4 for the shipped policies): one `auth` call
//! with an API key, a JWT RS256 and a JWT ES256 token (signature checked every time:
//! `cache_entries: 0`), one in-process `rate-limit` check, one header `transform`, and
//! the P2 chain auth (JWT HS256) + rate-limit + transform through both phases, and
//! `openapi-validate` checking the request's query and header parameters against a
//! one-path document and against a 201-path one (matched by path, or pinned). Warm,
//! configured instances, driven without a runtime (every future completes on its first
//! poll: the in-process kv never waits). Each iteration gets a fresh request, made
//! outside the timed part, since the plugins strip and add headers.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::Request;
use serde_json::{Value, json};
use sluice::body::{self, Body};
use sluice::exchange::Exchange;
use sluice::plugins::Chain;

const TESTS_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/auth/tests-data");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{TESTS_DATA}/{name}")).unwrap()
}

fn token(name: &str) -> String {
    let tokens: Value = serde_json::from_str(&fixture("tokens.json")).unwrap();
    tokens[name].as_str().unwrap().to_owned()
}

/// One chain per `(name, plugins)` route; the built-ins need no plugins folder.
fn chains(routes: &[(&str, Value)]) -> Vec<Arc<Chain>> {
    let mut yaml =
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nplugins:\n  cache_dir: \"\"\n"
            .to_owned();
    // A/B of plugin builds without rebuilding the host: components in this folder
    // (`auth.wasm`, `rate-limit.wasm`, …) take precedence over the built-in ones.
    if let Some(dir) = std::env::var_os("SLUICE_BENCH_PLUGINS") {
        yaml.push_str(&format!("  dir: {:?}\n", dir.to_string_lossy()));
    }
    yaml.push_str("routes:\n");
    for (name, plugins) in routes {
        let mut plugins = plugins.clone();
        if std::env::var_os("SLUICE_BENCH_PLUGINS").is_some() {
            // A component from the folder gets no built-in's optional capabilities:
            // grant the ones `auth` imports (unused by these configs).
            for p in plugins.as_array_mut().into_iter().flatten().filter(|p| p["name"] == "auth") {
                p["grants"] = json!({ "http": { "allow": ["jwks.invalid"] }, "secrets": { "unused": { "env": "PATH" } } });
            }
        }
        // JSON is YAML.
        yaml.push_str(&format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    target: {{ echo: {{}} }}\n    plugins: {plugins}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let loaded = sluice::config::parse_str("bench", &yaml, dir.path().to_owned()).unwrap();
    sluice::plugins::build_chains(&loaded, &Default::default()).unwrap_or_else(|p| panic!("{p:?}"))
}

/// A typical request (8 headers) with `extra` headers.
fn request(extra: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get("http://example.com/api/v1/orders?page=2");
    for (k, v) in [
        ("host", "example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("x-request-id", "0123456789abcdef"),
        ("cookie", "session=xyz"),
        ("x-forwarded-for", "10.0.0.1"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ]
    .iter()
    .chain(extra)
    {
        b = b.header(*k, *v);
    }
    b.body(body::empty()).unwrap()
}

fn ctx() -> Exchange {
    Exchange::detached("10.1.2.3:40000".parse().unwrap())
}

fn benches(c: &mut Criterion) {
    let jwt = |pem: &str| {
        json!([{ "name": "auth", "config": { "jwt": {
            "keys": [{ "pem": fixture(pem) }],
            "issuer": ["https://issuer.test"], "audience": ["sluice-tests"], "cache_entries": 0 } } }])
    };
    let rate_limit = json!({ "name": "rate-limit", "grants": { "kv": true }, "config": {
        "scope": "bench", "key": ["consumer"], "fallback_key": ["ip"],
        "limits": [{ "name": "per_second", "rate": 1_000_000_000u64, "per": "1s" }] } });
    let transform = json!({ "name": "transform", "config": {
        "request": { "headers": { "set": { "x-consumer": "{{consumer.name}}" }, "remove": ["authorization"] } },
        "response": { "headers": { "set": { "x-gateway": "sluice" } } } } });
    let hs256 = json!({ "name": "auth", "config": { "jwt": {
        "keys": [{ "secret": fixture("tokens.json").parse::<Value>().unwrap()["hs256_secret"] }],
        "cache_entries": 0 } } });
    // The bench request's operation: `page` must be an integer ≥ 1, `x-request-id` hex.
    let orders = json!({ "get": { "parameters": [
        { "name": "page", "in": "query", "schema": { "type": "integer", "minimum": 1 } },
        { "name": "x-request-id", "in": "header", "required": true,
          "schema": { "type": "string", "pattern": "^[0-9a-f]+$" } } ],
        "responses": { "200": { "description": "ok" } } } });
    let small = json!({ "openapi": "3.0.3", "paths": { "/api/v1/orders": orders.clone() } });
    let mut large = small.clone();
    for i in 0..200 {
        // Same segment count and sorted first: the matcher tries all of them.
        large["paths"][format!("/api/v1/a{i:03}")] = orders.clone();
    }
    let validate = |spec: &Value, path: Option<&str>| {
        let mut config = json!({ "spec": spec, "responses": "off" });
        if let Some(p) = path {
            config["path"] = json!(p);
        }
        json!([{ "name": "openapi-validate", "config": config }])
    };
    let chains = chains(&[
        (
            "apikey",
            json!([{ "name": "auth", "config": { "api_key": {
            "keys": [{ "key": "bench-key-0123456789", "consumer": "bench" }] } } }]),
        ),
        ("rs256", jwt("rsa1.pub.pem")),
        ("es256", jwt("ec256.pub.pem")),
        ("ratelimit", json!([rate_limit.clone()])),
        ("transform", json!([transform.clone()])),
        ("chain", json!([hs256, rate_limit, transform])),
        ("openapi_small", validate(&small, None)),
        ("openapi_large", validate(&large, None)),
        ("openapi_pinned", validate(&large, Some("/api/v1/orders"))),
    ]);
    let (rs256, es256, hs256) = (token("rs256"), token("es256"), token("hs256"));

    let mut g = c.benchmark_group("builtins");
    let mut one = |name: &str, chain: &Arc<Chain>, extra: Vec<(&'static str, String)>| {
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    let headers: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    (request(&headers), ctx())
                },
                |(req, ctx)| {
                    let answered = chain.on_request(req, ctx).now_or_never().unwrap().unwrap();
                    assert!(answered.is_none(), "the plugin refused the bench request");
                },
                BatchSize::SmallInput,
            )
        });
    };
    one("auth_api_key", &chains[0], vec![("x-api-key", "bench-key-0123456789".into())]);
    one("auth_jwt_rs256", &chains[1], vec![("authorization", format!("Bearer {rs256}"))]);
    one("auth_jwt_es256", &chains[2], vec![("authorization", format!("Bearer {es256}"))]);
    one("rate_limit_in_process", &chains[3], vec![]);
    one("transform_headers_request", &chains[4], vec![("authorization", "Bearer x".into())]);
    one("openapi_validate_params_1_path", &chains[6], vec![]);
    one("openapi_validate_params_201_paths", &chains[7], vec![]);
    one("openapi_validate_params_201_paths_pinned", &chains[8], vec![]);
    g.bench_function("chain_auth_hs256_rate_limit_transform_both_phases", |b| {
        let auth = format!("Bearer {hs256}");
        b.iter_batched_ref(
            || (request(&[("authorization", auth.as_str())]), ctx(), http::Response::new(body::empty())),
            |(req, ctx, resp)| {
                let answered = chains[5].on_request(req, ctx).now_or_never().unwrap().unwrap();
                assert!(answered.is_none(), "the chain refused the bench request");
                chains[5].on_response(resp, ctx).now_or_never().unwrap().unwrap();
                black_box(resp.headers().len());
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(builtin_benches, benches);
criterion_main!(builtin_benches);
