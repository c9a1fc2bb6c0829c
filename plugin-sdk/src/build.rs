//! Building plugin crates into components from a `build.rs` (feature `build`).
//!
//! The gateway embeds its built-in plugins and the test suite loads its test plugins
//! this way: a nested `cargo build --release --target wasm32-wasip2` into a target
//! folder of its own, with the outer build's wrappers and flags removed so a clippy
//! or coverage run of the host does not leak into the guest build.
//!
//! The `wasm32-wasip2` standard library is installed on demand: [`ensure_target`]
//! adds it with rustup when the compiler cargo is using lacks it, and otherwise
//! says in one line which command to run (see [`TargetPlan`]).
//!
//! ```no_run
//! # fn main() -> Result<(), String> {
//! use std::path::Path;
//! sluice_plugin_sdk::build::ensure_target()?;
//! let target = Path::new("target/wasm-plugins");
//! sluice_plugin_sdk::build::cargo_build(Path::new("plugins/Cargo.toml"), &[], target)?;
//! let wasm = sluice_plugin_sdk::build::component_path(target, "my-plugin");
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Variables of an outer cargo run that must not reach the nested guest build.
const OUTER_ONLY: &[&str] = &[
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
];

/// Builds `packages` of the cargo workspace or package at `manifest` (every member
/// when `packages` is empty) to `wasm32-wasip2` components, in release mode and
/// optimised for speed (`opt-level = 3`), into `target_dir`. The manifest's release
/// profile does not decide these: the guests are also stripped, without debug info,
/// and built without link-time optimisation (16 codegen units), which the gateway's
/// own release profile turns on and which would slow every cold guest build.
///
/// Speed, not size: a guest's code runs on every request, while its size costs only
/// compile time at load. Measured on the P2 chain (auth JWT HS256 + rate-limit +
/// transform, both phases): 26.6 µs at `opt-level = "s"`, 21.8 µs at 3; the
/// components grow by 13–18%.
pub fn cargo_build(manifest: &Path, packages: &[&str], target_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", TARGET, "--manifest-path"]).arg(manifest);
    if packages.is_empty() {
        cmd.arg("--workspace");
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    cmd.env("CARGO_TARGET_DIR", target_dir)
        // Speed-optimised, stripped guests, whatever the workspace's release profile
        // (without its link-time optimisation: see above).
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16");
    for var in OUTER_ONLY {
        cmd.env_remove(var);
    }
    let status = cmd.status().map_err(|e| format!("running cargo for {}: {e}", manifest.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building {} for {TARGET} failed", manifest.display()))
    }
}

/// Where [`cargo_build`] leaves the component of the library `lib_name` (dashes
/// become underscores, as cargo names the file).
pub fn component_path(target_dir: &Path, lib_name: &str) -> PathBuf {
    target_dir.join(TARGET).join("release").join(format!("{}.wasm", lib_name.replace('-', "_")))
}

/// What the build does about the `wasm32-wasip2` standard library of the compiler
/// cargo is using: the decision of [`ensure_target`], apart from its effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPlan {
    /// Installed: build.
    Present,
    /// Missing, and rustup manages the toolchain: `rustup target add` it for
    /// exactly that toolchain (not whichever is the default).
    Add {
        /// The toolchain cargo runs with (rustup's `RUSTUP_TOOLCHAIN`).
        toolchain: String,
    },
    /// Missing and not addable from here: stop with this one line, which names the
    /// command to run.
    Stop(String),
}

/// Decides what to do about the target. `installed`: whether the compiler has the
/// target's `core`; `toolchain`: the rustup toolchain cargo runs with, if rustup
/// runs it; `rustup`: whether the `rustup` command answers.
pub fn plan_target(installed: bool, toolchain: Option<&str>, rustup: bool) -> TargetPlan {
    match (installed, toolchain) {
        (true, _) => TargetPlan::Present,
        (false, Some(toolchain)) if rustup => TargetPlan::Add { toolchain: toolchain.to_owned() },
        (false, Some(toolchain)) => TargetPlan::Stop(format!(
            "the {TARGET} target is not installed for the Rust toolchain `{toolchain}` and `rustup` \
             does not run here: run `rustup target add {TARGET} --toolchain {toolchain}`"
        )),
        (false, None) => TargetPlan::Stop(format!(
            "the {TARGET} target is not installed for this Rust compiler, which rustup does not \
             manage: install that compiler's {TARGET} standard library (with rustup: \
             `rustup target add {TARGET}`)"
        )),
    }
}

/// Makes sure the compiler cargo is using (`$RUSTC`) can build for `wasm32-wasip2`,
/// adding the target with rustup when it is missing (one `cargo:warning` line says
/// so). Call it from a build script before [`cargo_build`]; the error is one line
/// naming the command to run, fit for `cargo::error=`.
pub fn ensure_target() -> Result<(), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if target_installed(&rustc)? {
        return Ok(());
    }
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok().filter(|t| !t.is_empty());
    let rustup = Command::new("rustup").arg("--version").output().is_ok_and(|o| o.status.success());
    match plan_target(false, toolchain.as_deref(), rustup) {
        TargetPlan::Present => Ok(()),
        TargetPlan::Stop(line) => Err(line),
        TargetPlan::Add { toolchain } => {
            // Two build scripts (the gateway's and the tests') may get here at once:
            // one adds the target while the other waits, then finds it installed.
            let lock = std::fs::File::create(std::env::temp_dir().join("sluice-rustup-target.lock"))
                .map_err(|e| format!("creating the rustup lock file: {e}"))?;
            lock.lock().map_err(|e| format!("locking the rustup lock file: {e}"))?;
            if target_installed(&rustc)? {
                return Ok(());
            }
            println!(
                "cargo:warning=installing the {TARGET} target for the plugins: \
                 rustup target add {TARGET} --toolchain {toolchain}"
            );
            let out = Command::new("rustup")
                .args(["target", "add", TARGET, "--toolchain", &toolchain])
                .output()
                .map_err(|e| format!("running rustup: {e}"))?;
            if !out.status.success() || !target_installed(&rustc)? {
                return Err(format!(
                    "the {TARGET} target is not installed and `rustup target add {TARGET} --toolchain \
                     {toolchain}` failed ({}): run it yourself, or install the target for this \
                     toolchain another way",
                    last_line(&out)
                ));
            }
            Ok(())
        }
    }
}

