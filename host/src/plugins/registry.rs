//! The plugin registry: every `NAME.wasm` in the plugins folder is the plugin `NAME`,
//! and every [built-in](super::builtin) plugin not shadowed by such a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The plugins folder of a config: `plugins.dir` resolved against the config's folder.
pub fn plugins_dir(loaded: &crate::config::LoadedConfig) -> PathBuf {
    loaded.resolve_path(loaded.config.plugins.dir.as_deref().unwrap_or(crate::config::DEFAULT_PLUGINS_DIR))
}

/// A fingerprint of the `*.wasm` files in `dir`, so a watcher can tell a plugin change
/// from an unrelated event. A missing folder has a fingerprint too.
///
/// Per file: its name and the metadata of what it points to — symlinks are followed,
/// as [`Registry::scan`] does, because a Kubernetes ConfigMap mounts every file as a
/// link into a `..data` folder that an update swaps, leaving the link itself as it
/// was. Size and modification time alone miss a same-size replacement whose
/// modification time was kept (`cp -p`, `rsync -a`, `tar x`), so the device, inode and
/// change time — which no tool can set back — are in it too.
pub fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut files: Vec<_> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
            .map(|e| {
                let meta = std::fs::metadata(e.path()).ok().map(|m| identity(&m));
                (e.file_name(), meta)
            })
            .collect();
        files.sort();
        files.hash(&mut h);
    }
    h.finish()
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone, Copy)]
pub enum PluginSource<'a> {
    /// A file in the plugins folder.
    File(&'a Path),
    /// A built-in plugin embedded in the binary.
    Builtin(&'static super::builtin::Builtin),
}

impl PluginSource<'_> {
    /// Capabilities the plugin may import without a grant (checked when called).
    pub fn optional_capabilities(&self) -> &'static [&'static str] {
        match self {
            PluginSource::File(_) => &[],
            PluginSource::Builtin(b) => b.optional,
        }
    }

    /// The component's bytes.
    pub fn read(&self) -> Result<std::borrow::Cow<'static, [u8]>, String> {
        match self {
            PluginSource::File(p) => {
                std::fs::read(p).map(Into::into).map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
            PluginSource::Builtin(b) => Ok(b.wasm.into()),
        }
    }
}

impl std::fmt::Display for PluginSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::File(p) => write!(f, "{}", p.display()),
            PluginSource::Builtin(b) => write!(f, "built-in plugin {}", b.name),
        }
    }
}

/// What [`fingerprint`] keeps of one file's metadata.
#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> impl std::hash::Hash + Ord + use<> {
    use std::os::unix::fs::MetadataExt;
    (m.len(), m.dev(), m.ino(), (m.mtime(), m.mtime_nsec()), (m.ctime(), m.ctime_nsec()))
}

/// What [`fingerprint`] keeps of one file's metadata.
#[cfg(not(unix))]
fn identity(m: &std::fs::Metadata) -> impl std::hash::Hash + Ord + use<> {
    (m.len(), m.modified().ok())
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

    /// The component of `name`: a file of the plugins folder, else a built-in.
    pub fn get(&self, name: &str) -> Option<PluginSource<'_>> {
        if let Some(p) = self.plugins.get(name) {
            return Some(PluginSource::File(p));
        }
        super::builtin::get(name).map(PluginSource::Builtin)
    }

    /// The folder scanned.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every plugin name, the built-ins included, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.plugins.keys().map(String::as_str).collect();
        for builtin in super::builtin::names() {
            names.push(builtin);
        }
        names.sort_unstable();
        names.dedup();
        names
    }
}
