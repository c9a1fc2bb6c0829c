//! The raw configuration as written in YAML: serde structs, their defaults (named
//! constants) and their documentation. These doc comments are the config reference;
//! `sluice schema` turns them into a JSON Schema.
//!
//! Nothing here is validated beyond its shape: cross-references (a route naming an
//! upstream that does not exist, duplicate names, …) are checked in `validate`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::plugins::{PluginRefConfig, PluginsConfig};
use super::types::{ByteSize, ConfigDuration, HostPort, ListenAddr, Name};

/// The only config format version this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// Default cap on the bytes of a request's header section (→ 431 when exceeded).
pub const DEFAULT_MAX_HEADER_BYTES: ByteSize = ByteSize::kib(16);
/// Default cap on a request body (→ 413 when exceeded).
pub const DEFAULT_MAX_BODY_BYTES: ByteSize = ByteSize::mib(10);
/// Default cap on the request target (path and query) length (→ 414 when exceeded).
pub const DEFAULT_MAX_URI_BYTES: ByteSize = ByteSize::kib(8);
/// Default time a client has to send a complete request head.
pub const DEFAULT_HEADER_READ_TIMEOUT: ConfigDuration = ConfigDuration::secs(10);
/// Default longest wait for the next piece of a request body the gateway asked for.
pub const DEFAULT_BODY_READ_TIMEOUT: ConfigDuration = ConfigDuration::secs(15);
/// Default lowest average rate of a request body, over the time spent waiting for it.
pub const DEFAULT_MIN_BODY_RATE: ByteSize = ByteSize::kib(1);
/// Default time an idle keep-alive client connection is kept open.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: ConfigDuration = ConfigDuration::secs(60);
/// Default cap on concurrent client connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default grace period for in-flight requests on shutdown.
pub const DEFAULT_GRACE_PERIOD: ConfigDuration = ConfigDuration::secs(30);
/// Default header carrying the request id.
pub const DEFAULT_REQUEST_ID_HEADER: &str = "x-request-id";
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: ConfigDuration = ConfigDuration::secs(2);
/// Default time to wait for an upstream's response head.
pub const DEFAULT_REQUEST_TIMEOUT: ConfigDuration = ConfigDuration::secs(30);
/// Default longest wait for the next piece of an upstream's response body.
pub const DEFAULT_READ_TIMEOUT: ConfigDuration = ConfigDuration::secs(60);
/// Default time an idle pooled upstream connection is kept.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: ConfigDuration = ConfigDuration::secs(90);
/// Default cap on idle pooled connections per upstream target.
pub const DEFAULT_MAX_IDLE_PER_TARGET: usize = 64;
/// Default number of retries after the first attempt.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// Default retry budget: retries may add at most this percentage of requests.
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
/// Default retries per second always allowed regardless of the budget.
pub const DEFAULT_RETRY_MIN_PER_SECOND: u32 = 10;
/// Default largest body kept to resend a non-idempotent request (`retries.non_idempotent`).
pub const DEFAULT_RETRY_MAX_REPLAY_BODY: ByteSize = ByteSize::mib(1);
/// Default longest `Retry-After` a status retry waits for.
pub const DEFAULT_RETRY_MAX_RETRY_AFTER: ConfigDuration = ConfigDuration::secs(2);
/// Default consecutive failures that eject a target (passive health).
pub const DEFAULT_EJECT_AFTER_FAILURES: u32 = 5;
/// Default time an ejected target stays out before it is tried again.
pub const DEFAULT_EJECT_FOR: ConfigDuration = ConfigDuration::secs(10);
/// Default active health-check interval.
pub const DEFAULT_HEALTH_INTERVAL: ConfigDuration = ConfigDuration::secs(5);
/// Default active health-check timeout.
pub const DEFAULT_HEALTH_TIMEOUT: ConfigDuration = ConfigDuration::secs(1);
/// Default consecutive check results to flip a target's active health state.
pub const DEFAULT_HEALTH_THRESHOLD: u32 = 2;
/// Default consecutive failures that open a target's circuit breaker.
pub const DEFAULT_BREAKER_FAILURES: u32 = 10;
/// Default time a circuit stays open before one probe request is let through.
pub const DEFAULT_BREAKER_OPEN_FOR: ConfigDuration = ConfigDuration::secs(30);
/// Default target weight.
pub const DEFAULT_WEIGHT: u32 = 1;

