//! The config file watcher.
//!
//! It watches the config's folder, the plugins folder and the folders of the files
//! plugin configs reference (`$file`, see `config::files`), but only some events
//! count: those on the config file, on a Kubernetes ConfigMap's `..data` link (an
//! update swaps it), on the plugins folder itself, on `*.wasm` files (or `..data`) in
//! it, and on the referenced files.
//! Anything else written there — a log file, an editor's swap file — neither starts
//! nor prolongs the debounce, so it cannot delay or block a reload.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::Gateway;

/// Quiet time after the last file event before a reload is attempted.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// The file must read the same twice this far apart to count as completely written.
pub const STABLE_FOR: Duration = Duration::from_millis(100);

/// Keeps the watcher alive; dropping it stops watching.
#[derive(Debug)]
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `path` (through its directory) and reloads `gateway` when its content
/// changes.
pub fn watch_config(gateway: Gateway, path: &Path) -> notify::Result<WatchHandle> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let dir = path.parent().map(Path::to_owned).unwrap_or_else(|| PathBuf::from("."));
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(e) if !e.kind.is_access() => {
                let _ = tx.send(e.paths);
            }
            Ok(_) => {}
            // The kernel's queue overflowed (or similar): events were lost, so look.
            Err(_) => {
                let _ = tx.send(Vec::new());
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    // The plugins folder too: a changed or new `NAME.wasm` reloads like a config edit.
    info!(config = %path.display(), "watching the config file for changes");
    // (It says so itself when it watches the plugins folder.)
    let mut plugins = PluginsWatch { watcher, config_dir: dir, watched: None, file_dirs: Vec::new() };
    plugins.follow(&gateway);
    let initial = content_hash(&path);
    let task = tokio::spawn(reload_loop(gateway, path.clone(), rx, initial, plugins));
    Ok(WatchHandle { task })
}

/// The watcher, and which plugins folder it watches besides the config's folder.
struct PluginsWatch {
    watcher: notify::RecommendedWatcher,
    config_dir: PathBuf,
    /// The folder watched, and its identity (a folder deleted and created again is
    /// another one, which must be watched afresh).
    watched: Option<(PathBuf, Option<(u64, u64)>)>,
    /// Folders of referenced files watched besides the config's folder.
    file_dirs: Vec<PathBuf>,
}

impl PluginsWatch {
    /// Watches the plugins folder of the config serving now, if that is not the folder
    /// watched already: the config may have named another one since, or the folder may
    /// not have existed before (created after the start, or deleted and created again).
    /// True when it starts watching a folder: changes made before that sent no event.
    fn follow(&mut self, gateway: &Gateway) -> bool {
        self.follow_files(gateway);
        let dir = plugins_dir_now(gateway);
        let want = (dir != self.config_dir && dir.is_dir()).then(|| {
            let id = dir_identity(&dir);
            (dir, id)
        });
        if want == self.watched {
            return false;
        }
        if let Some((old, _)) = self.watched.take() {
            let _ = self.watcher.unwatch(&old);
        }
        if let Some((dir, id)) = want {
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    info!(plugins = %dir.display(), "watching the plugins folder (*.wasm) for changes");
                    self.watched = Some((dir, id));
                    return true;
                }
                Err(e) => warn!(plugins = %dir.display(), error = %e, "cannot watch the plugins folder"),
            }
        }
        false
    }
}

impl PluginsWatch {
    /// Watches the folders of the files the serving config references (those not
    /// watched already), and stops watching folders no longer needed.
    fn follow_files(&mut self, gateway: &Gateway) {
        let mut want: Vec<PathBuf> = files_now(gateway)
            .iter()
            .filter_map(|f| f.parent().map(Path::to_owned))
            .filter(|d| *d != self.config_dir)
            .collect();
        want.sort();
        want.dedup();
        for old in self.file_dirs.iter().filter(|d| !want.contains(d)) {
            let _ = self.watcher.unwatch(old);
        }
        for dir in want.iter().filter(|d| !self.file_dirs.contains(d)) {
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => info!(folder = %dir.display(), "watching files referenced by plugin configs"),
                Err(e) => {
                    warn!(folder = %dir.display(), error = %e, "cannot watch a referenced file's folder")
                }
            }
        }
        self.file_dirs = want;
    }
}

/// The files referenced by the config serving now (`$file`), as absolute paths.
fn files_now(gateway: &Gateway) -> Vec<PathBuf> {
    gateway
        .snapshot()
        .config
        .files
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        .collect()
}

/// The plugins folder of the config serving now, as an absolute path.
fn plugins_dir_now(gateway: &Gateway) -> PathBuf {
    let dir = crate::plugins::registry::plugins_dir(&gateway.snapshot().config);
    std::path::absolute(&dir).unwrap_or(dir)
}

#[cfg(unix)]
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn dir_identity(_dir: &Path) -> Option<(u64, u64)> {
    None
}

