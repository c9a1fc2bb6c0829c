//! The config file watcher.

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
    _watcher: notify::RecommendedWatcher,
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
        if let Ok(e) = event
            && !e.kind.is_access()
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    // The plugins folder too: a changed or new `NAME.wasm` reloads like a config edit.
    let plugins = crate::plugins::registry::plugins_dir(&gateway.snapshot().config);
    if plugins.is_dir()
        && plugins != dir
        && let Err(e) = watcher.watch(&plugins, RecursiveMode::NonRecursive)
    {
        warn!(plugins = %plugins.display(), error = %e, "cannot watch the plugins folder");
    }
    let initial = content_hash(&path);
    let task = tokio::spawn(reload_loop(gateway, path.clone(), rx, initial));
    info!(config = %path.display(), "watching the config file for changes");
    Ok(WatchHandle { _watcher: watcher, task })
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
    }
    Some(h.finish())
}

async fn reload_loop(
    gateway: Gateway,
    path: PathBuf,
    mut events: mpsc::UnboundedReceiver<()>,
    mut last: Option<u64>,
) {
    while events.recv().await.is_some() {
        loop {
            // Debounce: wait for a quiet period.
            loop {
                match tokio::time::timeout(DEBOUNCE, events.recv()).await {
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
        Err(e) => warn!(config = %path.display(), error = %e, "config change rejected"),
    }
}