fn default_true() -> bool {
    true
}

/// A whole Sluice config file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Config format version. Must be `1`.
    pub version: u32,
    /// Process-wide settings: logging, access log, shutdown.
    #[serde(default)]
    pub server: ServerConfig,
    /// The admin listener (status, metrics, reload). Absent: no admin listener.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Sockets to accept client connections on. At least one.
    pub listeners: Vec<ListenerConfig>,
    /// Named pools of upstream servers that routes forward to.
    #[serde(default)]
    pub upstreams: BTreeMap<Name, UpstreamConfig>,
    /// Routes, matched by host, method, path and headers; the most specific match wins
    /// (see the README's "Routing" section for the exact order).
    pub routes: Vec<RouteConfig>,
    /// Wasm plugins: the plugins folder, the compile cache and the global chain.
    #[serde(default)]
    pub plugins: PluginsConfig,
}

/// Process-wide settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT before
    /// connections are closed. Default `30s`.
    #[serde(default)]
    pub grace_period: Option<ConfigDuration>,
    /// Access log: one structured line per request.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// Distributed tracing: W3C trace context and spans exported over OTLP.
    /// Absent: off (a client's `traceparent` passes to the upstream untouched).
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// The call log: every request recorded in an embedded SQLite database, queried
    /// through the admin API (`/-/calls`, `/-/calls/stats`). Absent: off.
    #[serde(default)]
    pub call_log: Option<CallLogConfig>,
    /// Where the routes' response caches keep their entries (in memory by default).
    #[serde(default)]
    pub cache: super::cache::CacheStoreConfig,
}

/// The call log. Records are written in batches by a thread of their own; the request
/// path only queues them, and drops (and counts) what a full queue cannot take.
/// Bodies are never recorded.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallLogConfig {
    /// The SQLite database file, relative to the config's folder (created if missing).
    /// Absent: records only go out over OTLP (`otlp_endpoint`), and `/-/calls` is off.
    #[serde(default)]
    pub path: Option<String>,
    /// Also send every record as an OTLP log record to this OTLP/HTTP logs endpoint,
    /// e.g. `http://127.0.0.1:4318/v1/logs`: a fleet's call logs in one collector.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Headers sent with each OTLP export (a collector's API key).
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, String>,
    /// Records older than this are deleted (checked every minute). Default `168h` (7 days).
    #[serde(default)]
    pub retention: Option<ConfigDuration>,
    /// Records waiting to be written; past this, new ones are dropped and counted in
    /// `sluice_call_log_records_total{outcome="dropped"}`. Default `10000`.
    #[serde(default)]
    pub queue: Option<usize>,
    /// Request headers recorded with each call (lowercase names). Default none.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Recorded headers whose values are replaced by `[redacted]`. Default
    /// `authorization`, `proxy-authorization`, `cookie`, `x-api-key`, `api-key`.
    #[serde(default)]
    pub redact: Option<Vec<String>>,
}

/// Distributed tracing. Each sampled request is a server span, with a child span
/// per plugin call of its request and response phases; they are exported in batches
/// over OTLP/HTTP (protobuf) off the request path. A client's `traceparent` is
/// continued (same trace id, its sampling decision kept); the upstream gets a
/// `traceparent` naming the gateway's span as its parent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`
    /// (`http://` only).
    pub otlp_endpoint: String,
    /// Share of new traces (requests without a `traceparent`) that are sampled, 0 to
    /// 1. Default `1`. A client's `traceparent` decides for its own trace.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// `service.name` of the exported spans. Default `sluice`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Headers sent with each export (a collector's API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The admin listener: `GET /-/status`, `GET /metrics`, `POST /-/reload`,
/// `GET /-/health`. On loopback it may go without a token; bound anywhere else it
/// needs one (`token` or `token_file`), and every request but `GET /-/health` must
/// carry it as `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to bind. Default `127.0.0.1:9901`. An address that is not loopback
    /// requires `token` or `token_file`.
    #[serde(default)]
    pub address: Option<ListenAddr>,
    /// The bearer token admin requests must carry (compared in constant time). Prefer
    /// `token_file` to keep it out of the config.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace trimmed), relative to
    /// the config's folder: a mounted secret. Re-read on every reload, so rotating it is
    /// a reload.
    #[serde(default)]
    pub token_file: Option<String>,
}

