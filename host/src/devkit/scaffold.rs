//! `sluice plugin new NAME --lang LANG`: writes a new plugin project from the example
//! of that language (`examples/plugins/tally/<lang>/`, embedded at build time), with
//! the WIT, a build script, and a test that runs the offline harness on fixtures.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// The name the templates use for the plugin: every occurrence becomes the new name.
const TEMPLATE_NAME: &str = "tally";

/// Where the Rust template finds the SDK, relative to the example project.
const TEMPLATE_SDK_PATH: &str = "path = \"../../../../plugin-sdk\"";

/// Where projects that keep a `wit/` folder have the host's WIT (the examples link
/// it to the repository's `wit/`; a scaffolded project gets a copy).
pub const WIT_DEPS_PATH: &str = "wit/deps/sluice-plugin/plugin.wit";

/// The languages `sluice plugin new` knows, in the order the help lists them.
pub fn languages() -> Vec<&'static str> {
    let mut langs: Vec<&str> = TEMPLATES.iter().map(|(l, _, _)| *l).collect();
    langs.dedup();
    langs
}

/// What to scaffold.
#[derive(Debug, Clone)]
pub struct Scaffold {
    /// The plugin's name: lowercase letters, digits and `-`, starting with a letter.
    pub name: String,
    /// The language (one of [`languages`]).
    pub lang: String,
    /// The folder to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// The SDK for Rust projects; default: the `plugin-sdk` of the source tree this
    /// binary was built from, when it still exists.
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
    let files: Vec<_> = TEMPLATES.iter().filter(|(l, _, _)| *l == s.lang).collect();
    if files.is_empty() {
        bail!("no template for `{}`: choose one of {}", s.lang, languages().join(", "));
    }
    if s.dir.exists() && std::fs::read_dir(&s.dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty", s.dir.display());
    }
    let sdk = if s.lang == "rust" { Some(sdk_path(s.sdk.as_deref())?) } else { None };
    let mut written = Vec::new();
    for (_, rel, contents) in files {
        let rel = PathBuf::from(rel.replace(TEMPLATE_NAME, &s.name));
        let contents = match std::str::from_utf8(contents) {
            Ok(text) => {
                let mut text = text.replace(TEMPLATE_NAME, &s.name);
                if let Some(sdk) = &sdk {
                    text =
                        text.replace(TEMPLATE_SDK_PATH, &format!("path = {:?}", sdk.display().to_string()));
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

/// The SDK a Rust project depends on, as an absolute path.
fn sdk_path(given: Option<&Path>) -> Result<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    let sdk = given.map(Path::to_path_buf).unwrap_or(built_from);
    if !sdk.join("Cargo.toml").is_file() {
        bail!(
            "the Rust plugin SDK is not at {}: pass `--sdk PATH` (the `plugin-sdk` folder of a Sluice checkout)",
            sdk.display()
        );
    }
    sdk.canonicalize().with_context(|| format!("cannot resolve {}", sdk.display()))
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
        for lang in ["rust", "python", "js", "c"] {
            assert!(langs.contains(&lang), "no `{lang}` template in {langs:?}");
            let files: Vec<&str> =
                TEMPLATES.iter().filter(|(l, _, _)| *l == lang).map(|(_, p, _)| *p).collect();
            for needed in ["build.sh", "test.sh", "README.md"] {
                assert!(files.contains(&needed), "the {lang} template has no {needed}: {files:?}");
            }
        }
    }

    #[test]
    fn scaffolding_renames_and_writes_the_wit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("p");
        let s = Scaffold { name: "team-quota".into(), lang: "python".into(), dir: target.clone(), sdk: None };
        let files = scaffold(&s).unwrap();
        assert!(files.contains(&PathBuf::from(WIT_DEPS_PATH)));
        let build = std::fs::read_to_string(target.join("build.sh")).unwrap();
        assert!(build.contains("team-quota.wasm") && !build.contains(TEMPLATE_NAME), "{build}");
        assert_eq!(std::fs::read_to_string(target.join(WIT_DEPS_PATH)).unwrap(), PLUGIN_WIT);
        assert!(scaffold(&s).is_err(), "an existing non-empty folder is refused");
    }
}
