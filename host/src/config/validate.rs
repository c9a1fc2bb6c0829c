//! Semantic checks over a whole config; every problem is collected, none stops the walk.
//!
//! Serde already enforced the shape (fields, types, newtypes). What is left is what one
//! value cannot know on its own: cross-references, uniqueness, ranges and the syntax of
//! the few free-form strings the gateway interprets (methods, hosts, header names).
//! Route path patterns are checked by the router when the snapshot is built.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::types::{ByteSize, ConfigDuration, Name};
use super::{
    AdminConfig, CONFIG_VERSION, CallLogConfig, Config, HealthConfig, ListenerConfig, MatchConfig, Problem,
    RouteConfig, RouteTargetConfig, TracingConfig, UpstreamConfig,
};

/// The smallest header buffer hyper accepts (`max_buf_size` panics below 8192).
const MIN_MAX_HEADER_BYTES: ByteSize = ByteSize::kib(8);

/// Checks cross-references and values that serde cannot, returning every problem.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut v = Validator::default();
    if config.version != CONFIG_VERSION {
        v.push(
            "version",
            format!("unsupported config version {}: set `version: {CONFIG_VERSION}`", config.version),
        );
    }
    v.listeners(&config.listeners);
    if let Some(admin) = &config.admin {
        v.admin(admin);
    }
    if let Some(t) = &config.server.tracing {
        v.tracing(t);
    }
    if let Some(c) = &config.server.call_log {
        v.call_log(c);
    }
    for (name, upstream) in &config.upstreams {
        v.upstream(&format!("upstreams.{name}"), upstream);
    }
    v.routes(config);
    v.problems.extend(super::kv::validate_kv(&config.plugins.kv));
    let kv_is_redis = config.plugins.kv.backend == super::KvBackendConfig::Redis;
    v.problems.extend(super::cache::validate_cache_store(&config.server.cache, kv_is_redis));
    v.problems
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn nonzero(&mut self, path: &str, d: Option<ConfigDuration>) {
        if d.is_some_and(|d| d.get() == Duration::ZERO) {
            self.push(path, "must be longer than 0: give a duration like `500ms` or `10s`");
        }
    }

    fn at_least_one(&mut self, path: &str, n: Option<u32>) {
        if n == Some(0) {
            self.push(path, "must be at least 1");
        }
    }

    fn header_name(&mut self, path: &str, name: &str) {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.push(
                path,
                format!("invalid header name `{name}`: use letters, digits and `-`, like `x-api-key`"),
            );
        }
    }

    fn host(&mut self, path: &str, host: &str) {
        if !valid_host(host) {
            self.push(
                path,
                format!(
                    "invalid host `{host}`: use a host name like `api.example.com` or a wildcard like `*.example.com`"
                ),
            );
        }
    }

    fn call_log(&mut self, c: &CallLogConfig) {
        let p = "server.call_log";
        match (&c.path, &c.otlp_endpoint) {
            (None, None) => self.push(
                p,
                "give `path` (a SQLite file, like `calls.db`), `otlp_endpoint` (a collector's OTLP/HTTP logs URL), or both",
            ),
            (Some(path), _) if path.trim().is_empty() => {
                self.push(format!("{p}.path"), "must name a file, like `calls.db`");
            }
            _ => {}
        }
        if let Some(e) = &c.otlp_endpoint {
            self.http_url(&format!("{p}.otlp_endpoint"), e, "http://127.0.0.1:4318/v1/logs");
        }
        self.header_map(&format!("{p}.otlp_headers"), &c.otlp_headers);
        self.nonzero(&format!("{p}.retention"), c.retention);
        if c.queue == Some(0) {
            self.push(format!("{p}.queue"), "must be at least 1");
        }
        for (i, h) in c.headers.iter().enumerate() {
            self.header_name(&format!("{p}.headers[{i}]"), h);
        }
        for (i, h) in c.redact.iter().flatten().enumerate() {
            self.header_name(&format!("{p}.redact[{i}]"), h);
        }
    }

    fn tracing(&mut self, t: &TracingConfig) {
        let p = "server.tracing";
        self.http_url(&format!("{p}.otlp_endpoint"), &t.otlp_endpoint, "http://127.0.0.1:4318/v1/traces");
        if t.sample_ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            self.push(format!("{p}.sample_ratio"), "must be between 0 and 1");
        }
        self.header_map(&format!("{p}.headers"), &t.headers);
    }

    /// Headers to send, as a name → value map.
    fn header_map(&mut self, path: &str, headers: &BTreeMap<String, String>) {
        for (k, v) in headers {
            self.header_name(&format!("{path}.{k}"), k);
            if http::HeaderValue::from_str(v).is_err() {
                self.push(format!("{path}.{k}"), "invalid header value");
            }
        }
    }

    /// An `http://` URL of a collector (`example` shows the shape).
    fn http_url(&mut self, path: &str, url: &str, example: &str) {
        match url.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => {}
            _ => self.push(
                path,
                format!(
                    "`{url}` is not an http:// URL: give the collector's OTLP/HTTP endpoint, like `{example}`"
                ),
            ),
        }
    }

    fn admin(&mut self, admin: &AdminConfig) {
        match (&admin.token, &admin.token_file) {
            (Some(_), Some(_)) => self.push("admin.token", "give `token` or `token_file`, not both"),
            (Some(t), None) if t.trim().is_empty() => self.push("admin.token", "must not be empty"),
            (None, None) => {
                if let Some(addr) = admin.address.filter(|a| !a.0.ip().is_loopback()) {
                    self.push(
                        "admin.address",
                        format!(
                            "the admin listener on `{}` is reachable beyond this machine: set `admin.token_file` (or `admin.token`) so its requests must carry a bearer token, or bind it to 127.0.0.1",
                            addr.0
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    fn listeners(&mut self, listeners: &[ListenerConfig]) {
        if listeners.is_empty() {
            self.push(
                "listeners",
                "no listeners: add at least one, like `- { name: public, address: 0.0.0.0:8080 }`",
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut addresses: HashMap<std::net::SocketAddr, usize> = HashMap::new();
        for (i, l) in listeners.iter().enumerate() {
            let path = format!("listeners[{i}]");
            if let Some(first) = names.insert(l.name.as_str(), i) {
                names.insert(l.name.as_str(), first);
                self.push(
                    format!("{path}.name"),
                    format!("duplicate listener name `{}` (also listeners[{first}]): give each listener its own name", l.name),
                );
            }
            let addr = l.address.0;
            if addr.port() != 0
                && let Some(first) = addresses.insert(addr, i)
            {
                addresses.insert(addr, first);
                self.push(
                    format!("{path}.address"),
                    format!(
                        "address {addr} is already used by listener `{}`: give each listener its own address",
                        listeners[first].name
                    ),
                );
            }
            self.listener(&path, l);
        }
    }

    fn listener(&mut self, path: &str, l: &ListenerConfig) {
        if l.protocols.as_ref().is_some_and(Vec::is_empty) {
            self.push(
                format!("{path}.protocols"),
                "no protocols: list `http1`, `http2` or both, or remove the field",
            );
        }
        if let Some(tls) = &l.tls {
            if tls.certificates.is_empty() {
                self.push(
                    format!("{path}.tls.certificates"),
                    "no certificates: add at least one `{ hosts, cert, key }`",
                );
            }
            for (j, cert) in tls.certificates.iter().enumerate() {
                let cpath = format!("{path}.tls.certificates[{j}].hosts");
                if cert.hosts.is_empty() {
                    self.push(&cpath, "no hosts: list the sni names this certificate serves");
                }
                for (k, host) in cert.hosts.iter().enumerate() {
                    self.host(&format!("{cpath}[{k}]"), host);
                }
            }
        }
        let limits = &l.limits;
        let lpath = format!("{path}.limits");
        if let Some(n) = limits.max_header_bytes.filter(|n| *n < MIN_MAX_HEADER_BYTES) {
            self.push(
                format!("{lpath}.max_header_bytes"),
                format!("{n} is too small: use at least 8KiB (8192 bytes), the smallest header buffer the server supports"),
            );
        }
        if limits.max_uri_bytes == Some(ByteSize(0)) {
            self.push(format!("{lpath}.max_uri_bytes"), "must be at least 1 byte");
        }
        self.nonzero(&format!("{lpath}.header_read_timeout"), limits.header_read_timeout);
        self.nonzero(&format!("{lpath}.idle_timeout"), limits.idle_timeout);
        self.nonzero(&format!("{lpath}.body_read_timeout"), limits.body_read_timeout);
        if limits.max_connections == Some(0) {
            self.push(format!("{lpath}.max_connections"), "must be at least 1");
        }
        if let Some(h) = &l.request_id.header {
            self.header_name(&format!("{path}.request_id.header"), h);
        }
    }

    fn upstream(&mut self, path: &str, u: &UpstreamConfig) {
        if u.targets.is_empty() {
            self.push(format!("{path}.targets"), "no targets: add at least one `- address: host:port`");
        } else if u.targets.iter().all(|t| t.weight == Some(0)) {
            self.push(
                format!("{path}.targets"),
                "every target has weight 0: give at least one target a positive weight",
            );
        }
        self.nonzero(&format!("{path}.timeouts.connect"), u.timeouts.connect);
        self.nonzero(&format!("{path}.timeouts.request"), u.timeouts.request);
        self.nonzero(&format!("{path}.pool.idle_timeout"), u.pool.idle_timeout);
        for (j, status) in u.retries.on_status.iter().enumerate() {
            self.status(&format!("{path}.retries.on_status[{j}]"), *status);
        }
        self.health(&format!("{path}.health"), &u.health);
        let cb = &u.circuit_breaker;
        if cb.enabled != Some(false) && cb.failures == Some(0) {
            self.push(
                format!("{path}.circuit_breaker.failures"),
                "must be at least 1 (set `enabled: false` to turn the breaker off)",
            );
        }
        self.nonzero(&format!("{path}.circuit_breaker.open_for"), cb.open_for);
        if let Some(h) = &u.host_header
            && http::HeaderValue::from_str(h).is_err()
        {
            self.push(format!("{path}.host_header"), format!("invalid host header value `{h}`"));
        }
    }

    fn status(&mut self, path: &str, status: u16) {
        if !(100..=599).contains(&status) {
            self.push(path, format!("status {status} is out of range: use 100 to 599"));
        }
    }

    fn health(&mut self, path: &str, h: &HealthConfig) {
        self.nonzero(&format!("{path}.passive.eject_for"), h.passive.eject_for);
        let Some(active) = &h.active else { return };
        let apath = format!("{path}.active");
        if !active.path.starts_with('/') {
            self.push(
                format!("{apath}.path"),
                format!("health check path `{}` must start with `/`, like `/healthz`", active.path),
            );
        }
        self.nonzero(&format!("{apath}.interval"), active.interval);
        self.nonzero(&format!("{apath}.timeout"), active.timeout);
        self.at_least_one(&format!("{apath}.healthy_threshold"), active.healthy_threshold);
        self.at_least_one(&format!("{apath}.unhealthy_threshold"), active.unhealthy_threshold);
        for (j, status) in active.expect_status.iter().enumerate() {
            self.status(&format!("{apath}.expect_status[{j}]"), *status);
        }
    }

    fn routes(&mut self, config: &Config) {
        if config.routes.is_empty() {
            self.push("routes", "no routes: add at least one route");
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, r) in config.routes.iter().enumerate() {
            let path = format!("routes[{i}]");
            if let Some(first) = names.insert(r.name.as_str(), i) {
                names.insert(r.name.as_str(), first);
                self.push(
                    format!("{path}.name"),
                    format!(
                        "duplicate route name `{}` (also routes[{first}]): give each route its own name",
                        r.name
                    ),
                );
            }
            self.route(&path, r, config);
        }
    }

    fn route(&mut self, path: &str, r: &RouteConfig, config: &Config) {
        for (j, l) in r.listeners.iter().enumerate() {
            if !config.listeners.iter().any(|x| x.name == *l) {
                let known = list(config.listeners.iter().map(|x| &x.name));
                self.push(format!("{path}.listeners[{j}]"), format!("unknown listener `{l}`: {known}"));
            }
        }
        if let RouteTargetConfig::Upstream(u) = &r.target
            && !config.upstreams.contains_key(u)
        {
            self.push(format!("{path}.target.upstream"), unknown_upstream(u, &config.upstreams));
        }
        if let Some(c) = &r.cache {
            self.problems.extend(super::cache::validate_route_cache(c, &format!("{path}.cache")));
            if !matches!(r.target, RouteTargetConfig::Upstream(_) | RouteTargetConfig::Split(_)) {
                self.push(
                    format!("{path}.cache"),
                    "a cache only goes in front of an `upstream` or `split` target",
                );
            }
        }
        for (j, u) in r.upgrades.iter().enumerate() {
            if !is_token(u) {
                self.push(
                    format!("{path}.upgrades[{j}]"),
                    format!("`{u}` is not a protocol name (like `websocket`)"),
                );
            }
        }
        self.matcher(&format!("{path}.match"), &r.matcher);
    }

    fn matcher(&mut self, path: &str, m: &MatchConfig) {
        match (&m.path, &m.path_prefix) {
            (Some(_), Some(_)) => self
                .push(format!("{path}.path_prefix"), "both `path` and `path_prefix` are set: keep only one"),
            (None, None) => self
                .push(path, "missing `path` or `path_prefix`: add one (`path_prefix: /` matches every path)"),
            _ => {}
        }
        for (j, method) in m.methods.iter().enumerate() {
            let mpath = format!("{path}.methods[{j}]");
            if !is_token(method) {
                self.push(
                    mpath,
                    format!("invalid method `{method}`: use a method name like `GET` or `POST`"),
                );
            } else if method.bytes().any(|b| b.is_ascii_lowercase()) {
                self.push(
                    mpath,
                    format!(
                        "method `{method}` must be uppercase (methods are case-sensitive): write `{}`",
                        method.to_ascii_uppercase()
                    ),
                );
            }
        }
        for (j, host) in m.hosts.iter().enumerate() {
            self.host(&format!("{path}.hosts[{j}]"), host);
        }
        for name in m.headers.keys() {
            self.header_name(&format!("{path}.headers.{name}"), name);
        }
    }
}

fn unknown_upstream(name: &Name, upstreams: &BTreeMap<Name, UpstreamConfig>) -> String {
    if upstreams.is_empty() {
        format!("unknown upstream `{name}`: no upstreams are defined, add one under `upstreams`")
    } else {
        format!("unknown upstream `{name}`: {}", list(upstreams.keys()))
    }
}

/// `known names are a, b` for a message about an unknown name.
fn list<'a>(names: impl Iterator<Item = &'a Name>) -> String {
    let mut names: Vec<&str> = names.map(Name::as_str).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        "none are defined".to_owned()
    } else {
        format!("known names are {}", names.join(", "))
    }
}

/// An HTTP token (RFC 9110 `tchar`s), the syntax of a method.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A DNS host name (labels of letters, digits and `-`, optionally `*.` in front) or an
/// IP address.
fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<(String, String)> {
        let config: Config = serde_saphyr::from_str(yaml).unwrap();
        validate(&config).into_iter().map(|p| (p.path, p.message)).collect()
    }

    fn paths(yaml: &str) -> Vec<String> {
        problems(yaml).into_iter().map(|(p, _)| p).collect()
    }

    const BASE: &str = "version: 1\nlisteners: [{ name: a, address: 127.0.0.1:0 }]\n";

    #[test]
    fn the_quickstart_is_valid() {
        let config: Config = serde_saphyr::from_str(crate::config::QUICKSTART_YAML).unwrap();
        assert_eq!(validate(&config), vec![]);
    }

    #[test]
    fn empty_config_reports_everything_missing() {
        let got = problems("version: 2\nlisteners: []\nroutes: []\n");
        let got: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(got, ["version", "listeners", "routes"]);
    }

    #[test]
    fn listeners_are_unique_and_sane() {
        let yaml = "version: 1
listeners:
  - { name: a, address: 127.0.0.1:0 }
  - { name: a, address: 127.0.0.1:0 }
  - name: b
    address: 127.0.0.1:80
    limits: { max_header_bytes: 4KiB, idle_timeout: 0s, max_connections: 0 }
    request_id: { header: 'bad header' }
  - name: c
    address: 127.0.0.1:80
    tls: { certificates: [{ hosts: [], cert: c, key: k }, { hosts: ['bad host!'], cert: c, key: k }] }
routes: [{ name: r, match: { path_prefix: / }, target: { echo: {} } }]
";
        assert_eq!(
            paths(yaml),
            [
                "listeners[1].name",
                "listeners[2].limits.max_header_bytes",
                "listeners[2].limits.idle_timeout",
                "listeners[2].limits.max_connections",
                "listeners[2].request_id.header",
                "listeners[3].address",
                "listeners[3].tls.certificates[0].hosts",
                "listeners[3].tls.certificates[1].hosts[0]",
            ]
        );
        let tls = "version: 1\nlisteners: [{ name: a, address: 127.0.0.1:0, tls: { certificates: [] } }]\nroutes: [{ name: r, match: { path: / }, target: { echo: {} } }]\n";
        assert_eq!(paths(tls), ["listeners[0].tls.certificates"]);
    }

    #[test]
    fn routes_reference_what_exists() {
        let yaml = format!(
            "{BASE}upstreams: {{ api: {{ targets: [{{ address: 'h:1' }}] }} }}
routes:
  - {{ name: r, match: {{ path: / }}, target: {{ upstream: nope }}, listeners: [a, b], upgrades: [websocket, 'h2 c'] }}
  - {{ name: r, match: {{ path: /x, path_prefix: /x }}, target: {{ upstream: api }} }}
  - {{ name: s, match: {{ methods: [GET, get, 'G T'], hosts: ['*.ok.example', 'a..b'], headers: {{ 'x y': '*' }} }}, target: {{ echo: {{}} }} }}
"
        );
        let got = problems(&yaml);
        let p: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            p,
            [
                "routes[0].listeners[1]",
                "routes[0].target.upstream",
                "routes[0].upgrades[1]",
                "routes[1].name",
                "routes[1].match.path_prefix",
                "routes[2].match",
                "routes[2].match.methods[1]",
                "routes[2].match.methods[2]",
                "routes[2].match.hosts[1]",
                "routes[2].match.headers.x y",
            ]
        );
        assert_eq!(got[0].1, "unknown listener `b`: known names are a");
        assert_eq!(got[1].1, "unknown upstream `nope`: known names are api");
        assert!(got[6].1.contains("write `GET`"), "{}", got[6].1);
        for (_, m) in &got {
            assert!(!m.ends_with('.') && m.starts_with(|c: char| !c.is_uppercase()), "{m}");
        }
    }

    #[test]
    fn upstreams_are_sane() {
        let yaml = format!(
            "{BASE}upstreams:
  empty: {{ targets: [] }}
  zero:
    targets: [{{ address: 'h:1', weight: 0 }}]
    retries: {{ on_status: [503, 600] }}
    health:
      active: {{ path: healthz, healthy_threshold: 0, unhealthy_threshold: 1 }}
    circuit_breaker: {{ failures: 0 }}
routes: [{{ name: r, match: {{ path: / }}, target: {{ upstream: zero }} }}]
"
        );
        assert_eq!(
            paths(&yaml),
            [
                "upstreams.empty.targets",
                "upstreams.zero.targets",
                "upstreams.zero.retries.on_status[1]",
                "upstreams.zero.health.active.path",
                "upstreams.zero.health.active.healthy_threshold",
                "upstreams.zero.circuit_breaker.failures",
            ]
        );
    }

    #[test]
    fn hosts_and_tokens() {
        assert!(valid_host("api.example.com") && valid_host("*.example.com") && valid_host("localhost"));
        assert!(valid_host("10.0.0.1") && valid_host("::1"));
        assert!(!valid_host("*") && !valid_host("a.*.b") && !valid_host("-a.b") && !valid_host("a b"));
        assert!(is_token("GET") && is_token("PURGE") && !is_token("") && !is_token("G T"));
    }
}
