//! `Gateway`: builds a snapshot from config, binds the listeners, serves until told to
//! stop, and swaps in new snapshots on reload.
//!
//! The lifecycle: `Gateway::builder().config_file(path)?.start().await?` builds the
//! first snapshot and binds every listener; [`Gateway::reload`] (called by the file
//! watcher, SIGHUP and the admin API) builds a complete new snapshot off the hot path
//! and swaps it in only if every step succeeded; [`Gateway::shutdown`] drains.
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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{self, ConfigError, LoadedConfig, Name};
use crate::plugins::LoadOptions;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::workers::Workers;

/// Why a gateway could not start, or a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config has problems.
    #[error("invalid config:\n{0}")]
    Config(#[from] ConfigError),
    /// The worker threads could not be started.
    #[error("cannot start the worker threads: {0}")]
    Workers(#[source] std::io::Error),
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

/// Where the config comes from, so a reload can read it again.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file on disk (re-read on reload).
    File(PathBuf),
    /// Config text given directly (tests); a reload re-parses the same text.
    Inline(String),
    /// The embedded quick-start config.
    Quickstart,
}

impl ConfigSource {
    /// Reads and parses the config.
    pub fn load(&self) -> Result<LoadedConfig, ConfigError> {
        match self {
            Self::File(p) => config::load_file(p),
            Self::Inline(text) => config::parse_str("<inline config>", text, PathBuf::from(".")),
            Self::Quickstart => Ok(config::quickstart()),
        }
    }

    /// The config file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::File(p) => Some(p),
            _ => None,
        }
    }
}

/// Builds a [`Gateway`].
#[derive(Debug, Default)]
pub struct GatewayBuilder {
    config: Option<LoadedConfig>,
    source: Option<ConfigSource>,
    load_options: LoadOptions,
    workers: Option<usize>,
}

impl GatewayBuilder {
    /// Uses an already loaded config (reloads re-read `source` if one is set).
    pub fn config(mut self, config: LoadedConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Parses YAML config text; relative paths resolve against the current directory.
    pub fn config_yaml(mut self, yaml: &str) -> Result<Self, ConfigError> {
        let source = ConfigSource::Inline(yaml.to_owned());
        self.config = Some(source.load()?);
        self.source = Some(source);
        Ok(self)
    }

    /// Loads a config file; reloads read it again.
    pub fn config_file(mut self, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let source = ConfigSource::File(path.as_ref().to_owned());
        self.config = Some(source.load()?);
        self.source = Some(source);
        Ok(self)
    }

    /// How plugins see the world in every generation this gateway builds: by default
    /// the real clock and the configured `plugins.kv` store. The offline plugin
    /// harness (`sluice plugin test`) fixes the clock and gives the run its own store.
    pub fn load_options(mut self, options: LoadOptions) -> Self {
        self.load_options = options;
        self
    }

    /// Serves the listeners on `n` worker threads, each with its own single-threaded
    /// runtime and its own `SO_REUSEPORT` copy of every listener's socket (see
    /// [`crate::workers`]). Without this, listeners are served on the runtime that
    /// calls [`GatewayBuilder::start`].
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// Builds the first snapshot, binds every listener and starts serving.
    pub async fn start(self) -> Result<Gateway, StartError> {
        let source = self.source.unwrap_or(ConfigSource::Quickstart);
        let loaded = match self.config {
            Some(c) => c,
            None => source.load()?,
        };
        let load_options = self.load_options;
        let workers = match self.workers {
            Some(n) => Some(Workers::start(n).map_err(StartError::Workers)?),
            None => None,
        };
        let snapshot = build_off_thread(loaded, 1, load_options.clone()).await?;
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            cell: Arc::new(ArcSwap::from_pointee(snapshot)),
            source,
            listeners: tokio::sync::Mutex::new(HashMap::new()),
            addrs: RwLock::new(HashMap::new()),
            status: Mutex::new(ReloadStatus { generation: 1, ..ReloadStatus::default() }),
            shutdown,
            admin: Mutex::new(None),
            load_options,
            workers,
        });
        let gw = Gateway { inner };
        let snapshot = gw.inner.cell.load_full();
        {
            let mut running = gw.inner.listeners.lock().await;
            let opened = gw.open_listeners(&snapshot, &running).await?;
            for (name, l) in opened {
                running.insert(name, l);
            }
            gw.publish_addrs(&running);
        }
        for up in snapshot.upstreams.values() {
            up.start_health_checks();
        }
        tokio::spawn(housekeeping(Arc::downgrade(&gw.inner)));
        if let Some(admin) = &snapshot.config.config.admin {
            let address = admin.address.map(|a| a.0).unwrap_or_else(|| {
                config::DEFAULT_ADMIN_ADDRESS.parse().expect("the default admin address parses")
            });
            let tcp = TcpListener::bind(address).await.map_err(|source| StartError::Bind {
                listener: "admin".to_owned(),
                address,
                source,
            })?;
            let local = tcp.local_addr().unwrap_or(address);
            info!(address = %local, dashboard = %format!("http://{local}/"), "admin listener");
            gw.inner.addrs.write().expect("addrs lock").insert(ADMIN_LISTENER.to_owned(), local);
            let task = tokio::spawn(crate::observability::admin::serve(
                tcp,
                gw.clone(),
                gw.inner.shutdown.subscribe(),
            ));
            *gw.inner.admin.lock().expect("admin lock") = Some(task);
        }
        Ok(gw)
    }
}