/// Default address of the admin listener.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9901";

/// Access log settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Write an access log line per request (to the `sluice::access` tracing target).
    /// Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `text` (key=value) or `json` (one JSON object per line). Default `text`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self { enabled: true, format: LogFormat::Text }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique listener name, used in logs and by the test harness.
    pub name: Name,
    /// Address to bind, like `0.0.0.0:8080`.
    pub address: ListenAddr,
    /// HTTP versions offered to clients. Default both `http1` and `http2` (HTTP/2 via
    /// ALPN on TLS listeners, via prior knowledge — h2c — on plaintext ones).
    #[serde(default)]
    pub protocols: Option<Vec<HttpVersion>>,
    /// Terminate TLS on this listener. Absent: plaintext.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// Request and connection limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Which forwarding headers to add to proxied requests.
    #[serde(default)]
    pub forwarded: ForwardedConfig,
    /// Request id generation and propagation.
    #[serde(default)]
    pub request_id: RequestIdConfig,
    /// How request paths are normalised before routing (and forwarded so).
    #[serde(default)]
    pub paths: PathsConfig,
    /// What happens to request headers whose name has an underscore (`x_user`), which
    /// some servers read as the dashed name (`x-user`) and so can smuggle a header
    /// past rules about it. Default `drop`.
    #[serde(default)]
    pub underscore_headers: UnderscoreHeaders,
}

/// Path normalisation of a listener. The normalised path is what routes match and
/// what the upstream receives, so a rule about `/private` cannot be walked around
/// with `/public/../private`, `//private` or `%2e%2e`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// Remove `.` and `..` segments (RFC 3986 §5.2.4, never above the root) and decode
    /// percent-escapes of unreserved characters (`%7E` → `~`, `%2e` → `.`); other
    /// escapes are kept, with uppercase hex. Default `true`.
    #[serde(default = "default_true")]
    pub normalize: bool,
    /// Merge runs of slashes: `//a///b` → `/a/b`. Default `true`.
    #[serde(default = "default_true")]
    pub merge_slashes: bool,
    /// Encoded slashes and backslashes (`%2F`, `%5C`) in a path, and raw backslashes:
    /// `reject` them with `400` (default), or `keep` them as escapes that no route
    /// treats as a segment boundary.
    #[serde(default)]
    pub encoded_slashes: EncodedSlashes,
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self { normalize: true, merge_slashes: true, encoded_slashes: EncodedSlashes::Reject }
    }
}

/// What to do with encoded slashes in request paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EncodedSlashes {
    /// Answer `400`.
    #[default]
    Reject,
    /// Keep them encoded (uppercase hex); they never split a segment.
    Keep,
}

/// What to do with request headers whose name has an underscore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreHeaders {
    /// Remove them before routing: neither plugins nor the upstream see them.
    #[default]
    Drop,
    /// Answer `400`.
    Reject,
    /// Keep them.
    Allow,
}

/// An HTTP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpVersion {
    /// HTTP/1.1 (and 1.0).
    Http1,
    /// HTTP/2.
    Http2,
}

