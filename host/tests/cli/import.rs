//! `sluice import openapi`: the petstore document (`tests/data/petstore.yaml`) becomes
//! a config that `sluice check` accepts; what cannot be imported is named by its
//! JSON pointer.

use std::process::Command;

use super::BIN;

const PETSTORE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/petstore.yaml");

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-import-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_imported_petstore_passes_check() {
    let dir = temp_dir("petstore");
    // The document beside the config, referenced relatively.
    std::fs::copy(PETSTORE, dir.join("petstore.yaml")).unwrap();
    let out = Command::new(BIN)
        .args(["import", "openapi", PETSTORE, "--spec-ref", "petstore.yaml", "--prefix", "/api"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("name: openapi-validate"), "{yaml}");
    assert!(yaml.contains("path: \"/api/pets/{petId}\""), "{yaml}");
    assert!(yaml.contains("methods: [GET, POST]"), "{yaml}");
    assert!(yaml.contains("address: 127.0.0.1:8081"), "the document's server: {yaml}");
    let config = dir.join("sluice.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let check = Command::new(BIN).arg("check").arg(&config).output().unwrap();
    assert!(
        check.status.success(),
        "sluice check refused the import:\n{}\n{yaml}",
        String::from_utf8_lossy(&check.stderr)
    );
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(stdout.contains("ok (2 routes, 1 upstreams)"), "{stdout}");
    // Without the document beside it, check names the reference.
    std::fs::remove_file(dir.join("petstore.yaml")).unwrap();
    let check = Command::new(BIN).arg("check").arg(&config).output().unwrap();
    assert!(!check.status.success());
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains("config.spec.$file: petstore.yaml: cannot read the file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_cannot_be_imported_is_named_by_its_json_pointer() {
    let dir = temp_dir("bad");
    let spec = dir.join("files.yaml");
    std::fs::write(
        &spec,
        "openapi: 3.1.0\ninfo: { title: t, version: '1' }\nservers: [{ url: 'http://127.0.0.1:9' }]\npaths:\n  /files/{name}.json:\n    get: {}\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["import", "openapi"]).arg(&spec).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("#/paths/~1files~1{name}.json: `{name}.json`"), "{err}");
    std::fs::write(&spec, "swagger: '2.0'\n").unwrap();
    let out = Command::new(BIN).args(["import", "openapi"]).arg(&spec).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("#/openapi: an OpenAPI 3.0 or 3.1 document is needed"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
