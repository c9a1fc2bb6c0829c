//! Target health. Passive: consecutive failures seen in live traffic eject a target for
//! a while. Active: a background task per target probes `GET path` every interval and
//! flips the target's state after enough consecutive results; it holds only a `Weak`
//! to the upstream and is aborted when the upstream is dropped.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use http::{HeaderValue, Method, Request};
use http_body_util::BodyExt;
use tracing::{debug, info};

use super::Shared;
use super::breaker::duration_ms;
use super::settings::{ActiveSettings, PassiveSettings};
use crate::body;

/// Passive health of one target. Times are milliseconds on the upstream's clock.
#[derive(Debug)]
pub(crate) struct Passive {
    settings: PassiveSettings,
    failures: AtomicU32,
    /// `0`: not ejected; otherwise the time the ejection ends.
    ejected_until: AtomicU64,
}

impl Passive {
    pub fn new(settings: PassiveSettings) -> Passive {
        Passive { settings, failures: AtomicU32::new(0), ejected_until: AtomicU64::new(0) }
    }

    /// Whether the target is ejected at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && now_ms < until
    }

    pub fn on_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; returns true when it ejected the target.
    pub fn on_failure(&self, now_ms: u64) -> bool {
        let limit = self.settings.failures;
        if limit == 0 || self.is_ejected(now_ms) {
            return false;
        }
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n < limit {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let until = now_ms.saturating_add(duration_ms(self.settings.eject_for)).max(1);
        self.ejected_until.store(until, Ordering::Release);
        true
    }
}

/// Active health of one target: the verdict of the probes (healthy until proven not).
#[derive(Debug)]
pub(crate) struct Active {
    healthy: AtomicBool,
}

impl Active {
    pub fn new() -> Active {
        Active { healthy: AtomicBool::new(true) }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn set(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::AcqRel) != healthy
    }
}

/// Consecutive probe results and the thresholds that flip the state.
#[derive(Debug, Default)]
struct Streak {
    ok: u32,
    failed: u32,
}

/// Spawns one probe loop per target; returns their abort handles.
pub(crate) fn spawn_probes(shared: &Arc<Shared>, settings: &ActiveSettings) -> Vec<tokio::task::AbortHandle> {
    (0..shared.targets.len())
        .map(|i| tokio::spawn(probe_loop(Arc::downgrade(shared), i, settings.clone())).abort_handle())
        .collect()
}

async fn probe_loop(shared: Weak<Shared>, index: usize, settings: ActiveSettings) {
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut streak = Streak::default();
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let ok = probe(&shared, index, &settings).await;
        let target = &shared.targets[index];
        if ok {
            streak = Streak { ok: streak.ok + 1, failed: 0 };
            if streak.ok >= settings.healthy_threshold && target.active.set(true) {
                info!(upstream = %shared.name, target = %target.address, "target passed health checks");
            }
        } else {
            streak = Streak { ok: 0, failed: streak.failed + 1 };
            if streak.failed >= settings.unhealthy_threshold && target.active.set(false) {
                info!(upstream = %shared.name, target = %target.address, "target failed health checks");
            }
        }
    }
}

/// One probe: `GET path`, the whole exchange (connect, head, body) within the timeout.
async fn probe(shared: &Shared, index: usize, settings: &ActiveSettings) -> bool {
    let target = &shared.targets[index];
    let mut req = Request::new(body::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = settings.path.clone();
    if let Ok(host) = HeaderValue::from_str(&target.address) {
        req.headers_mut().insert(http::header::HOST, host);
    }
    let mut req = super::Outgoing::new(req);
    target.pool.prepare(&mut req.head);
    let exchange = async {
        let (resp, _) = target
            .pool
            .send(req, false, tokio::time::Instant::now())
            .await
            .map_err(|e| e.error.to_string())?;
        let status = resp.status();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(settings.timeout, exchange).await {
        Ok(Ok(status)) if settings.is_expected(status) => true,
        Ok(Ok(status)) => {
            debug!(target = %target.address, status = status.as_u16(), "health check got an unexpected status");
            false
        }
        Ok(Err(error)) => {
            debug!(target = %target.address, %error, "health check failed");
            false
        }
        Err(_) => {
            debug!(target = %target.address, "health check timed out");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_and_readmits() {
        let p = Passive::new(PassiveSettings { failures: 3, eject_for: Duration::from_millis(200) });
        assert!(!p.on_failure(1));
        assert!(!p.on_failure(2));
        p.on_success();
        assert!(!p.on_failure(3));
        assert!(!p.on_failure(4));
        assert!(p.on_failure(5));
        assert!(p.is_ejected(5));
        assert!(p.is_ejected(204));
        assert!(!p.is_ejected(205));
    }

    #[test]
    fn zero_failures_disables_ejection() {
        let p = Passive::new(PassiveSettings { failures: 0, eject_for: Duration::from_secs(1) });
        for t in 0..10 {
            assert!(!p.on_failure(t));
        }
    }
}