/// TLS termination settings of a listener.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificates, chosen by the SNI name the client sends. The first one is served
    /// to clients that send no SNI or an unknown name.
    pub certificates: Vec<CertificateConfig>,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`. Older versions are
    /// never offered.
    #[serde(default)]
    pub min_version: Option<TlsVersion>,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "1.3")]
    Tls13,
}

/// One certificate and its key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// SNI host names this certificate serves; `*.example.com` matches one label.
    pub hosts: Vec<String>,
    /// PEM file with the certificate chain, leaf first. Relative paths are resolved
    /// against the config file's directory.
    pub cert: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// Request and connection limits of a listener.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request header section (request line and headers). Larger → `431`.
    /// Default `16KiB`.
    #[serde(default)]
    pub max_header_bytes: Option<ByteSize>,
    /// Largest request body. Larger → `413` (before anything is forwarded when the
    /// length is declared, otherwise as soon as the limit is crossed). Default `10MiB`.
    #[serde(default)]
    pub max_body_bytes: Option<ByteSize>,
    /// Longest request target (path and query). Longer → `414`. Default `8KiB`.
    #[serde(default)]
    pub max_uri_bytes: Option<ByteSize>,
    /// Time a client has to send a complete request head, counted from its first
    /// byte (from accept, for a connection's first head); slower clients are
    /// disconnected. Checked on the connection's tick (a quarter of the shorter of
    /// this and `idle_timeout`), so it fires at most a tick late. Default `10s`.
    #[serde(default)]
    pub header_read_timeout: Option<ConfigDuration>,
    /// Longest wait for the next piece of a request body once the gateway asked for
    /// it (time spent waiting on the upstream does not count). Slower → `408`, and the
    /// upstream's health is not charged for it. Default `15s`.
    #[serde(default)]
    pub body_read_timeout: Option<ConfigDuration>,
    /// Lowest average rate of a request body, counted over the time the gateway
    /// spent waiting for the client, once that time passes `body_read_timeout`; a
    /// client dripping bytes slower is answered `408`. `0` turns it off. Default
    /// `1KiB` (per second).
    #[serde(default)]
    pub min_body_rate: Option<ByteSize>,
    /// Idle keep-alive connections are closed after this long (the wait between
    /// requests; the header timeout starts with the next request's first byte). An
    /// HTTP/1.1 connection quiet for a tick releases its buffers while it waits.
    /// Default `60s`.
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
    /// Concurrent connections accepted; further clients wait in the kernel backlog,
    /// which is made as deep (up to `net.core.somaxconn`), so a burst of new
    /// connections queues instead of losing SYNs. Default `10000`.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

/// Forwarding headers added to proxied requests.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardedConfig {
    /// Append the client address to `X-Forwarded-For` and set `X-Forwarded-Proto` and
    /// `X-Forwarded-Host`. Default `true`.
    #[serde(default = "default_true")]
    pub x_forwarded: bool,
    /// Append an RFC 7239 `Forwarded` element (`for=…;proto=…;host=…`). Default `false`.
    #[serde(default)]
    pub forwarded: bool,
    /// Keep forwarding headers sent by the client and append to them. When `false`
    /// (the default, right for an edge proxy) client-sent `X-Forwarded-*` and
    /// `Forwarded` headers are dropped first, so clients cannot spoof their address.
    #[serde(default)]
    pub trust_incoming: bool,
}

impl Default for ForwardedConfig {
    fn default() -> Self {
        Self { x_forwarded: true, forwarded: false, trust_incoming: false }
    }
}

/// Request id settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestIdConfig {
    /// Header that carries the id, to the upstream and back to the client.
    /// Default `x-request-id`.
    #[serde(default)]
    pub header: Option<String>,
    /// Keep a well-formed id sent by the client (1–128 visible ASCII characters)
    /// instead of generating a new one. Default `true`.
    #[serde(default = "default_true")]
    pub trust_incoming: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        Self { header: None, trust_incoming: true }
    }
}

/// A named pool of upstream servers.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The servers of the pool. At least one.
    pub targets: Vec<TargetConfig>,
    /// How a target is picked for each request. Default `round_robin`.
    #[serde(default)]
    pub balance: BalanceConfig,
    /// HTTP version spoken to the targets: `http1` (default) or `http2` (ALPN `h2` over
    /// TLS, prior knowledge over plaintext).
    #[serde(default)]
    pub protocol: Option<HttpVersion>,
    /// Connect to the targets over TLS. Absent: plaintext.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Timeouts for talking to the targets.
    #[serde(default)]
    pub timeouts: UpstreamTimeoutsConfig,
    /// Keep-alive connection pool settings.
    #[serde(default)]
    pub pool: PoolConfig,
    /// When and how often a failed attempt is retried on another target.
    #[serde(default)]
    pub retries: RetryConfig,
    /// Health checking: passive (from live traffic) and optionally active (probes).
    #[serde(default)]
    pub health: HealthConfig,
    /// Per-target circuit breaker.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Rewrite the `Host` header sent upstream to this value. Default: keep the
    /// client's `Host`.
    #[serde(default)]
    pub host_header: Option<String>,
}

/// One upstream server.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `host:port` of the server. Host names are resolved at connect time.
    pub address: HostPort,
    /// Relative share of requests (for weighted and canary splits). `0` sends this
    /// target nothing. Default `1`.
    #[serde(default)]
    pub weight: Option<u32>,
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BalanceConfig {
    /// Smooth weighted round robin: each target gets its weight's share, interleaved.
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight, relative to its weight;
    /// ties broken by round robin.
    LeastOutstanding,
    /// A weighted random pick.
    Random,
}

/// TLS to upstream targets.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file of CA certificates to trust. Absent: the system's root store.
    #[serde(default)]
    pub ca: Option<String>,
    /// Server name to send (SNI) and verify. Default: the target's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Upstream timeouts.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTimeoutsConfig {
    /// Time to establish a connection (TCP and TLS). Default `2s`.
    #[serde(default)]
    pub connect: Option<ConfigDuration>,
    /// Time from sending the request to receiving the response head; exceeded → `504`.
    /// Default `30s`.
    #[serde(default)]
    pub request: Option<ConfigDuration>,
    /// Longest wait for the next piece of the response body once the head has
    /// arrived (a provider that stalls mid-stream). Exceeded → the response is cut
    /// where it is (the client sees an incomplete body, never a complete-looking
    /// one) and the upstream connection is closed. Default `60s`; raise it for
    /// streams that pause longer without a keep-alive comment.
    #[serde(default)]
    pub read: Option<ConfigDuration>,
}

/// Upstream connection pool.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Idle connections are closed after this long. Default `90s`.
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
    /// Idle connections kept per target. Default `64`. With worker threads each
    /// worker keeps its own idle connections (a connection is served by the worker
    /// that opened it), this many split evenly over the workers, rounded up.
    #[serde(default)]
    pub max_idle_per_target: Option<usize>,
}

/// Retry policy. A failed attempt is retried on another target only when it is safe:
/// nothing was sent (connect failure), or the method is idempotent (GET, HEAD,
/// OPTIONS, PUT, DELETE, TRACE) and the request has no body.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt. `0` disables retries. Default `2`.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Retries may add at most this percentage on top of the request rate, so retries
    /// cannot amplify an outage. Default `20`.
    #[serde(default)]
    pub budget_percent: Option<u32>,
    /// Retries per second always allowed, regardless of the budget. Default `10`.
    #[serde(default)]
    pub min_per_second: Option<u32>,
    /// Also retry idempotent requests that got one of these response statuses
    /// (for example `[502, 503]`). Default: none.
    #[serde(default)]
    pub on_status: Vec<u16>,
    /// Treat every method as safe to resend (for APIs where a repeated request does no
    /// harm, like LLM providers answering `429`/`529`): a body of at most
    /// `max_replay_body` is kept so a `POST` that was sent can be retried on
    /// `on_status` or a broken connection. Default `false`.
    #[serde(default)]
    pub non_idempotent: bool,
    /// Largest request body kept for resending with `non_idempotent` (a larger or
    /// unknown-length body is sent once). Default `1MiB`.
    #[serde(default)]
    pub max_replay_body: Option<ByteSize>,
    /// A status retry honours the response's `Retry-After` (seconds or an HTTP date),
    /// waiting before the next attempt; a longer wait than this is not retried and the
    /// response goes to the client. Default `2s`.
    #[serde(default)]
    pub max_retry_after: Option<ConfigDuration>,
}

/// Health checking.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Eject a target after consecutive failures seen in live traffic.
    #[serde(default)]
    pub passive: PassiveHealthConfig,
    /// Probe each target periodically. Absent: no probes.
    #[serde(default)]
    pub active: Option<ActiveHealthConfig>,
}

/// Passive health: a target that fails `failures` times in a row (connect errors,
/// timeouts, 5xx responses) is ejected for `eject_for`, then readmitted.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthConfig {
    /// Consecutive failures that eject a target. `0` disables ejection. Default `5`.
    #[serde(default)]
    pub failures: Option<u32>,
    /// How long an ejected target stays out. Default `10s`.
    #[serde(default)]
    pub eject_for: Option<ConfigDuration>,
}

/// Active health checks: a `GET path` to every target each `interval`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthConfig {
    /// Path to request, like `/healthz`.
    pub path: String,
    /// Time between probes. Default `5s`.
    #[serde(default)]
    pub interval: Option<ConfigDuration>,
    /// Probe timeout. Default `1s`.
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Consecutive successful probes that mark a target healthy. Default `2`.
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    /// Consecutive failed probes that mark a target unhealthy. Default `2`.
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
    /// Statuses counted as healthy. Default: any 2xx.
    #[serde(default)]
    pub expect_status: Vec<u16>,
}

/// Circuit breaker per target: after `failures` consecutive failures the circuit
/// opens and the target gets no requests for `open_for`; then one probe request is
/// let through (half-open) and its outcome closes or re-opens the circuit.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Turn the breaker on. Default `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Consecutive failures that open the circuit. Default `10`.
    #[serde(default)]
    pub failures: Option<u32>,
    /// How long the circuit stays open. Default `30s`.
    #[serde(default)]
    pub open_for: Option<ConfigDuration>,
}