/// Whether `rustc` has the target's standard library (its `libcore`).
fn target_installed(rustc: &str) -> Result<bool, String> {
    let out = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| format!("running {rustc}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{rustc} does not know the {TARGET} target ({}): Sluice's plugins need Rust 1.82 or newer",
            last_line(&out)
        ));
    }
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(std::fs::read_dir(libdir).is_ok_and(|entries| {
        entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    }))
}

/// The last non-empty line a command wrote to stderr (or stdout), for a one-line error.
fn last_line(out: &Output) -> String {
    [&out.stderr, &out.stdout]
        .iter()
        .find_map(|bytes| {
            let text = String::from_utf8_lossy(bytes);
            text.lines().map(str::trim).rfind(|l| !l.is_empty()).map(str::to_owned)
        })
        .unwrap_or_else(|| format!("exit status {}", out.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_target_is_left_alone() {
        assert_eq!(plan_target(true, Some("stable-x86_64-unknown-linux-gnu"), true), TargetPlan::Present);
        assert_eq!(plan_target(true, None, false), TargetPlan::Present);
    }

    #[test]
    fn a_missing_target_is_added_for_the_toolchain_cargo_runs() {
        assert_eq!(
            plan_target(false, Some("1.95.0-x86_64-unknown-linux-gnu"), true),
            TargetPlan::Add { toolchain: "1.95.0-x86_64-unknown-linux-gnu".into() }
        );
    }

    #[test]
    fn without_rustup_the_build_stops_naming_the_command() {
        let TargetPlan::Stop(line) = plan_target(false, Some("stable"), false) else { panic!("not a stop") };
        assert!(line.contains("`rustup target add wasm32-wasip2 --toolchain stable`"), "{line}");
        assert!(!line.contains('\n'), "{line}");
        let TargetPlan::Stop(line) = plan_target(false, None, true) else { panic!("not a stop") };
        assert!(line.contains("rustup target add wasm32-wasip2"), "{line}");
        assert!(line.contains("not manage"), "{line}");
    }

    #[test]
    fn the_compiler_running_these_tests_is_probed_without_error() {
        // The probe itself (not the answer, which depends on the machine) must work
        // with the compiler cargo gives build scripts and tests.
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        target_installed(&rustc).unwrap();
        assert!(target_installed("/nonexistent/rustc").is_err());
    }
}
