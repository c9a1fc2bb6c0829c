//! `sluice plugin …` as an author runs it: the WIT, scaffolding errors, the offline
//! harness with golden files, and the checks on files that are not plugins.

use std::process::{Command, Output};

use super::BIN;

fn sluice(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn wit_prints_and_writes_the_contract() {
    let out = sluice(&["plugin", "wit"]);
    assert!(out.status.success());
    let wit = String::from_utf8_lossy(&out.stdout);
    assert!(wit.contains("package sluice:plugin@") && wit.contains("world plugin {"), "{wit}");

    let dir = tempfile::tempdir().unwrap();
    let out = sluice(&["plugin", "wit", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(dir.path().join("plugin.wit")).unwrap(), wit);
}

#[test]
fn new_refuses_bad_names_unknown_languages_and_full_folders() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("p");
    let target = target.to_str().unwrap();
    let out = sluice(&["plugin", "new", "Bad_Name", "--lang", "rust", "--dir", target]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not a plugin name"), "{}", stderr(&out));

    let out = sluice(&["plugin", "new", "ok", "--lang", "cobol", "--dir", target]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no template for `cobol`") && err.contains("python") && err.contains("js"), "{err}");

    std::fs::create_dir_all(dir.path().join("p")).unwrap();
    std::fs::write(dir.path().join("p/keep.txt"), "mine").unwrap();
    let out = sluice(&["plugin", "new", "ok", "--lang", "python", "--dir", target]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists and is not empty"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(dir.path().join("p/keep.txt")).unwrap(), "mine");
}

#[test]
fn test_runs_a_built_in_offline_and_checks_the_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    std::fs::write(path("cors.yaml"), "allow_origins: [https://app.test]\nallow_methods: [GET, POST]\n")
        .unwrap();
    std::fs::write(
        path("preflight.yaml"),
        "method: OPTIONS\npath: /orders\nheaders:\n  origin: https://app.test\n  access-control-request-method: POST\n",
    )
    .unwrap();
    let args = |expect: &str| {
        vec![
            "plugin".to_owned(),
            "test".to_owned(),
            "cors".to_owned(),
            "--config".to_owned(),
            path("cors.yaml"),
            "--request".to_owned(),
            path("preflight.yaml"),
            "--expect".to_owned(),
            expect.to_owned(),
        ]
    };
    let golden = path("preflight.expected.json");
    let run = |a: Vec<String>| Command::new(BIN).args(a).env_remove("SLUICE_BLESS").output().unwrap();

    // First run writes the golden file; the preflight is answered by the plugin.
    let out = run(args(&golden));
    assert!(out.status.success(), "{}", stderr(&out));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["decision"], "respond", "{outcome}");
    assert_eq!(
        outcome["response"]["headers"]["access-control-allow-origin"], "https://app.test",
        "{outcome}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
    assert_eq!(written, outcome);

    // A second run matches it.
    let out = run(args(&golden));
    assert!(out.status.success(), "{}", stderr(&out));

    // A changed golden file fails the run with a diff.
    let edited = std::fs::read_to_string(&golden).unwrap().replace("https://app.test", "https://other.test");
    std::fs::write(&golden, edited).unwrap();
    let out = run(args(&golden));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("differs from") && err.contains("+ ") && err.contains("--bless"), "{err}");
}

#[test]
fn check_and_componentize_explain_files_that_are_not_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, "not wasm at all").unwrap();
    let out = sluice(&["plugin", "check", garbage.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not WebAssembly"), "{}", stderr(&out));

    // An empty core module: valid WebAssembly, but not a component.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = sluice(&["plugin", "check", core.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("is a core WebAssembly module, not a component") && err.contains("componentize"),
        "{err}"
    );

    // Componentizing it needs the world's type, which the bindings' object carries.
    let out = sluice(&[
        "plugin",
        "componentize",
        core.to_str().unwrap(),
        "-o",
        dir.path().join("c.wasm").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("component-type"), "{}", stderr(&out));

    // `--wit` gives the type instead (Go's route); the module then lacks the world's
    // exports, which is the next thing said.
    let componentize = |extra: &[&str]| {
        let mut args = vec!["plugin", "componentize", core.to_str().unwrap(), "-o"];
        let output = dir.path().join("c.wasm");
        args.push(output.to_str().unwrap());
        args.extend_from_slice(extra);
        let out = sluice(&args);
        assert!(!out.status.success());
        stderr(&out)
    };
    let wit = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/plugins/tally/go/wit");
    let err = componentize(&["--wit", wit, "--world", "plugin"]);
    assert!(!err.contains("component-type section"), "{err}");
    assert!(err.contains("making a component of the module"), "{err}");
    let err = componentize(&["--wit", wit, "--world", "nope"]);
    assert!(err.contains("no world `nope`"), "{err}");
    let err = componentize(&["--wit", garbage.to_str().unwrap()]);
    assert!(err.contains("is not a folder"), "{err}");
    let err = componentize(&["--world", "plugin"]);
    assert!(err.contains("--wit"), "`--world` needs `--wit`: {err}");
}

#[test]
fn test_shows_the_plugins_log_lines_on_stderr() {
    // The built-in `ai` logs an error when its provider names an upstream the config
    // does not have (the harness's only upstream is its recorder).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ai.yaml");
    std::fs::write(
        &config,
        "providers: [{ name: main, kind: openai, upstream: nowhere, models: { fast: gpt-4o-mini } }]\n",
    )
    .unwrap();
    let request = dir.path().join("chat.yaml");
    std::fs::write(
        &request,
        "method: POST\npath: /v1/chat/completions\nheaders: { content-type: application/json }\nbody: '{\"model\": \"fast\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["plugin", "test", "ai", "--config"])
        .arg(&config)
        .arg("--request")
        .arg(&request)
        .env_remove("SLUICE_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["decision"], "respond", "{outcome}");
    let err = stderr(&out);
    assert!(err.contains("provider main: no upstream named `nowhere`"), "{err}");
}