/// The name under which [`Gateway::addr`] reports the admin listener.
pub const ADMIN_LISTENER: &str = "admin";

/// A running gateway. Cheap to clone; clones control the same gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cell: Arc<SnapshotCell>,
    source: ConfigSource,
    /// Running proxy listeners. The lock also serializes reloads.
    listeners: tokio::sync::Mutex<HashMap<Name, RunningListener>>,
    addrs: RwLock<HashMap<String, SocketAddr>>,
    status: Mutex<ReloadStatus>,
    shutdown: watch::Sender<bool>,
    admin: Mutex<Option<JoinHandle<()>>>,
    load_options: LoadOptions,
    /// The worker threads serving the listeners, when there are any.
    workers: Option<Workers>,
}

#[derive(Debug)]
struct RunningListener {
    configured: SocketAddr,
    local: SocketAddr,
    stop: watch::Sender<bool>,
    /// One accept loop per worker (one in all without workers).
    tasks: Vec<JoinHandle<()>>,
}

/// What the last reloads did, for logs, metrics and the admin API.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// Generation of the snapshot serving now.
    pub generation: u64,
    /// Successful reloads since start.
    pub reloads_total: u64,
    /// Failed reloads since start.
    pub failures_total: u64,
    /// When the last reload succeeded (kept apart: it may be older than the history).
    pub last_success: Option<SystemTime>,
    /// The last [`RELOAD_HISTORY`] attempts, oldest first.
    pub history: std::collections::VecDeque<ReloadAttempt>,
}

/// Reload attempts kept in [`ReloadStatus::history`].
pub const RELOAD_HISTORY: usize = 20;

/// One reload attempt.
#[derive(Debug, Clone)]
pub struct ReloadAttempt {
    /// When it was attempted.
    pub at: SystemTime,
    /// The generation it made, or `None` when it failed.
    pub generation: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl ReloadStatus {
    /// The last attempt's failure message (`None` once a reload succeeded since).
    pub fn last_error(&self) -> Option<&str> {
        self.history.back().and_then(|a| a.error.as_deref())
    }

    /// When the last reload was attempted.
    pub fn last_attempt(&self) -> Option<SystemTime> {
        self.history.back().map(|a| a.at)
    }

    fn succeeded(&mut self, generation: u64) {
        self.generation = generation;
        self.reloads_total += 1;
        let at = SystemTime::now();
        self.last_success = Some(at);
        self.remember(ReloadAttempt { at, generation: Some(generation), error: None });
    }

    fn failed(&mut self, message: &str) {
        self.failures_total += 1;
        self.remember(ReloadAttempt {
            at: SystemTime::now(),
            generation: None,
            error: Some(message.to_owned()),
        });
    }

    fn remember(&mut self, attempt: ReloadAttempt) {
        if self.history.len() == RELOAD_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(attempt);
    }
}

impl Gateway {
    /// Starts building a gateway.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The bound address of listener `name` (useful when the config says port 0);
    /// [`ADMIN_LISTENER`] names the admin listener.
    ///
    /// # Panics
    /// If there is no such listener.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.try_addr(listener).unwrap_or_else(|| panic!("no listener named `{listener}`"))
    }

