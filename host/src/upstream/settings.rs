//! The resolved settings of one upstream: its config with every default applied and
//! every value parsed into the type the hot path uses. Built once per snapshot.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode, Uri};

use super::tls::{self, TlsSettings};
use crate::config::{
    ActiveHealthConfig, BalanceConfig, DEFAULT_BREAKER_FAILURES, DEFAULT_BREAKER_OPEN_FOR,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_EJECT_AFTER_FAILURES, DEFAULT_EJECT_FOR, DEFAULT_HEALTH_INTERVAL,
    DEFAULT_HEALTH_THRESHOLD, DEFAULT_HEALTH_TIMEOUT, DEFAULT_MAX_IDLE_PER_TARGET, DEFAULT_READ_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_BUDGET_PERCENT,
    DEFAULT_RETRY_MAX_REPLAY_BODY, DEFAULT_RETRY_MAX_RETRY_AFTER, DEFAULT_RETRY_MIN_PER_SECOND,
    DEFAULT_UPSTREAM_IDLE_TIMEOUT, HttpVersion, Name, Problem, UpstreamConfig,
};

/// The HTTP version spoken to the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2: prior knowledge over plaintext, ALPN `h2` over TLS.
    Http2,
}

/// Settings shared by the connection pools of all targets of one upstream.
#[derive(Debug)]
pub(crate) struct PoolSettings {
    pub protocol: Protocol,
    pub tls: Option<TlsSettings>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    pub host_header: Option<HeaderValue>,
}

/// Retry policy and budget parameters.
#[derive(Debug, Clone)]
pub(crate) struct RetrySettings {
    pub attempts: u32,
    pub budget_percent: u32,
    pub min_per_second: u32,
    pub on_status: Vec<StatusCode>,
    /// Every method may be resent (with a kept body of at most `max_replay_body`).
    pub non_idempotent: bool,
    pub max_replay_body: u64,
    /// Longest `Retry-After` a status retry waits for.
    pub max_retry_after: Duration,
}

/// Passive health parameters; `failures == 0` disables ejection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PassiveSettings {
    pub failures: u32,
    pub eject_for: Duration,
}

/// Circuit breaker parameters; `None` when the breaker is off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerSettings {
    pub failures: u32,
    pub open_for: Duration,
}

/// Active health-check parameters.
#[derive(Debug, Clone)]
pub(crate) struct ActiveSettings {
    pub path: Uri,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub expect_status: Vec<u16>,
}

impl ActiveSettings {
    /// Whether a probe answered with `status` counts as healthy.
    pub fn is_expected(&self, status: StatusCode) -> bool {
        if self.expect_status.is_empty() {
            status.is_success()
        } else {
            self.expect_status.contains(&status.as_u16())
        }
    }
}

/// Everything resolved from an [`UpstreamConfig`].
#[derive(Debug)]
pub(crate) struct Settings {
    pub balance: BalanceConfig,
    pub pool: Arc<PoolSettings>,
    pub retry: RetrySettings,
    pub passive: PassiveSettings,
    pub breaker: Option<BreakerSettings>,
    pub active: Option<ActiveSettings>,
}

