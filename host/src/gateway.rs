//! `Gateway`: builds a snapshot from config, binds the listeners, serves until told to
//! stop, and swaps in new snapshots on reload.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let gw = sluice::Gateway::builder().config_yaml("version: 1\nlisteners: []\nroutes: []")?.start().await?;
//! let addr = gw.addr("public");
//! gw.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::info;

use crate::config::{self, ConfigError, LoadedConfig};
use crate::snapshot::{Snapshot, SnapshotCell};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config has problems.
    #[error("invalid config:\n{0}")]
    Config(#[from] ConfigError),
    /// A listener's address could not be bound.
    #[error("listener {listener} cannot bind {address}: {source}")]
    Bind {
        /// Listener name.
        listener: String,
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Builds a [`Gateway`].
#[derive(Debug, Default)]
pub struct GatewayBuilder {
    config: Option<LoadedConfig>,
}

impl GatewayBuilder {
    /// Uses an already loaded config.
    pub fn config(mut self, config: LoadedConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Parses YAML config text; relative paths resolve against the current directory.
    pub fn config_yaml(self, yaml: &str) -> Result<Self, ConfigError> {
        let loaded = config::parse_str("<inline config>", yaml, PathBuf::from("."))?;
        Ok(self.config(loaded))
    }

    /// Loads a config file.
    pub fn config_file(self, path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        Ok(self.config(config::load_file(path.as_ref())?))
    }

    /// Builds the first snapshot, binds every listener and starts serving.
    pub async fn start(self) -> Result<Gateway, StartError> {
        let loaded = self.config.unwrap_or_else(config::quickstart);
        let snapshot = Snapshot::build(loaded, 1)?;
        let cell = Arc::new(ArcSwap::from_pointee(snapshot));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut addrs = HashMap::new();
        let specs = cell.load().listeners.clone();
        let mut bound = Vec::new();
        for spec in &specs {
            let tcp = TcpListener::bind(spec.address).await.map_err(|source| StartError::Bind {
                listener: spec.name.to_string(),
                address: spec.address,
                source,
            })?;
            let local = tcp.local_addr().map_err(|source| StartError::Bind {
                listener: spec.name.to_string(),
                address: spec.address,
                source,
            })?;
            addrs.insert(spec.name.to_string(), local);
            bound.push((tcp, spec.name.clone(), local, spec.tls.is_some()));
        }
        for (tcp, name, local, tls) in bound {
            info!(listener = %name, address = %local, tls, "listening");
            tasks.spawn(crate::listener::serve(tcp, name, Arc::clone(&cell), shutdown_rx.clone()));
        }
        for up in cell.load().upstreams.values() {
            up.start_health_checks();
        }
        Ok(Gateway { cell, addrs, shutdown: shutdown_tx, tasks, generation: AtomicU64::new(1) })
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    cell: Arc<SnapshotCell>,
    addrs: HashMap<String, SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    generation: AtomicU64,
}

impl Gateway {
    /// Starts building a gateway.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The bound address of listener `name` (useful when the config says port 0).
    ///
    /// # Panics
    /// If there is no such listener.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self.addrs.get(listener).unwrap_or_else(|| panic!("no listener named `{listener}`"))
    }

    /// Bound addresses of all listeners by name.
    pub fn addrs(&self) -> &HashMap<String, SocketAddr> {
        &self.addrs
    }

    /// The snapshot currently serving.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.cell.load_full()
    }

    /// Builds a snapshot from `config` and, only if that fully succeeds, swaps it in.
    /// In-flight requests finish on the snapshot they started with. Returns the new
    /// generation.
    pub fn reload(&self, config: LoadedConfig) -> Result<u64, ConfigError> {
        let generation = self.generation.load(Ordering::Acquire) + 1;
        let snapshot = Snapshot::build(config, generation)?;
        for up in snapshot.upstreams.values() {
            up.start_health_checks();
        }
        self.cell.store(Arc::new(snapshot));
        self.generation.store(generation, Ordering::Release);
        info!(generation, "config reloaded");
        Ok(generation)
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, then
    /// closes what is left.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        info!(grace = ?self.cell.load().grace_period(), "shutting down");
        self.shutdown().await;
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
