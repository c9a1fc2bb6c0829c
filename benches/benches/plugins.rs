//! Plugin runtime micro-benchmarks: one header-only plugin call on a typical request
//! (10 headers, 1 KiB body), instance checkout/return and fresh instantiation, and a
//! 3-plugin chain — all on warm, configured instances, driven without a runtime (the
//! chain never waits for these plugins, so each future completes on its first poll).
//!
//! The `crossing` group takes one call apart: the export call alone (a plugin that
//! returns at once, called straight on an instance), plus one host call that reads a
//! header, plus one that sets a header, and then the same plugin through the chain
//! (checkout, slot moves, deadline, stats). The differences are the cost of each
//! crossing.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::Request;
use sluice::body::{self, Body};
use sluice::exchange::Exchange;
use sluice::plugins::Chain;
use sluice_tests::plugins as wasm;

/// Builds one chain per route from `routes` YAML, with `header-check` and
/// `header-adder` in the plugins folder.
fn chains(routes: &str) -> (tempfile::TempDir, Vec<Arc<Chain>>) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(wasm::HEADER_CHECK, plugins.join("header-check.wasm")).unwrap();
    std::fs::copy(wasm::HEADER_ADDER, plugins.join("header-adder.wasm")).unwrap();
    let yaml = format!(
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nplugins:\n  dir: {}\n  cache_dir: \"\"\nroutes:\n{routes}",
        plugins.display()
    );
    let loaded = sluice::config::parse_str("bench", &yaml, dir.path().to_owned()).unwrap();
    let chains =
        sluice::plugins::build_chains(&loaded, &Default::default()).unwrap_or_else(|p| panic!("{p:?}"));
    (dir, chains)
}

fn route(name: &str, plugins: &[&str]) -> String {
    let mut s = format!(
        "  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    target: {{ echo: {{}} }}\n    plugins:\n"
    );
    for p in plugins {
        s.push_str(&format!("      - {p}\n"));
    }
    s
}

/// A typical request: 10 headers and a 1 KiB body.
fn typical_request() -> Request<Body> {
    let mut b = Request::post("http://example.com/api/v1/orders?page=2");
    for (k, v) in [
        ("host", "example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("content-type", "application/json"),
        ("x-api-key", "k-123456"),
        ("x-request-id", "0123456789abcdef"),
        ("authorization", "Bearer abc.def.ghi"),
        ("cookie", "session=xyz"),
        ("x-forwarded-for", "10.0.0.1"),
    ] {
        b = b.header(k, v);
    }
    b.body(body::full(vec![b'x'; 1024])).unwrap()
}

fn benches(c: &mut Criterion) {
    const CHECK: &str = "name: header-check";
    const ADDER: &str =
        "{ name: header-adder, config: { request_header: x-a, response_header: x-b, value: v } }";
    let (_dir, chains) = chains(
        &[
            route("one", &[CHECK]),
            route("three", &[CHECK, CHECK, CHECK]),
            route("both", &[ADDER, ADDER, ADDER]),
            route("fresh", &["{ name: header-check, limits: { max_idle: 0 } }"]),
            route("noop", &["{ name: header-check, config: { mode: noop } }"]),
            route("read", &["{ name: header-check, config: { mode: read } }"]),
        ]
        .concat(),
    );
    let mut ctx = Exchange::detached("127.0.0.1:40000".parse().unwrap());
    let mut req = typical_request();

    let mut g = c.benchmark_group("plugins");
    g.bench_function("one_header_only_plugin_call", |b| {
        b.iter(|| black_box(chains[0].on_request(&mut req, &mut ctx).now_or_never().unwrap().unwrap()))
    });
    g.bench_function("chain_of_3_request_phase", |b| {
        b.iter(|| black_box(chains[1].on_request(&mut req, &mut ctx).now_or_never().unwrap().unwrap()))
    });
    let mut resp = http::Response::new(body::empty());
    g.bench_function("chain_of_3_request_and_response_phases", |b| {
        b.iter(|| {
            chains[2].on_request(&mut req, &mut ctx).now_or_never().unwrap().unwrap();
            chains[2].on_response(&mut resp, &mut ctx).now_or_never().unwrap().unwrap();
        })
    });
    let pool = Arc::clone(&chains[0].entries()[0].pool);
    let route: Arc<str> = Arc::from("one");
    g.bench_function("instance_checkout_and_return", |b| {
        b.iter(|| {
            let inst = pool.checkout_now(&route).unwrap().unwrap();
            pool.checkin(black_box(inst));
        })
    });
    let fresh = Arc::clone(&chains[3].entries()[0].pool);
    fresh.checkout_now(&route).unwrap().unwrap();
    g.bench_function("fresh_instance_instantiate_and_configure", |b| {
        b.iter(|| black_box(fresh.checkout_now(&route).unwrap().unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("crossing");
    for (name, chain) in
        [("export_call", &chains[4]), ("plus_header_read", &chains[5]), ("plus_header_set", &chains[0])]
    {
        let pool = Arc::clone(&chain.entries()[0].pool);
        let mut inst = pool.checkout_now(&route).unwrap().unwrap();
        inst.store.data_mut().req.headers = typical_request().headers().clone();
        // With a fresh deadline per call, as the chain gives it.
        g.bench_function(name, |b| {
            b.iter(|| {
                pool.arm(&mut inst, std::time::Instant::now());
                black_box(inst.on_request().now_or_never().unwrap().unwrap())
            })
        });
        pool.checkin(inst);
    }
    g.bench_function("plus_chain_bookkeeping", |b| {
        b.iter(|| black_box(chains[0].on_request(&mut req, &mut ctx).now_or_never().unwrap().unwrap()))
    });
    g.finish();
}

criterion_group!(plugin_benches, benches);
criterion_main!(plugin_benches);
