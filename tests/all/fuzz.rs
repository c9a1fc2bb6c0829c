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

/// A random script for the `scripted` plugin: `ops` are the phase's operations, each
/// with the kinds of argument it takes (`n` name, `v` value, `p` path, `u` upstream,
/// `b` body size, `s` status, `k` key, `c` count).
fn script(rng: &mut fastrand::Rng, ops: &[(&str, &str)]) -> String {
    const NAMES: &[&str] = &[
        "x-a",
        "x-{i}",
        "X-Up",
        "bad%20name",
        "content-length",
        "connection",
        "host",
        "",
        "x-%FF",
        "set-cookie",
    ];
    const VALUES: &[&str] =
        &["v", "", "a%0D%0Ab: c", "%00", "%C3%A9", "{i}", "%7F", "very-long-value-very-long-value"];
    const PATHS: &[&str] = &["/p", "p", "/%FF", "/a?b=c", "//x", "/a%0Ab", "*", "/../x"];
    const SIZES: &[&str] = &["0", "1", "4096", "1048576", "1073741824"];
    const STATUSES: &[&str] =
        &["0", "99", "100", "101", "103", "200", "204", "304", "418", "999", "1000", "65535"];
    let pick = |rng: &mut fastrand::Rng, from: &[&str]| from[rng.usize(..from.len())].to_owned();
    (0..rng.usize(1..8))
        .map(|_| {
            let (op, args) = ops[rng.usize(..ops.len())];
            let mut words = vec![op.to_owned()];
            for kind in args.chars() {
                words.push(match kind {
                    'n' | 'k' => pick(rng, NAMES),
                    'v' => pick(rng, VALUES),
                    'p' => pick(rng, PATHS),
                    'u' => pick(rng, &["app", "nope", ""]),
                    'b' => pick(rng, SIZES),
                    's' => pick(rng, STATUSES),
                    _ => rng.usize(0..2000).to_string(),
                });
            }
            // Mostly once, sometimes a few times, now and then past the output bounds.
            match rng.u8(..20) {
                0 => words.push("*1500".into()),
                1..=4 => words.push(format!("*{}", rng.usize(2..6))),
                _ => {}
            }
            words.join(" ")
        })
        .collect::<Vec<_>>()
        .join(";")
}

#[tokio::test]
async fn any_sequence_of_host_calls_gets_an_answer_and_every_fault_is_counted_once() {
    use crate::harness::{Client, full, url};
    use crate::plugins::Plugins;
    use sluice::plugins::stats::stats_for;

    const REQUEST_OPS: &[(&str, &str)] = &[
        ("sh", "nv"),
        ("ah", "nv"),
        ("rh", "n"),
        ("gh", "n"),
        ("ga", ""),
        ("gb", ""),
        ("sb", "b"),
        ("sbs", "v"),
        ("gc", "k"),
        ("an", "kv"),
        ("sp", "p"),
        ("su", "u"),
        ("sc", "vv"),
        ("cc", ""),
        ("cx", "kv"),
        ("es", "nv"),
        ("ea", "nv"),
        ("er", "n"),
        ("kg", "k"),
        ("ks", "kv"),
        ("ki", "k"),
        ("kd", "k"),
        ("id", ""),
        ("ip", ""),
        ("pp", ""),
        ("rs", "sv"),
        ("rsh", "c"),
        ("panic", ""),
    ];
    const RESPONSE_OPS: &[(&str, &str)] = &[
        ("sh", "nv"),
        ("ah", "nv"),
        ("rh", "n"),
        ("gh", "n"),
        ("ga", ""),
        ("gb", ""),
        ("sb", "b"),
        ("sbs", "v"),
        ("gc", "k"),
        ("an", "kv"),
        ("st", "s"),
        ("rs", "sv"),
        ("rsh", "c"),
        ("panic", ""),
    ];
    let p = Plugins::with(&[("scripted-fuzz", sluice_tests::plugins::SCRIPTED)]);
    let gw = p
        .start("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:9 }]\nroutes:\n  - name: fuzz\n    match: { path_prefix: / }\n    target: { echo: {} }\n    plugins:\n      - name: scripted-fuzz\n        grants: { kv: true, log: true }\n        limits: { deadline: 2s }\n")
        .await;
    let addr = gw.addr("public");
    let client = Client::http1_max_headers(4096);
    let faults = || stats_for("scripted-fuzz").errors().iter().map(|(_, n)| n).sum::<u64>();
    let mut rng = rng();
    let (mut fault_answers, mut statuses) = (0, std::collections::BTreeMap::new());
    let before = faults();
    for i in 0..iterations() / 3 {
        let (request, response) = (script(&mut rng, REQUEST_OPS), script(&mut rng, RESPONSE_OPS));
        let req = http::Request::get(url(addr, "/f"))
            .header("x-script", &request)
            .header("x-script-response", &response)
            .body(full(""))
            .unwrap();
        // The client's own timeout (30 s) and "succeeded at the HTTP level" check mean a
        // dropped connection (a panic in the gateway) fails here, with the scripts.
        let reply = tokio::spawn({
            let client = client.clone();
            async move { client.send(req).await }
        })
        .await
        .unwrap_or_else(|e| panic!("input {i}: request {request:?}, response {response:?}: {e}"));
        let code = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        if code.as_deref().is_some_and(|c| c.starts_with("plugin_")) {
            fault_answers += 1;
        }
        // An answer is the plugin's status (or the echo's 200), the dead upstream's
        // 502/503 (`su app`; the response phase may have replaced its body), or the
        // gateway's own error with its JSON code; never one hyper had to replace (a
        // 1xx answer became an empty 500) and never an informational status.
        let status = reply.status.as_u16();
        assert!(
            [200, 204, 304, 418, 999, 502, 503].contains(&status) || (status >= 500 && code.is_some()),
            "input {i}: request {request:?}, response {response:?}: {status} {}",
            reply.text()
        );
        *statuses.entry(status).or_insert(0) += 1;
    }
    // Each fault was counted once, and each fault (the route fails closed) is exactly
    // one gateway error answer.
    assert_eq!(faults() - before, fault_answers, "statuses seen: {statuses:?}");
    assert!(fault_answers > 0 && statuses.len() > 3, "both faults and answers were exercised: {statuses:?}");
    assert_eq!(client.get(&url(addr, "/f")).await.status, 200, "still serving");
}
