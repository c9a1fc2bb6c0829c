//! Hot reload: watch the config file, debounce bursts, wait until the file is stable,
//! then ask the gateway to build and swap a new snapshot.
//!
//! Reloads also come from SIGHUP ([`crate::Gateway::run_until_signal`]) and the admin
//! API (`POST /-/reload`). Whatever triggers it, a reload either fully succeeds or
//! changes nothing live: the error is logged, counted and shown on the admin API.
//!
//! What the watcher copes with:
//! - editors that write a temp file and rename it over the config (the directory is
//!   watched, not the file, so the new inode is seen);
//! - partial writes: after events stop for [`DEBOUNCE`], the file is read twice
//!   [`STABLE_FOR`] apart and only loaded when both reads agree;
//! - Kubernetes ConfigMap updates, which swap a `..data` symlink in the same directory;
//! - events that do not change the content (a `touch`, another file in the directory):
//!   the content hash is compared with the last one loaded;
//! - the plugins folder: it is watched too — the one the serving config names, followed
//!   when a reload names another or the folder appears after the start — and its
//!   `*.wasm` files are part of the content hash (see
//!   [`fingerprint`](crate::plugins::registry::fingerprint): links are followed, so a
//!   ConfigMap-mounted plugins folder works like the config), so dropping in a new or
//!   changed component reloads like a config edit.

mod watch;

pub use watch::{DEBOUNCE, STABLE_FOR, WatchHandle, watch_config};
