//! `sluice plugin new NAME --lang LANG`: writes a new plugin project from the example
//! of that language (`examples/plugins/tally/<lang>/`, embedded at build time), with
//! the WIT, a build script, and a test that runs the offline harness on fixtures.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));
include!(concat!(env!("OUT_DIR"), "/sdk.rs"));

/// Where a scaffolded Rust project keeps its own copy of the SDK (with the WIT), so
/// it builds with nothing but the `sluice` binary and crates.io.
pub const SDK_DIR: &str = "sluice-plugin-sdk";

/// How the SDK's sources find the WIT in the repository, and in a project's copy.
const SDK_WIT_IN_REPO: &str = "path: \"../wit\",";
const SDK_WIT_IN_COPY: &str = "path: \"wit\",";

/// The example a new project starts from when the language has it: a minimal
/// plugin (config struct, one rule, one unit test, one fixture). Others start from
/// [`FULL_EXAMPLE`].
pub const STARTER: &str = "starter";

/// The full example, in every language (`--example tally`).
pub const FULL_EXAMPLE: &str = "tally";

/// Where the Rust template finds the SDK, relative to the example project.
const TEMPLATE_SDK_PATH: &str = "path = \"../../../../plugin-sdk\"";

/// Where projects that keep a `wit/` folder have the host's WIT (the examples link
/// it to the repository's `wit/`; a scaffolded project gets a copy).
pub const WIT_DEPS_PATH: &str = "wit/deps/sluice-plugin/plugin.wit";

/// The languages `sluice plugin new` knows, in the order the help lists them.
pub fn languages() -> Vec<&'static str> {
    let mut langs: Vec<&str> = TEMPLATES.iter().map(|(_, l, _, _)| *l).collect();
    langs.sort_unstable();
    langs.dedup();
    langs
}

/// The examples a project can start from, in one language.
pub fn examples(lang: &str) -> Vec<&'static str> {
    let mut names: Vec<&str> = TEMPLATES.iter().filter(|(_, l, _, _)| *l == lang).map(|(e, ..)| *e).collect();
    names.dedup();
    names
}

/// What to scaffold.
#[derive(Debug, Clone)]
pub struct Scaffold {
    /// The plugin's name: lowercase letters, digits and `-`, starting with a letter.
    pub name: String,
    /// The language (one of [`languages`]).
    pub lang: String,
    /// The example to start from (`tally`); default [`STARTER`] where the language
    /// has it, else [`FULL_EXAMPLE`]. Every occurrence of its name becomes `name`.
    pub example: Option<String>,
    /// The folder to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// The SDK for Rust projects: a `plugin-sdk` folder to depend on by path (for
    /// work on the SDK itself). Default: a copy written into the project.
    pub sdk: Option<PathBuf>,
}

/// Checks a plugin name: it becomes a file name, a crate name and a package name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "`{name}` is not a plugin name: use lowercase letters, digits and `-`, starting with a letter (like `team-quota`)"
        );
    }
    Ok(())
}

/// Writes the project; returns the files written (relative to the project folder).
pub fn scaffold(s: &Scaffold) -> Result<Vec<PathBuf>> {
    check_name(&s.name)?;
    let available = examples(&s.lang);
    if available.is_empty() {
        bail!("no template for `{}`: choose one of {}", s.lang, languages().join(", "));
    }
    let example = match s.example.as_deref() {
        Some(e) if available.contains(&e) => e,
        Some(e) => bail!("no example `{e}` for `{}`: choose one of {}", s.lang, available.join(", ")),
        None if available.contains(&STARTER) => STARTER,
        None => FULL_EXAMPLE,
    };
    let files: Vec<_> = TEMPLATES.iter().filter(|(e, l, _, _)| *e == example && *l == s.lang).collect();
    if s.dir.exists() && std::fs::read_dir(&s.dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty", s.dir.display());
    }
    let sdk = match (&*s.lang, s.sdk.as_deref()) {
        ("rust", Some(given)) => Some(checked_sdk(given)?.display().to_string()),
        ("rust", None) => Some(SDK_DIR.to_owned()),
        _ => None,
    };
    let mut written = Vec::new();
    if s.lang == "rust" && s.sdk.is_none() {
        for (rel, contents) in sdk_copy() {
            write(&s.dir, &rel, contents.as_bytes())?;
            written.push(rel);
        }
    }
    for (_, _, rel, contents) in files {
        let rel = PathBuf::from(rel.replace(example, &s.name));
        let contents = match std::str::from_utf8(contents) {
            Ok(text) => {
                let mut text = text.replace(example, &s.name);
                if let Some(sdk) = &sdk {
                    text = text.replace(TEMPLATE_SDK_PATH, &format!("path = {sdk:?}"));
                }
                text.into_bytes()
            }
            Err(_) => contents.to_vec(),
        };
        write(&s.dir, &rel, &contents)?;
        written.push(rel);
    }
    Ok(written)
}

