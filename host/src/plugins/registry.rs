//! The plugin registry: every `NAME.wasm` in the plugins folder is the plugin `NAME`.
//! (Built-in plugins join the registry here once they exist.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The plugins folder of a config: `plugins.dir` resolved against the config's folder.
pub fn plugins_dir(loaded: &crate::config::LoadedConfig) -> PathBuf {
    loaded.resolve_path(loaded.config.plugins.dir.as_deref().unwrap_or(crate::config::DEFAULT_PLUGINS_DIR))
}

/// A fingerprint of the `*.wasm` files in `dir` (names, sizes, modification times), so
/// a watcher can tell a plugin change from an unrelated event. A missing folder has a
/// fingerprint too.
pub fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut files: Vec<_> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((e.file_name(), m.len(), m.modified().ok()))
            })
            .collect();
        files.sort();
        files.hash(&mut h);
    }
    h.finish()
}

/// Plugins available to a config generation, by name.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    dir: PathBuf,
    plugins: BTreeMap<String, PathBuf>,
}

impl Registry {
    /// Scans `dir`. A missing folder holds no plugins; an unreadable one is an error.
    pub fn scan(dir: &Path) -> Result<Registry, String> {
        let mut plugins = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Registry { dir: dir.to_owned(), plugins });
            }
            Err(e) => return Err(format!("cannot read the plugins folder {}: {e}", dir.display())),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "wasm")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                && !stem.starts_with('.')
                && path.is_file()
            {
                plugins.insert(stem.to_owned(), path);
            }
        }
        Ok(Registry { dir: dir.to_owned(), plugins })
    }

    /// The component file of `name`.
    pub fn get(&self, name: &str) -> Option<&Path> {
        self.plugins.get(name).map(PathBuf::as_path)
    }

    /// The folder scanned.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every plugin name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }
}
