//! The example plugin ("tally") in each language: its size, its cold load (compile,
//! instantiate, configure), a fresh instance (instantiate + configure), and one
//! request through both phases (a header read, a `kv` increment, a context value, a
//! response header) on a warm instance.
//!
//! The components come from `SLUICE_LANG_PLUGINS`, a folder of `<lang>.wasm` files;
//! `benches/languages.sh` builds every example into one and runs this bench.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::Request;
use sluice::body;
use sluice::exchange::Exchange;
use sluice::plugins::Chain;

/// One chain of the plugin `name` in `dir`: `max_idle: 0` when `fresh`, so every
/// checkout instantiates and configures a new instance.
fn chain(dir: &Path, name: &str, fresh: bool) -> Arc<Chain> {
    let limits = if fresh { ", limits: { max_idle: 0 }" } else { "" };
    let yaml = format!(
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nplugins:\n  dir: {}\n  cache_dir: \"\"\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - {{ name: {name}, grants: {{ kv: true }}, config: {{ header: x-team }}{limits} }}\n",
        dir.display()
    );
    let loaded = sluice::config::parse_str("bench", &yaml, dir.to_owned()).unwrap();
    let mut chains =
        sluice::plugins::build_chains(&loaded, &Default::default()).unwrap_or_else(|p| panic!("{p:?}"));
    chains.remove(0)
}

fn benches(c: &mut Criterion) {
    let Some(dir) = std::env::var_os("SLUICE_LANG_PLUGINS").map(PathBuf::from) else {
        eprintln!("SLUICE_LANG_PLUGINS is not set: run benches/languages.sh, which builds the examples");
        return;
    };
    let mut langs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".wasm").map(str::to_owned))
        .collect();
    langs.sort();
    let mut g = c.benchmark_group("languages");
    g.sample_size(20);
    for lang in &langs {
        let size = std::fs::metadata(dir.join(format!("{lang}.wasm"))).unwrap().len();
        let started = Instant::now();
        let warm = chain(&dir, lang, false);
        let cold = started.elapsed();
        eprintln!(
            "{lang}: {:.1} KiB, cold load (compile + instantiate + configure) {cold:.2?}",
            size as f64 / 1024.0
        );

        let fresh = chain(&dir, lang, true);
        let pool = Arc::clone(&fresh.entries()[0].pool);
        let route: Arc<str> = Arc::from("r");
        g.bench_function(format!("{lang}/fresh_instance"), |b| {
            b.iter(|| black_box(pool.checkout_now(&route).unwrap().unwrap()))
        });

        let mut ctx = Exchange::detached("127.0.0.1:40000".parse().unwrap());
        let mut req =
            Request::get("http://example.com/orders").header("x-team", "bench").body(body::empty()).unwrap();
        let mut resp = http::Response::new(body::empty());
        g.bench_function(format!("{lang}/request_and_response"), |b| {
            b.iter(|| {
                warm.on_request(&mut req, &mut ctx).now_or_never().unwrap().unwrap();
                warm.on_response(&mut resp, &mut ctx).now_or_never().unwrap().unwrap();
            })
        });
        assert!(resp.headers().contains_key("x-calls"), "{lang}: the response phase set no x-calls");
    }
    g.finish();
}

criterion_group!(language_benches, benches);
criterion_main!(language_benches);
