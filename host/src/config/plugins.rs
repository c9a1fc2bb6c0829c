//! Plugin settings of the config: where plugins are found, the global chain, and the
//! per-route plugin entries with their config, error policy, grants and limits.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::kv::KvConfig;
use super::types::{ByteSize, ConfigDuration, Name};

/// Default plugins folder, relative to the config file's directory.
pub const DEFAULT_PLUGINS_DIR: &str = "plugins";
/// Default time one plugin call may run before it is stopped.
pub const DEFAULT_PLUGIN_DEADLINE: ConfigDuration = ConfigDuration::millis(100);
/// Default time `configure` may run when a config is loaded.
pub const DEFAULT_PLUGIN_CONFIGURE_DEADLINE: ConfigDuration = ConfigDuration::secs(10);
/// Default cap on one plugin instance's linear memory.
pub const DEFAULT_PLUGIN_MEMORY: ByteSize = ByteSize::mib(32);
/// Largest memory cap a plugin can be given (the engine's per-memory reservation).
pub const MAX_PLUGIN_MEMORY: ByteSize = ByteSize::mib(256);
/// Default cap on a body buffered for plugins that declared a body phase.
pub const DEFAULT_PLUGIN_MAX_BODY: ByteSize = ByteSize::mib(10);
/// Default cap on the instances of one plugin entry, idle and in use.
pub const DEFAULT_PLUGIN_MAX_INSTANCES: usize = 1000;
/// Default number of instances made at load and kept however quiet the entry is.
pub const DEFAULT_PLUGIN_WARM: usize = 1;
/// Default time idle instances beyond `warm` may go unneeded before they are dropped.
pub const DEFAULT_PLUGIN_IDLE_TIMEOUT: ConfigDuration = ConfigDuration::secs(60);
/// Default timeout of an outbound HTTP call made by a plugin.
pub const DEFAULT_PLUGIN_HTTP_TIMEOUT: ConfigDuration = ConfigDuration::secs(5);

/// Where plugins come from, and the chain every route runs.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Folder of plugin components: every `NAME.wasm` in it is the plugin `NAME`.
    /// Relative paths are resolved against the config file's directory. Default
    /// `plugins`; a missing folder simply holds no plugins.
    #[serde(default)]
    pub dir: Option<String>,
    /// Folder for compiled plugin code, keyed by content hash, so restarts skip
    /// compilation. Default `$XDG_CACHE_HOME/sluice` (or `~/.cache/sluice`); `""`
    /// turns the disk cache off. It keeps at most 512 MiB, removing the least
    /// recently used artifacts first.
    #[serde(default)]
    pub cache_dir: Option<String>,
    /// Plugins run on every route, before the route's own plugins in the request
    /// phase (and after them in the response phase).
    #[serde(default)]
    pub global: Vec<PluginRefConfig>,
    /// The store behind the plugin `kv` API: in-process (default) or Redis.
    #[serde(default)]
    pub kv: KvConfig,
}

/// One plugin in a chain.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginRefConfig {
    /// The plugin's name: the file stem of a component in the plugins folder.
    pub name: Name,
    /// The plugin's own settings, any YAML. Passed to the plugin's `configure` as
    /// JSON (`{}` when absent) once per instance when the config is loaded; a
    /// plugin that rejects it rejects the whole config. Anywhere inside it,
    /// `{ $file: PATH }` is replaced by that file's content (relative to the config's
    /// folder; YAML, JSON, or else text), and editing the file reloads the config.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// What a failing plugin (trap, deadline, memory cap, bad return, no instance
    /// free) does to the request: `fail_closed` (default) answers `500` (`503` for
    /// a deadline or `plugin_busy`) with a JSON error; `fail_open` skips the plugin
    /// and goes on.
    #[serde(default)]
    pub on_error: OnErrorConfig,
    /// Capabilities the plugin may import. A component that imports an ungranted
    /// capability is refused at load.
    #[serde(default)]
    pub grants: GrantsConfig,
    /// Resource limits of each call and instance.
    #[serde(default)]
    pub limits: PluginLimitsConfig,
}