fn write(dir: &Path, rel: &Path, contents: &[u8]) -> Result<()> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    if rel.extension().is_some_and(|e| e == "sh") {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// The SDK's files as a project's copy has them (relative to the project): the
/// standalone manifest, the sources finding the WIT beside them, and the WIT.
fn sdk_copy() -> Vec<(PathBuf, String)> {
    let dir = Path::new(SDK_DIR);
    let mut files = vec![(dir.join("Cargo.toml"), SDK_MANIFEST.to_owned())];
    for (name, text) in SDK_SOURCES {
        files.push((dir.join("src").join(name), text.replace(SDK_WIT_IN_REPO, SDK_WIT_IN_COPY)));
    }
    files.push((dir.join("wit/plugin.wit"), crate::plugins::compat::WIT.to_owned()));
    files
}

/// A `--sdk` folder, checked to be the SDK's (not, say, the checkout's root, which
/// cargo would reject later with a less clear message), as an absolute path.
fn checked_sdk(given: &Path) -> Result<PathBuf> {
    let manifest = std::fs::read_to_string(given.join("Cargo.toml")).unwrap_or_default();
    if !manifest.lines().any(|l| l.trim() == "name = \"sluice-plugin-sdk\"") {
        bail!(
            "{} is not the Rust plugin SDK (no Cargo.toml of the package `sluice-plugin-sdk` there): \
             pass the `plugin-sdk` folder of a Sluice checkout, or leave `--sdk` out to get a copy of \
             the SDK in the project",
            given.display()
        );
    }
    given.canonicalize().with_context(|| format!("cannot resolve {}", given.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::compat::WIT as PLUGIN_WIT;

    #[test]
    fn names_are_checked() {
        for good in ["tally", "team-quota", "a1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["Tally", "1x", "-x", "x-", "a_b", "a b", ""] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_language_template_builds_and_tests_itself() {
        let langs = languages();
        for lang in ["rust", "python", "js", "c", "zig", "go"] {
            assert!(langs.contains(&lang), "no `{lang}` template in {langs:?}");
            let files: Vec<&str> = TEMPLATES
                .iter()
                .filter(|(e, l, _, _)| *e == FULL_EXAMPLE && *l == lang)
                .map(|(_, _, p, _)| *p)
                .collect();
            for needed in ["build.sh", "test.sh", "README.md"] {
                assert!(files.contains(&needed), "the {lang} template has no {needed}: {files:?}");
            }
        }
    }

    #[test]
    fn scaffolding_renames_and_writes_the_wit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("p");
        let s = Scaffold {
            name: "team-quota".into(),
            lang: "python".into(),
            example: None,
            dir: target.clone(),
            sdk: None,
        };
        let files = scaffold(&s).unwrap();
        assert!(files.contains(&PathBuf::from(WIT_DEPS_PATH)));
        let build = std::fs::read_to_string(target.join("build.sh")).unwrap();
        assert!(build.contains("team-quota.wasm") && !build.contains(FULL_EXAMPLE), "{build}");
        assert_eq!(std::fs::read_to_string(target.join(WIT_DEPS_PATH)).unwrap(), PLUGIN_WIT);
        assert!(scaffold(&s).is_err(), "an existing non-empty folder is refused");
    }

    #[test]
    fn a_rust_project_gets_its_own_copy_of_the_sdk() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("p");
        let s = Scaffold {
            name: "team-quota".into(),
            lang: "rust".into(),
            example: None,
            dir: target.clone(),
            sdk: None,
        };
        scaffold(&s).unwrap();
        let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("sluice-plugin-sdk = { path = \"sluice-plugin-sdk\" }"), "{manifest}");
        assert!(!manifest.contains(env!("CARGO_MANIFEST_DIR")), "no path into the checkout: {manifest}");
        let sdk = std::fs::read_to_string(target.join(SDK_DIR).join("Cargo.toml")).unwrap();
        assert!(!sdk.contains("workspace"), "a standalone manifest: {sdk}");
        assert!(sdk.contains("name = \"sluice-plugin-sdk\"") && sdk.contains("wit-bindgen = "), "{sdk}");
        let lib = std::fs::read_to_string(target.join(SDK_DIR).join("src/lib.rs")).unwrap();
        assert!(lib.contains(SDK_WIT_IN_COPY) && !lib.contains(SDK_WIT_IN_REPO));
        assert_eq!(std::fs::read_to_string(target.join(SDK_DIR).join("wit/plugin.wit")).unwrap(), PLUGIN_WIT);
    }

    #[test]
    fn the_starter_by_default_and_the_full_example_one_flag_away() {
        let dir = tempfile::tempdir().unwrap();
        let s = |example: Option<&str>, at: &str| Scaffold {
            name: "q".into(),
            lang: "rust".into(),
            example: example.map(str::to_owned),
            dir: dir.path().join(at),
            sdk: None,
        };
        let lib = |at: &str| std::fs::read_to_string(dir.path().join(at).join("src/lib.rs")).unwrap();
        scaffold(&s(None, "starter")).unwrap();
        assert!(lib("starter").contains("required_header") && !lib("starter").contains("kv::"));
        scaffold(&s(Some("tally"), "full")).unwrap();
        assert!(lib("full").contains("kv::"), "the tally example counts in kv");
        let err = scaffold(&s(Some("nope"), "none")).unwrap_err().to_string();
        assert!(err.contains("no example `nope`") && err.contains("starter, tally"), "{err}");
    }

    #[test]
    fn sdk_must_name_the_sdk() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
        let s = |sdk: PathBuf| Scaffold {
            name: "q".into(),
            lang: "rust".into(),
            example: None,
            dir: dir.path().join("q"),
            sdk: Some(sdk),
        };
        let err = scaffold(&s(root.clone())).unwrap_err().to_string();
        assert!(err.contains("is not the Rust plugin SDK"), "{err}");
        scaffold(&s(root.join("plugin-sdk"))).unwrap();
    }
}