    /// The bound address of listener `name`, if it is open.
    pub fn try_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.inner.addrs.read().expect("addrs lock").get(listener).copied()
    }

    /// Bound addresses of all listeners by name.
    pub fn addrs(&self) -> HashMap<String, SocketAddr> {
        self.inner.addrs.read().expect("addrs lock").clone()
    }

    /// The snapshot currently serving.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.cell.load_full()
    }

    /// Where the config comes from.
    pub fn source(&self) -> &ConfigSource {
        &self.inner.source
    }

    /// The reload bookkeeping.
    pub fn reload_status(&self) -> ReloadStatus {
        self.inner.status.lock().expect("status lock").clone()
    }

    /// Reads the config source again and reloads it (file watcher, SIGHUP, admin API).
    pub async fn reload_from_source(&self) -> Result<u64, StartError> {
        match self.inner.source.load() {
            Ok(loaded) => self.reload(loaded).await,
            Err(e) => {
                self.record_failure(&e.to_string());
                Err(e.into())
            }
        }
    }

    /// Builds a snapshot from `config` and, only if that fully succeeds (every problem
    /// checked, every new listener bound), swaps it in. In-flight requests finish on the
    /// snapshot they started with; listeners that left the config drain and close.
    /// Returns the new generation.
    pub async fn reload(&self, config: LoadedConfig) -> Result<u64, StartError> {
        let mut running = self.inner.listeners.lock().await;
        let generation = self.inner.cell.load().generation + 1;
        let snapshot = match build_off_thread(config, generation, self.inner.load_options.clone()).await {
            Ok(s) => s,
            Err(e) => {
                self.record_failure(&e.to_string());
                return Err(e.into());
            }
        };
        let opened = match self.open_listeners(&snapshot, &running).await {
            Ok(o) => o,
            Err(e) => {
                self.record_failure(&e.to_string());
                return Err(e);
            }
        };
        for up in snapshot.upstreams.values() {
            up.start_health_checks();
        }
        let snapshot = Arc::new(snapshot);
        self.inner.cell.store(Arc::clone(&snapshot));

        // Close listeners that left the config or moved to another address.
        let keep: HashMap<&Name, SocketAddr> =
            snapshot.listeners.iter().map(|l| (&l.name, l.address)).collect();
        let gone: Vec<Name> = running
            .iter()
            .filter(|(name, l)| {
                keep.get(name) != Some(&l.configured) || opened.iter().any(|(n, _)| n == *name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(l) = running.remove(&name) {
                info!(listener = %name, address = %l.local, "closing listener");
                let _ = l.stop.send(true);
                drop(l.tasks);
            }
        }
        for (name, l) in opened {
            running.insert(name, l);
        }
        self.publish_addrs(&running);
        self.inner.status.lock().expect("status lock").succeeded(generation);
        info!(generation, "config reloaded");
        Ok(generation)
    }

    fn record_failure(&self, message: &str) {
        warn!(error = %message, "reload failed; the previous config keeps serving");
        self.inner.status.lock().expect("status lock").failed(message);
    }

    /// Binds the listeners of `snapshot` that are not running yet (or moved).
    async fn open_listeners(
        &self,
        snapshot: &Snapshot,
        running: &HashMap<Name, RunningListener>,
    ) -> Result<Vec<(Name, RunningListener)>, StartError> {
        let mut opened = Vec::new();
        for spec in &snapshot.listeners {
            if running.get(&spec.name).is_some_and(|l| l.configured == spec.address) {
                continue;
            }
            let bind_err =
                |source| StartError::Bind { listener: spec.name.to_string(), address: spec.address, source };
            // On error, listeners opened so far are dropped (their tasks never start).
            let copies = self.inner.workers.as_ref().map_or(1, Workers::len);
            let sockets =
                crate::listener::bind(spec.address, spec.limits.max_connections, copies).map_err(bind_err)?;
            let local = sockets[0].local_addr().map_err(bind_err)?;
            let slots = Arc::new(tokio::sync::Semaphore::new(spec.limits.max_connections));
            opened.push((spec.name.clone(), sockets, slots, local, spec.address));
        }
        Ok(opened
            .into_iter()
            .map(|(name, sockets, slots, local, configured)| {
                info!(listener = %name, address = %local, "listening");
                let (stop, stopped) = watch::channel(false);
                let mut global = self.inner.shutdown.subscribe();
                let mut own = stop.subscribe();
                let relay = stop.clone();
                tokio::spawn(async move {
                    // Forward a gateway-wide shutdown to this listener; end with it.
                    tokio::select! {
                        r = global.wait_for(|v| *v) => if r.is_ok() { let _ = relay.send(true); },
                        _ = own.wait_for(|v| *v) => {}
                    }
                });
                let tasks = sockets
                    .into_iter()
                    .enumerate()
                    .map(|(k, tcp)| {
                        let accept = crate::listener::serve(
                            tcp,
                            name.clone(),
                            Arc::clone(&self.inner.cell),
                            Arc::clone(&slots),
                            stopped.clone(),
                        );
                        match &self.inner.workers {
                            Some(w) => w.handles()[k].spawn(accept),
                            None => tokio::spawn(accept),
                        }
                    })
                    .collect();
                (name, RunningListener { configured, local, stop, tasks })
            })
            .collect())
    }

    fn publish_addrs(&self, running: &HashMap<Name, RunningListener>) {
        let mut addrs = self.inner.addrs.write().expect("addrs lock");
        addrs.retain(|k, _| k == ADMIN_LISTENER);
        for (name, l) in running {
            addrs.insert(name.to_string(), l.local);
        }
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, then
    /// closes what is left.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = {
            let mut running = self.inner.listeners.lock().await;
            running.drain().flat_map(|(_, l)| l.tasks).collect()
        };
        for t in tasks {
            let _ = t.await;
        }
        let admin = self.inner.admin.lock().expect("admin lock").take();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        self.inner.addrs.write().expect("addrs lock").clear();
    }

    /// Serves until SIGINT or SIGTERM (reloading on SIGHUP), then shuts down gracefully.
    /// Install [`Signals`] before starting the gateway so no signal is missed.
    pub async fn run_until_signal(&self, signals: Signals) {
        wait_for_stop_signal(self, signals).await;
        info!(grace = ?self.inner.cell.load().grace_period(), "shutting down");
        self.shutdown().await;
    }
}