/// A plugin's error policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnErrorConfig {
    /// Answer the client with a 5xx JSON error.
    #[default]
    FailClosed,
    /// Skip the plugin and go on as if it had answered `continue`.
    FailOpen,
}

/// Capabilities granted to a plugin. `log`, `clock` and `metrics` are harmless and
/// granted unless turned off; `kv`, `http` and `secrets` must be granted.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// Write to the gateway's log. Default `true`.
    #[serde(default = "yes")]
    pub log: bool,
    /// Read the clocks. Default `true`.
    #[serde(default = "yes")]
    pub clock: bool,
    /// Define and update metrics. Default `true`.
    #[serde(default = "yes")]
    pub metrics: bool,
    /// Use the key-value store. Default `false`.
    #[serde(default)]
    pub kv: bool,
    /// Make outbound HTTP calls to the listed hosts. Absent: no calls.
    #[serde(default)]
    pub http: Option<HttpGrantConfig>,
    /// Secrets the plugin may read, by the name the plugin asks for.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSourceConfig>,
}

fn yes() -> bool {
    true
}

impl Default for GrantsConfig {
    fn default() -> Self {
        Self { log: true, clock: true, metrics: true, kv: false, http: None, secrets: BTreeMap::new() }
    }
}

/// Outbound HTTP grant.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpGrantConfig {
    /// Hosts the plugin may call: `host` (any port) or `host:port`, matched exactly
    /// (case-insensitive). Anything else is refused with `not-allowed`.
    pub allow: Vec<String>,
    /// Longest time a call may take, connecting included. Default `5s`.
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
}

/// Where a secret's value comes from: exactly one of `env` and `file`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSourceConfig {
    /// An environment variable of the gateway process, read at load.
    Env(String),
    /// A file (trailing newline trimmed), read at load. Relative paths are resolved
    /// against the config file's directory.
    File(String),
}

/// Limits of one plugin entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginLimitsConfig {
    /// Longest time one call (`on-request`, `on-response`, a chunk) may run; the
    /// plugin is then stopped and fails. Time spent waiting on the host (outbound
    /// HTTP, Redis) or yielded to other requests does not count. Default `100ms`.
    #[serde(default)]
    pub deadline: Option<ConfigDuration>,
    /// Longest time `configure` may run for each instance made (at load, and when a
    /// call makes a new one); past it the instance is stopped and the load fails
    /// naming this setting, so an endless loop in `configure` costs `sluice check`
    /// and a reload this long at most. Default `10s` (or `deadline`, if longer).
    #[serde(default)]
    pub configure_deadline: Option<ConfigDuration>,
    /// Largest linear memory of one instance; growing past it fails the call.
    /// Default `32MiB`, at most `256MiB`.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Largest body buffered for a plugin that declared a body phase. Default `10MiB`.
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    /// Most instances of this entry at once, idle and in use (a streamed response
    /// holds one for its whole life). A call that finds all of them in use waits
    /// for one, up to `deadline`, then fails with `503 plugin_busy` under the
    /// entry's `on_error` policy. Default `1000`, at most the engine's slots
    /// (`10000` for the whole process).
    #[serde(default)]
    pub max_instances: Option<usize>,
    /// Instances made and configured at load, so the first burst of traffic does
    /// not run `configure` on the request path; they are kept however quiet the
    /// entry is. `0` lets even the first (load-time) instance be swept. Default `1`.
    #[serde(default)]
    pub warm: Option<usize>,
    /// Most idle instances kept; an instance returned past it is dropped (`0` makes
    /// every call use a fresh instance). Default: `max_instances`.
    #[serde(default)]
    pub max_idle: Option<usize>,
    /// Idle instances beyond `warm` that no call needed for this long are dropped,
    /// so a burst's instances do not hold memory forever. Default `60s`.
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
}