/// One route: what to match and where to send it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique route name, used in logs, metrics and error messages.
    pub name: Name,
    /// What requests this route takes.
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    /// Where matching requests go.
    pub target: RouteTargetConfig,
    /// Listener names this route is served on. Default: all listeners.
    #[serde(default)]
    pub listeners: Vec<Name>,
    /// Plugins run for this route's requests, after the global chain's in the request
    /// phase (first to last) and before them in the response phase (last to first).
    #[serde(default)]
    pub plugins: Vec<PluginRefConfig>,
    /// Protocols an HTTP/1.1 `Upgrade` may switch to on this route (compared
    /// case-insensitively). Any other upgrade is ignored, as RFC 9110 §7.8 allows: the
    /// request is forwarded without `Upgrade`, and an upstream that switches anyway
    /// gets `502`. Default `[websocket]`; `h2c` is only tunnelled when listed.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
    /// Response caching for this route's `GET` and `HEAD` requests (see the README's
    /// "Caching"). Absent: off. Only with an `upstream` or `split` target.
    #[serde(default)]
    pub cache: Option<super::cache::RouteCacheConfig>,
}

fn default_upgrades() -> Vec<String> {
    vec!["websocket".to_owned()]
}

/// Request matching. All given conditions must hold. Exactly one of `path` and
/// `path_prefix` is required.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host names (from `Host` or the HTTP/2 `:authority`, port ignored, case
    /// insensitive). `*.example.com` matches any single label in front of
    /// `example.com`. Empty: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Methods, like `[GET, HEAD]`. Empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// An exact path; segments written `{name}` match any one non-empty segment and
    /// are captured as path parameters (`/users/{id}`).
    #[serde(default)]
    pub path: Option<String>,
    /// A path prefix matched on segment boundaries: `/api` matches `/api` and
    /// `/api/x` but not `/apix`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Header conditions: name → exact value, or `"*"` for "present with any value".
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query-parameter conditions: name → exact value (both compared percent-decoded),
    /// or `"*"` for "present with any value": `{ version: "2" }` takes `?version=2`.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
}