fn content_hash(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    // Plugins live beside the config: their folder's state is part of "the content".
    if let Ok(text) = std::str::from_utf8(&bytes)
        && let Ok(loaded) =
            crate::config::parse_str("", text, path.parent().map(Path::to_owned).unwrap_or_default())
    {
        crate::plugins::registry::fingerprint(&crate::plugins::registry::plugins_dir(&loaded)).hash(&mut h);
        // And so are the files its plugin configs reference.
        for file in &loaded.files {
            std::fs::read(file).ok().hash(&mut h);
        }
    }
    Some(h.finish())
}

/// Whether an event on `paths` can change what the gateway serves (see the module
/// docs). An event without paths (lost events) counts.
fn counts(paths: &[PathBuf], config: &Path, plugins_dir: &Path, files: &[PathBuf]) -> bool {
    let config_dir = config.parent();
    paths.is_empty()
        || paths.iter().any(|p| {
            let (parent, name) = (p.parent(), p.file_name());
            let named = |n: &str| name.is_some_and(|x| x == n);
            p == config
                || files.contains(p)
                || p == plugins_dir
                || (parent == config_dir && named("..data"))
                || (parent == Some(plugins_dir)
                    && (named("..data") || p.extension().is_some_and(|e| e == "wasm")))
        })
}

/// The next event that counts; `None` when the watcher is gone.
async fn next_counted(
    events: &mut mpsc::UnboundedReceiver<Vec<PathBuf>>,
    gateway: &Gateway,
    config: &Path,
) -> Option<()> {
    loop {
        let paths = events.recv().await?;
        if counts(&paths, config, &plugins_dir_now(gateway), &files_now(gateway)) {
            return Some(());
        }
    }
}

async fn reload_loop(
    gateway: Gateway,
    path: PathBuf,
    mut events: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    mut last: Option<u64>,
    mut plugins: PluginsWatch,
) {
    while next_counted(&mut events, &gateway, &path).await.is_some() {
        loop {
            // Debounce: wait for a quiet period of the events that count.
            loop {
                match tokio::time::timeout(DEBOUNCE, next_counted(&mut events, &gateway, &path)).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            // Stability: two reads apart must agree, or a writer is still busy.
            let first = content_hash(&path);
            tokio::time::sleep(STABLE_FOR).await;
            if content_hash(&path) == first {
                break;
            }
            debug!(config = %path.display(), "config file still changing; waiting");
        }
        reload_if_changed(&gateway, &path, &mut last).await;
        if plugins.follow(&gateway) {
            // A component dropped in before the folder was watched sent no event.
            reload_if_changed(&gateway, &path, &mut last).await;
        }
    }
}

async fn reload_if_changed(gateway: &Gateway, path: &Path, last: &mut Option<u64>) {
    let now = content_hash(path);
    if now.is_none() {
        // Deleted, or mid-swap: keep serving; the next event brings it back.
        warn!(config = %path.display(), "config file is missing; the previous config keeps serving");
        return;
    }
    if now == *last {
        return;
    }
    *last = now;
    match gateway.reload_from_source().await {
        Ok(generation) => info!(generation, config = %path.display(), "reloaded after a file change"),
        // The gateway logged the failure with every problem; once is enough.
        Err(e) => debug!(config = %path.display(), error = %e, "config change rejected"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::counts;

    #[test]
    fn only_the_config_its_configmap_link_and_plugin_components_count() {
        let config = Path::new("/etc/sluice/sluice.yaml");
        let plugins = Path::new("/etc/sluice/plugins");
        let files = [PathBuf::from("/etc/specs/petstore.yaml")];
        let yes = |p: &str| counts(&[PathBuf::from(p)], config, plugins, &files);
        assert!(yes("/etc/specs/petstore.yaml"), "a file a plugin config references");
        assert!(!yes("/etc/specs/other.yaml"));
        assert!(yes("/etc/sluice/sluice.yaml"));
        assert!(yes("/etc/sluice/..data"));
        assert!(yes("/etc/sluice/plugins"));
        assert!(yes("/etc/sluice/plugins/auth.wasm"));
        assert!(yes("/etc/sluice/plugins/..data"));
        assert!(!yes("/etc/sluice/access.log"));
        assert!(!yes("/etc/sluice/.sluice.yaml.swp"));
        assert!(!yes("/etc/sluice/..data_tmp"));
        assert!(!yes("/etc/sluice/plugins/.auth.wasm.tmp"));
        assert!(!yes("/etc/sluice/plugins/notes.txt"));
        assert!(!yes("/etc/sluice/other/x.wasm"));
        // A rename names both ends: it counts if either does.
        let rename =
            [PathBuf::from("/etc/sluice/plugins/.a.tmp"), PathBuf::from("/etc/sluice/plugins/a.wasm")];
        assert!(counts(&rename, config, plugins, &files));
        // Lost events (a queue overflow) count: the loop then looks for itself.
        assert!(counts(&[], config, plugins, &files));
        // Plugins beside the config.
        assert!(counts(&[PathBuf::from("/etc/sluice/a.wasm")], config, Path::new("/etc/sluice"), &files));
    }
}
