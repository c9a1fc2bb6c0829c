//! Compiles the test plugins (`plugins/`, a separate cargo workspace) and the example
//! plugin (`../examples/plugins/guard`) to `wasm32-wasip2` components with a nested
//! cargo, in its own target folder under the main one, and exposes their paths as
//! constants in `$OUT_DIR/plugins.rs` (see `sluice_tests::plugins`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const TARGET: &str = "wasm32-wasip2";

fn main() -> Result<()> {
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
        let file = target_dir.join(TARGET).join("release").join(format!("{}.wasm", name.replace('-', "_")));
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
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--workspace", "--target", TARGET, "--manifest-path"])
        .arg(manifest)
        .env("CARGO_TARGET_DIR", target_dir);
    // Do not leak the outer build's settings (clippy wrappers, host rustflags,
    // coverage) into the guest build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().with_context(|| format!("running cargo for {}", manifest.display()))?;
    if !status.success() {
        bail!("building {} for {TARGET} failed", manifest.display());
    }
    Ok(())
}
