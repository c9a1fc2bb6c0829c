//! Golden tests: invalid configs and the exact errors they produce.
//!
//! Every `tests/ui/invalid/NAME.yaml` is loaded like `sluice check` would (parse,
//! validate, build the snapshot) and the error's text must equal `NAME.err`
//! byte for byte. Run with `SLUICE_BLESS=1` to rewrite the `.err` files, then read
//! each diff: the line and column must point at the culprit.
//! Every `tests/ui/valid/*.yaml` must load without a problem.

use std::path::{Path, PathBuf};

use sluice::config::{ConfigError, parse_str};
use sluice::snapshot::Snapshot;

fn ui_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui").join(kind)
}

/// The `.yaml` files of `dir`, sorted.
fn configs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Loads a config the way the gateway does, reporting it under its file name.
fn load(path: &Path) -> Result<(), ConfigError> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let loaded = parse_str(name, &text, path.parent().unwrap().to_owned())?;
    Snapshot::build(loaded, 1).map(drop)
}

#[test]
fn invalid_configs_report_every_problem_where_it_is() {
    let bless = std::env::var_os("SLUICE_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    let files = configs(&ui_dir("invalid"));
    assert!(!files.is_empty(), "no invalid configs found");
    for yaml in files {
        let expected_path = yaml.with_extension("err");
        let actual = match load(&yaml) {
            Ok(()) => "<loaded without errors>".to_owned(),
            Err(e) => e.to_string(),
        } + "\n";
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                yaml.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden file(s) differ (SLUICE_BLESS=1 rewrites them):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_configs_load() {
    let files = configs(&ui_dir("valid"));
    assert!(!files.is_empty(), "no valid configs found");
    for yaml in files {
        if let Err(e) = load(&yaml) {
            panic!("{} should load:\n{e}", yaml.display());
        }
    }
}

#[test]
fn the_quickstart_loads() {
    let loaded = sluice::config::quickstart();
    Snapshot::build(loaded, 1).unwrap();
}
