//! The `sluice` binary itself: `check`, `schema`, `import openapi`, `--version`, and
//! `run` serving a config and stopping cleanly on SIGTERM; the plugin author's
//! `sluice plugin …` commands, and the example plugin in every language built from
//! source.

mod import;
mod languages;
mod plugin_commands;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn check_lists_every_problem_with_its_location() {
    let path = temp_file(
        "bad.yaml",
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nroutes:\n  - name: a\n    match: { path: /a }\n    target: { upstream: nowhere }\n  - name: a\n    match: { path: /b, methods: [get] }\n    target: { echo: {} }\n",
    );
    let out = Command::new(BIN).arg("check").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    // Every problem, each with file:line:column.
    let located: Vec<&str> = err.lines().filter(|l| l.starts_with(&format!("{file}:"))).collect();
    assert!(located.len() >= 3, "expected at least 3 located problems:\n{err}");
    assert!(err.contains("nowhere"), "{err}");
    assert!(err.contains(":8:"), "the unknown upstream is on line 8:\n{err}");
    assert!(err.contains("problem(s) found"), "{err}");
}

#[test]
fn check_accepts_the_quickstart_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart/sluice.yaml");
    let out = Command::new(BIN).arg("check").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_accepts_the_observability_example() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/observability/sluice.yaml");
    let out = Command::new(BIN).arg("check").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_accepts_the_ai_example() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ai/sluice.yaml");
    let out = Command::new(BIN).arg("check").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok (3 routes"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn check_accepts_the_edge_example_and_its_imported_contract() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/edge/sluice.yaml");
    let out = Command::new(BIN).arg("check").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `sluice import openapi` on the document beside it prints a config `check` takes.
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/edge/openapi.yaml");
    let imported = Command::new(BIN).args(["import", "openapi", spec, "--spec-ref", spec]).output().unwrap();
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let config = temp_file("edge-imported.yaml", &String::from_utf8(imported.stdout).unwrap());
    let out = Command::new(BIN).arg("check").arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_takes_several_files_and_fails_if_any_has_a_problem() {
    let quickstart = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart/sluice.yaml");
    let bad = temp_file(
        "several-bad.yaml",
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nroutes:\n  - name: a\n    match: { path_prefix: / }\n    target: { upstream: nowhere }\n",
    );
    let missing = std::env::temp_dir().join("sluice-check-no-such-file.yaml");
    let out = Command::new(BIN).arg("check").arg(quickstart).arg(&bad).arg(&missing).output().unwrap();
    assert!(!out.status.success());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{quickstart}: ok (")), "{stdout}");
    assert!(stderr.contains(&format!("{}:8:", bad.display())) && stderr.contains("nowhere"), "{stderr}");
    assert!(stderr.contains(&format!("{}: 1 problem(s) found", bad.display())), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "the missing file is named: {stderr}");
    assert!(stderr.contains("2 of 3 files have problems"), "{stderr}");
    // All good: success, one line each.
    let out = Command::new(BIN).arg("check").arg(quickstart).arg(quickstart).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn schema_and_version() {
    let out = Command::new(BIN).arg("schema").output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema["properties"]["routes"].is_object(), "{schema}");
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sluice "));
}

#[test]
fn schema_of_each_built_in_plugin() {
    for plugin in ["ai", "auth", "cors", "mcp", "openapi-validate", "rate-limit", "transform"] {
        let out = Command::new(BIN).args(["schema", "--plugin", plugin]).output().unwrap();
        assert!(out.status.success(), "{plugin}: {}", String::from_utf8_lossy(&out.stderr));
        let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(schema["properties"].is_object(), "{plugin}: {schema}");
    }
    let out = Command::new(BIN).args(["schema", "--plugin", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no built-in plugin `nope`") && err.contains("rate-limit"), "{err}");
}

#[test]
fn run_serves_and_stops_on_sigterm() {
    let path = temp_file(
        "ok.yaml",
        "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nroutes:\n  - name: hi\n    match: { path: /hi }\n    target: { static: { body: hello } }\n",
    );
    let mut gw = Running::start(&path, &[], false);
    let reply = http(&gw.public, "GET", "/hi");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("hello"), "{reply}");

    let status = Command::new("kill").args(["-TERM", &gw.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let exited = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        gw.child.try_wait().unwrap()
    });
    let exited = exited.unwrap_or_else(|| panic!("the gateway did not exit within 10s of SIGTERM"));
    assert!(exited.success(), "{exited:?}");
}

/// A `sluice run` child process with its listener addresses read from its log.
struct Running {
    child: std::process::Child,
    public: String,
    admin: Option<String>,
}

impl Running {
    fn start(config: &std::path::Path, extra: &[&str], with_admin: bool) -> Running {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .args(extra)
            .env("SLUICE_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("address=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default().to_owned();
                    let _ = tx.send((line.contains("admin listener"), addr));
                }
            }
        });
        let (mut public, mut admin) = (None, None);
        while public.is_none() || (with_admin && admin.is_none()) {
            let Ok((is_admin, addr)) = rx.recv_timeout(Duration::from_secs(20)) else {
                let _ = child.kill();
                panic!("the gateway did not log its listening addresses");
            };
            if is_admin { admin = Some(addr) } else { public = Some(addr) }
        }
        Running { child, public: public.unwrap(), admin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on a fresh connection; returns the whole response text.
fn http(addr: &str, method: &str, path: &str) -> String {
    http_with(addr, method, path, &[])
}

/// [`http`] with extra request headers.
fn http_with(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(s, "{method} {path} HTTP/1.1\r\nhost: x\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn sighup_reloads_the_config_file() {
    let body = |b: &str| {
        format!(
            "version: 1\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nroutes:\n  - name: hi\n    match: {{ path: /hi }}\n    target: {{ static: {{ body: {b} }} }}\n"
        )
    };
    let path = temp_file("hup.yaml", &body("before"));
    let gw = Running::start(&path, &["--no-watch"], false);
    assert!(http(&gw.public, "GET", "/hi").ends_with("before"));
    std::fs::write(&path, body("after")).unwrap();
    assert!(Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().unwrap().success());
    let reloaded = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        http(&gw.public, "GET", "/hi").ends_with("after")
    });
    assert!(reloaded, "SIGHUP did not reload the config");
}

#[test]
fn two_hundred_reloads_leave_one_live_snapshot() {
    let path = temp_file(
        "rss.yaml",
        "version: 1\nadmin: { address: \"127.0.0.1:0\" }\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\nupstreams:\n  app:\n    targets: [{ address: \"127.0.0.1:9\" }, { address: \"127.0.0.1:10\" }]\n    health:\n      active: { path: /health, interval: 1s }\nroutes:\n  - name: hi\n    match: { path: /hi }\n    target: { static: { body: hello } }\n  - name: app\n    match: { path_prefix: /app }\n    target: { upstream: app }\n",
    );
    let gw = Running::start(&path, &["--no-watch"], true);
    let admin = gw.admin.clone().unwrap();
    let reload = || {
        let reply = http(&admin, "POST", "/-/reload");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    };
    for _ in 0..30 {
        reload();
        http(&gw.public, "GET", "/hi");
    }
    let before = rss_kib(gw.pid());
    for _ in 0..200 {
        reload();
        http(&gw.public, "GET", "/hi");
    }
    let after = rss_kib(gw.pid());
    let status = http(&admin, "GET", "/-/status");
    assert!(status.contains("\"generation\":231"), "{status}");
    assert!(status.contains("\"live_snapshots\":1"), "old snapshots are still alive: {status}");
    // Memory is a measurement, not an assertion (it depends on the allocator and the
    // machine): printed for whoever looks, and measured in BENCHMARKS.md (P5).
    eprintln!("RSS over 200 reloads: {before} KiB -> {after} KiB");
}
