//! The plugin registry: every `NAME.wasm` in the plugins folder is the plugin `NAME`.
//! (Built-in plugins join the registry here once they exist.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