/// Builds a snapshot on the blocking pool: compiling plugins and loading certificates
/// must not stall the threads serving requests.
/// How often the current snapshot's plugin pools are swept (each pool acts on its
/// own `limits.idle_timeout`).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Gives back the plugin instances a burst left idle, and the memory parked
/// connections freed (`crate::trim`), until the gateway is shut down or dropped.
async fn housekeeping(gw: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = gw.upgrade() else { return };
        if *inner.shutdown.borrow() {
            return;
        }
        let snapshot = inner.cell.load_full();
        drop(inner);
        let now = std::time::Instant::now();
        for pool in snapshot.plugin_pools() {
            pool.sweep(now);
        }
        crate::trim::trim_if_due();
        // What this thread freed (a reload's old snapshot, say).
        crate::trim::give_back_thread_memory();
    }
}

async fn build_off_thread(
    config: LoadedConfig,
    generation: u64,
    options: LoadOptions,
) -> Result<Snapshot, ConfigError> {
    match tokio::task::spawn_blocking(move || Snapshot::build_with(config, generation, &options)).await {
        Ok(r) => r,
        Err(e) => Err(ConfigError::whole_file("<snapshot build>", format!("snapshot build panicked: {e}"))),
    }
}

/// Signal handlers, installed before the gateway starts serving so that a SIGTERM or
/// SIGHUP arriving during startup is handled rather than killing the process.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (needs a running tokio runtime).
    pub fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals { term: signal(SignalKind::terminate())?, hup: signal(SignalKind::hangup())? })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }
}

#[cfg(unix)]
async fn wait_for_stop_signal(gw: &Gateway, signals: Signals) {
    let Signals { mut term, mut hup } = signals;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {
                info!("SIGHUP: reloading the config");
                let _ = gw.reload_from_source().await;
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_stop_signal(_gw: &Gateway, _signals: Signals) {
    let _ = tokio::signal::ctrl_c().await;
}