/// A route's target: exactly one of the forms below.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RouteTargetConfig {
    /// Forward to the named upstream pool: `target: { upstream: api }`.
    Upstream(Name),
    /// Answer with a fixed response: `target: { static: { status: 200, body: "ok" } }`.
    Static(StaticResponseConfig),
    /// Answer with a JSON description of the request (method, path, query, headers,
    /// body size): `target: { echo: {} }`. Useful to see what plugins did.
    Echo(EchoConfig),
    /// An MCP endpoint (Model Context Protocol, Streamable HTTP) whose tools are
    /// routes of this gateway: `target: { mcp: { tools: [...] } }`.
    Mcp(super::mcp::McpConfig),
    /// A weighted split between upstream pools (canary, blue/green), optionally
    /// sticky, with overrides: `target: { split: { to: [...] } }`.
    Split(super::split::SplitConfig),
    /// Several upstream calls made in parallel, their JSON answers composed into one
    /// object: `target: { aggregate: { calls: [...] } }`.
    Aggregate(super::aggregate::AggregateConfig),
    /// A WebAssembly component implementing `wasi:http/incoming-handler`, run inside
    /// the gateway for each request: `target: { function: { component: hello.wasm } }`.
    Function(super::function::FunctionConfig),
}

/// A fixed response.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticResponseConfig {
    /// Status code. Default `200`.
    #[serde(default)]
    pub status: Option<u16>,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response body (text). Default empty.
    #[serde(default)]
    pub body: String,
}

/// The echo target's settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {
    /// Status code to answer with. Default `200`.
    #[serde(default)]
    pub status: Option<u16>,
}