impl Settings {
    /// Resolves `config`, reporting every problem under `upstreams.<name>`.
    pub fn resolve(name: &Name, config: &UpstreamConfig, base_dir: &Path) -> Result<Settings, Vec<Problem>> {
        let at = |field: &str| format!("upstreams.{name}.{field}");
        let mut problems = Vec::new();

        if config.targets.is_empty() {
            problems.push(Problem::new(at("targets"), "an upstream needs at least one target"));
        }
        let protocol = match config.protocol {
            Some(HttpVersion::Http2) => Protocol::Http2,
            Some(HttpVersion::Http1) | None => Protocol::Http1,
        };
        let tls = match &config.tls {
            Some(t) => match tls::build(t, protocol, base_dir) {
                Ok(t) => Some(t),
                Err((field, message)) => {
                    problems.push(Problem::new(at(&format!("tls.{field}")), message));
                    None
                }
            },
            None => None,
        };
        let host_header = match &config.host_header {
            Some(h) => match HeaderValue::from_str(h) {
                Ok(v) if !h.is_empty() => Some(v),
                _ => {
                    problems.push(Problem::new(at("host_header"), format!("invalid host header `{h}`")));
                    None
                }
            },
            None => None,
        };

        let mut on_status = Vec::with_capacity(config.retries.on_status.len());
        for (i, s) in config.retries.on_status.iter().enumerate() {
            match StatusCode::from_u16(*s) {
                Ok(s) => on_status.push(s),
                Err(_) => problems
                    .push(Problem::new(at(&format!("retries.on_status[{i}]")), "status must be 100 to 999")),
            }
        }

        let active = match &config.health.active {
            Some(a) => match resolve_active(a) {
                Ok(a) => Some(a),
                Err(message) => {
                    problems.push(Problem::new(at("health.active.path"), message));
                    None
                }
            },
            None => None,
        };

        if !problems.is_empty() {
            return Err(problems);
        }

        let timeouts = &config.timeouts;
        let pool = PoolSettings {
            protocol,
            tls,
            connect_timeout: timeouts.connect.unwrap_or(DEFAULT_CONNECT_TIMEOUT).get(),
            request_timeout: timeouts.request.unwrap_or(DEFAULT_REQUEST_TIMEOUT).get(),
            read_timeout: timeouts.read.unwrap_or(DEFAULT_READ_TIMEOUT).get(),
            idle_timeout: config.pool.idle_timeout.unwrap_or(DEFAULT_UPSTREAM_IDLE_TIMEOUT).get(),
            max_idle: config.pool.max_idle_per_target.unwrap_or(DEFAULT_MAX_IDLE_PER_TARGET),
            host_header,
        };
        let r = &config.retries;
        let retry = RetrySettings {
            attempts: r.attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS),
            budget_percent: r.budget_percent.unwrap_or(DEFAULT_RETRY_BUDGET_PERCENT),
            min_per_second: r.min_per_second.unwrap_or(DEFAULT_RETRY_MIN_PER_SECOND),
            on_status,
            non_idempotent: r.non_idempotent,
            max_replay_body: r.max_replay_body.unwrap_or(DEFAULT_RETRY_MAX_REPLAY_BODY).bytes(),
            max_retry_after: r.max_retry_after.unwrap_or(DEFAULT_RETRY_MAX_RETRY_AFTER).get(),
        };
        let p = &config.health.passive;
        let passive = PassiveSettings {
            failures: p.failures.unwrap_or(DEFAULT_EJECT_AFTER_FAILURES),
            eject_for: p.eject_for.unwrap_or(DEFAULT_EJECT_FOR).get(),
        };
        let b = &config.circuit_breaker;
        let breaker_failures = b.failures.unwrap_or(DEFAULT_BREAKER_FAILURES);
        let breaker = (b.enabled.unwrap_or(true) && breaker_failures > 0).then(|| BreakerSettings {
            failures: breaker_failures,
            open_for: b.open_for.unwrap_or(DEFAULT_BREAKER_OPEN_FOR).get(),
        });

        Ok(Settings { balance: config.balance, pool: Arc::new(pool), retry, passive, breaker, active })
    }
}

fn resolve_active(a: &ActiveHealthConfig) -> Result<ActiveSettings, String> {
    let path = match a.path.parse::<Uri>() {
        Ok(u) if a.path.starts_with('/') && u.scheme().is_none() => u,
        _ => return Err(format!("invalid health-check path `{}`: expected a path like `/healthz`", a.path)),
    };
    Ok(ActiveSettings {
        path,
        interval: a.interval.unwrap_or(DEFAULT_HEALTH_INTERVAL).get().max(Duration::from_millis(1)),
        timeout: a.timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT).get(),
        healthy_threshold: a.healthy_threshold.unwrap_or(DEFAULT_HEALTH_THRESHOLD).max(1),
        unhealthy_threshold: a.unhealthy_threshold.unwrap_or(DEFAULT_HEALTH_THRESHOLD).max(1),
        expect_status: a.expect_status.clone(),
    })
}
