//! Compiles the built-in plugins (`plugins/*`, members of this workspace) to
//! `wasm32-wasip2` components and embeds them: `$OUT_DIR/builtins.rs` holds
//! `BUILTINS`, each name with its component's bytes (see `plugins::builtin`).
//! Also embeds the example plugin projects `examples/plugins/tally/<lang>/` as the
//! templates of `sluice plugin new` (`$OUT_DIR/templates.rs`, see `devkit::scaffold`).

use std::path::PathBuf;

/// The built-in plugins: (plugin name, cargo package, optional capabilities). The name
/// is what routes list. Optional capabilities are imports the plugin uses only when
/// its config asks (auth fetches a JWKS URL only when one is configured): a route need
/// not grant them, and an ungranted call is refused when it is made instead of when
/// the component is loaded.
const BUILTINS: &[(&str, &str, &[&str])] = &[
    ("ai", "sluice-plugin-ai", &["kv", "secrets", "http"]),
    ("auth", "sluice-plugin-auth", &["http", "secrets"]),
    ("cors", "sluice-plugin-cors", &[]),
    ("mcp", "sluice-plugin-mcp", &[]),
    ("openapi-validate", "sluice-plugin-openapi-validate", &[]),
    ("rate-limit", "sluice-plugin-rate-limit", &[]),
    ("transform", "sluice-plugin-transform", &[]),
];

fn main() -> Result<(), String> {
    // A missing wasm32-wasip2 target is added with rustup; when it cannot be, the
    // build stops with one line naming the command (not rustc's E0463 on `core`).
    if let Err(line) = sluice_plugin_sdk::build::ensure_target() {
        println!("cargo::error={line}");
        return Ok(());
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = manifest.parent().ok_or("host/ has a parent")?.to_owned();
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: share one guest target
    // folder between profiles.
    let target_dir = out.ancestors().nth(4).unwrap_or(&out).join("wasm-builtins");
    for watched in ["plugins", "plugin-sdk/src", "plugin-sdk/Cargo.toml", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let packages: Vec<&str> = BUILTINS.iter().map(|(_, p, _)| *p).collect();
    sluice_plugin_sdk::build::cargo_build(&root.join("Cargo.toml"), &packages, &target_dir)?;

    let mut code = String::from("/// The built-in plugins.\npub const BUILTINS: &[Builtin] = &[\n");
    for (name, _, optional) in BUILTINS {
        let file = sluice_plugin_sdk::build::component_path(&target_dir, name);
        if !file.is_file() {
            return Err(format!("expected {} after building the built-in plugins", file.display()));
        }
        let schema = root.join("plugins").join(name).join("schema.json");
        let schema = if schema.is_file() {
            format!("Some(include_str!({:?}))", schema.display().to_string())
        } else {
            "None".to_owned()
        };
        code.push_str(&format!(
            "    Builtin {{ name: {name:?}, wasm: include_bytes!({:?}), schema: {schema}, optional: &{optional:?} }},\n",
            file.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("builtins.rs"), code).map_err(|e| e.to_string())?;
    templates(&root.join("examples/plugins"), &["starter", "tally"], &out)?;
    sdk(&root, &out)
}

/// Writes `$OUT_DIR/sdk.rs`: the Rust plugin SDK as `sluice plugin new --lang rust`
/// writes it into a project, so a project builds with the `sluice` binary alone:
/// `SDK_MANIFEST` (the SDK's Cargo.toml made standalone: every `workspace = true`
/// replaced by the workspace's value) and `SDK_SOURCES` (`src/**.rs`).
fn sdk(root: &std::path::Path, out: &std::path::Path) -> Result<(), String> {
    let read = |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let workspace = read(&root.join("Cargo.toml"))?;
    // `name = value` of a section of the workspace manifest.
    let section = |name: &str| -> Vec<(String, String)> {
        let header = format!("[{name}]");
        workspace
            .lines()
            .skip_while(|l| l.trim() != header)
            .skip(1)
            .take_while(|l| !l.trim_start().starts_with('['))
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())))
            .collect()
    };
    let (package, deps) = (section("workspace.package"), section("workspace.dependencies"));
    let value = |list: &[(String, String)], key: &str| {
        list.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .ok_or(format!("no `{key}` in the workspace"))
    };
    let mut manifest =
        String::from("# The Sluice plugin SDK, written into this project by `sluice plugin new`.\n");
    let mut in_lints = false;
    for line in read(&root.join("plugin-sdk/Cargo.toml"))?.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_lints = trimmed == "[lints]";
            if in_lints {
                continue;
            }
        }
        if in_lints {
            continue;
        }
        match trimmed.strip_suffix(".workspace = true") {
            Some(key @ ("version" | "edition" | "rust-version" | "license")) => {
                manifest.push_str(&format!("{key} = {}\n", value(&package, key)?));
                if key == "version" {
                    manifest.push_str("publish = false\n");
                }
            }
            Some(dep) => manifest.push_str(&format!("{dep} = {}\n", value(&deps, dep)?)),
            None => {
                manifest.push_str(line);
                manifest.push('\n');
            }
        }
    }
    let src = root.join("plugin-sdk/src");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&src).map_err(|e| e.to_string())?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    let mut code = format!(
        "/// The SDK's Cargo.toml, standalone.\npub const SDK_MANIFEST: &str = {manifest:?};\n/// The SDK's `src/` files: (file name, contents).\npub const SDK_SOURCES: &[(&str, &str)] = &[\n"
    );
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        code.push_str(&format!("    ({name:?}, include_str!({:?})),\n", path.display().to_string()));
    }
    code.push_str("];\n");
    std::fs::write(out.join("sdk.rs"), code).map_err(|e| e.to_string())
}

