//! A stable mutation fuzzer (no nightly, no extra tooling) for what reads untrusted
//! text: the config loader and the router. It mutates a committed seed corpus (the
//! configs of `tests/ui/` and the quick start) and checks that nothing panics, that
//! every problem of a rejected config has a message and a position inside the text,
//! and that the router answers any method, host and raw path without panicking.
//!
//! Bounded in the normal suite (`FUZZ_ITERS` runs with a fixed seed, so a failure
//! reproduces); longer on demand: `SLUICE_FUZZ_ITERS=200000 SLUICE_FUZZ_SEED=7 cargo
//! test -p sluice-tests --test all fuzz::`. A failing input is printed and written
//! to the temp folder, ready to be added to `tests/ui/`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use http::{HeaderMap, Method};
use sluice::config::parse_str;
use sluice::snapshot::Snapshot;

/// Inputs per target in the normal suite.
const FUZZ_ITERS: usize = 1500;

fn iterations() -> usize {
    std::env::var("SLUICE_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(FUZZ_ITERS)
}

fn rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(std::env::var("SLUICE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1))
}

/// The seed corpus: every config under `tests/ui/` and the quick start.
fn corpus() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = ["ui/valid", "ui/invalid"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap().flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.push(root.join("../examples/quickstart/sluice.yaml"));
    files.sort();
    let corpus: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(corpus.len() > 10, "the seed corpus is there");
    corpus
}

/// Bytes that mean something to YAML or to the config's own syntax.
const INTERESTING: &[&[u8]] = &[
    b":",
    b"- ",
    b"\n",
    b"  ",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b"&a ",
    b"*a",
    b"!!str ",
    b"\"",
    b"'",
    b"#",
    b"%",
    b"\t",
    b"\xff",
    b"\0",
    b"~",
    b"null",
    b"-1",
    b"0",
    b"99999999999999999999",
    b"1e309",
    b"0s",
    b"1ms",
    b"10GiB",
    b"/",
    b"/{id}",
    b"*.",
    b"..",
    b"%2e",
    b"<<: *a",
    b"? ",
    b"|\n",
    b">-\n",
];

/// One to four random edits of `input`: bit flips, deletions, insertions of
/// interesting bytes, duplicated chunks, chunks spliced from another seed.
fn mutate(rng: &mut fastrand::Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(..=out.len());
        match rng.u8(0..6) {
            0 if at < out.len() => out[at] ^= 1 << rng.u8(0..8),
            1 if at < out.len() => {
                let end = (at + rng.usize(1..=16)).min(out.len());
                out.drain(at..end);
            }
            2 => {
                let bytes = INTERESTING[rng.usize(..INTERESTING.len())];
                out.splice(at..at, bytes.iter().copied());
            }
            3 if at < out.len() => {
                let end = (at + rng.usize(1..=64)).min(out.len());
                let chunk = out[at..end].to_vec();
                out.splice(end..end, chunk);
            }
            _ => {
                let other = &corpus[rng.usize(..corpus.len())];
                if !other.is_empty() {
                    let from = rng.usize(..other.len());
                    let to = (from + rng.usize(1..=80)).min(other.len());
                    out.splice(at..at, other[from..to].iter().copied());
                }
            }
        }
    }
    out
}

/// Runs `check` on `input`, and on a panic prints the input and keeps it in a file.
fn survive(target: &str, i: usize, input: &str, check: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(check)).is_err() {
        let keep = std::env::temp_dir().join(format!("sluice-fuzz-{target}-{i}.yaml"));
        let _ = std::fs::write(&keep, input);
        panic!("{target}: input {i} panicked (kept in {}):\n{input}", keep.display());
    }
}

#[test]
fn mutated_configs_load_or_fail_with_located_problems_and_never_panic() {
    let corpus = corpus();
    let mut rng = rng();
    let (mut accepted, mut rejected) = (0, 0);
    for i in 0..iterations() {
        let seed = &corpus[rng.usize(..corpus.len())];
        let bytes = mutate(&mut rng, seed, &corpus);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let lines = text.lines().count() + 1;
        survive("config", i, &text, || match parse_str("fuzz.yaml", &text, ".".into()) {
            Err(e) => {
                rejected += 1;
                assert!(!e.issues.is_empty(), "a rejection names a problem");
                for issue in &e.issues {
                    assert!(!issue.message.trim().is_empty(), "an empty message for {}", issue.path);
                    if let Some(at) = issue.location {
                        assert!(at.line >= 1 && at.line <= lines, "line {} of {lines}", at.line);
                    }
                }
            }
            Ok(loaded) => match Snapshot::build(loaded, 1) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    rejected += 1;
                    assert!(e.issues.iter().all(|i| !i.message.trim().is_empty()));
                }
            },
        });
    }
    // Both sides were exercised: mutations that keep a config valid, and ones that break it.
    assert!(accepted > 0 && rejected > 0, "accepted {accepted}, rejected {rejected}");
}

#[test]
fn the_router_answers_any_method_host_and_raw_path_without_panicking() {
    let yaml = "version: 1
listeners:
  - name: public
    address: 127.0.0.1:0
routes:
  - { name: exact, match: { path: /exact }, target: { echo: {} } }
  - { name: prefix, match: { path_prefix: /api/ }, target: { echo: {} } }
  - { name: params, match: { path: '/users/{id}/orders/{order}' }, target: { echo: {} } }
  - { name: host, match: { hosts: [api.example.com], path_prefix: / }, target: { echo: {} } }
  - { name: wild, match: { hosts: ['*.example.org'], path_prefix: /w }, target: { echo: {} } }
  - { name: methods, match: { path_prefix: /m, methods: [GET, POST] }, target: { echo: {} } }
  - { name: header, match: { path_prefix: /h, headers: { x-v: '2' } }, target: { echo: {} } }
  - { name: any, match: { path_prefix: / }, target: { echo: {} } }
";
    let snapshot = Snapshot::build(parse_str("router.yaml", yaml, ".".into()).unwrap(), 1).unwrap();
    let router = snapshot.routers.values().next().expect("one listener's router");
    let pieces: &[&str] = &[
        "/", "/api/", "api", "users", "/users/", "7", "orders", "/orders/", "exact", "..", ".", "%2e",
        "%2E%2e", "%2f", "%2F", "%00", "%", "%zz", "//", ";", "?", "#", "{id}", "*", "ü", "\u{202e}", "/m",
        "/h", "/w", " ", "\t",
    ];
    let hosts: &[&str] =
        &["api.example.com", "API.EXAMPLE.COM", "x.example.org", ".example.org", "", "[::1]", "a..b", "*"];
    let mut rng = rng();
    let mut headers = HeaderMap::new();
    headers.insert("x-v", http::HeaderValue::from_static("2"));
    let mut found = 0;
    for i in 0..iterations() * 4 {
        let path: String = (0..rng.usize(1..8)).map(|_| pieces[rng.usize(..pieces.len())]).collect();
        let host = (rng.u8(..4) > 0).then(|| hosts[rng.usize(..hosts.len())]);
        let method = [Method::GET, Method::POST, Method::DELETE, Method::from_bytes(b"BREW").unwrap()]
            [rng.usize(..4)]
        .clone();
        let input = format!("{method} {host:?} {path:?}");
        survive("router", i, &input, || {
            if router.router.find(host, &method, &path, &headers).is_some() {
                found += 1;
            }
        });
    }
    assert!(found > 0, "some requests matched (the catch-all takes any path starting with /)");
}
