//! Compiles the test plugins (`plugins/`, a separate cargo workspace) and the example
//! plugin (`../examples/plugins/guard`) to `wasm32-wasip2` components with a nested
//! cargo, in its own target folder under the main one, and exposes their paths as
//! constants in `$OUT_DIR/plugins.rs` (see `sluice_tests::plugins`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    // As in host/build.rs: add a missing wasm32-wasip2 target, or stop with one line.
    if let Err(line) = sluice_plugin_sdk::build::ensure_target() {
        println!("cargo::error={line}");
        return Ok(());
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().context("tests/ has a parent")?.to_owned();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let target_dir = out.ancestors().nth(4).unwrap_or(&out).join("wasm-plugins");

    for watched in
        ["tests/plugins", "plugin-sdk/src", "plugin-sdk/Cargo.toml", "wit", "examples/plugins/guard/src"]
    {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let test_plugins = root.join("tests/plugins");
    build(&test_plugins.join("Cargo.toml"), &target_dir)?;
    let example = root.join("examples/plugins/guard/Cargo.toml");
    build(&example, &target_dir)?;

    let mut consts = String::new();
    let mut names: Vec<String> = std::fs::read_dir(&test_plugins)?
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.push("guard".into());
    names.sort();
    for name in names {
        let file = sluice_plugin_sdk::build::component_path(&target_dir, &name);
        if !file.is_file() {
            bail!("expected {} after building the test plugins", file.display());
        }
        let ident = name.replace('-', "_").to_uppercase();
        consts.push_str(&format!(
            "/// The `{name}` component.\npub const {ident}: &str = {:?};\n",
            file.display().to_string()
        ));
    }
    std::fs::write(out.join("plugins.rs"), consts)?;
    Ok(())
}

fn build(manifest: &Path, target_dir: &Path) -> Result<()> {
    sluice_plugin_sdk::build::cargo_build(manifest, &[], target_dir).map_err(anyhow::Error::msg)
}