/// Folders and files of an example project that are build output or installed
/// tooling, never part of a template.
const NOT_TEMPLATE: &[&str] =
    &["build", "target", "node_modules", "gen", "__pycache__", ".zig-cache", "zig-cache", "zig-out"];

/// Writes `$OUT_DIR/templates.rs`: `TEMPLATES`, every file of every
/// `examples/plugins/<example>/<lang>/` project (a folder with a `build.sh`) as
/// (example, language, relative path, bytes). Symlinks are followed: the tally
/// examples share their test and fixtures (`../test.sh`, `../test/`) and the host's
/// WIT (`wit/deps/sluice-plugin`) through them, and a scaffolded project gets copies.
fn templates(examples: &std::path::Path, names: &[&str], out: &std::path::Path) -> Result<(), String> {
    // Watch the template files one by one: watching the folder would rebuild the
    // gateway whenever an example is built in place (build/, target/, node_modules/).
    // A file added to an example is picked up at the next change of any other.
    let mut files = Vec::new();
    for example in names {
        let dir = examples.join(example);
        if !dir.is_dir() {
            continue;
        }
        for lang in std::fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
            if lang.path().join("build.sh").is_file() {
                let name = format!("{example}\u{0}{}", lang.file_name().to_string_lossy());
                collect(&lang.path(), &lang.path(), &name, &mut files)?;
            }
        }
    }
    files.sort();
    let mut code = String::from(
        "/// The `sluice plugin new` templates: (example, language, path, contents).\npub const TEMPLATES: &[(&str, &str, &str, &[u8])] = &[\n",
    );
    for (key, rel, path) in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let (example, lang) = key.split_once('\u{0}').unwrap_or(("tally", &key));
        code.push_str(&format!(
            "    ({example:?}, {lang:?}, {rel:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("templates.rs"), code).map_err(|e| e.to_string())
}

fn collect(
    base: &std::path::Path,
    dir: &std::path::Path,
    lang: &str,
    files: &mut Vec<(String, String, PathBuf)>,
) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        // Through symlinks: what they point at is the template's content.
        let ty = std::fs::metadata(entry.path()).map_err(|e| format!("{}: {e}", entry.path().display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if NOT_TEMPLATE.contains(&name.as_str()) || name.ends_with(".wasm") {
            continue;
        }
        if ty.is_dir() {
            collect(base, &entry.path(), lang, files)?;
        } else {
            let rel =
                entry.path().strip_prefix(base).map_err(|e| e.to_string())?.to_string_lossy().into_owned();
            files.push((lang.to_owned(), rel, entry.path()));
        }
    }
    Ok(())
}
