//! Circuit breaker per target, lock-free: closed → open after N consecutive failures
//! → after `open_for`, half-open lets exactly one probe request through → its success
//! closes the circuit, its failure re-opens it.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::settings::BreakerSettings;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The state of a target's circuit, as reported to the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests flow.
    Closed,
    /// The target gets no requests until the open period ends.
    Open,
    /// One probe request is in flight; its outcome decides.
    HalfOpen,
}

/// What [`Breaker::try_acquire`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A normal request through a closed circuit.
    Normal,
    /// The single half-open probe: its outcome must be reported.
    Probe,
}

/// One target's breaker. Times are milliseconds on the upstream's clock.
#[derive(Debug)]
pub(crate) struct Breaker {
    settings: Option<BreakerSettings>,
    state: AtomicU8,
    failures: AtomicU32,
    opened_at: AtomicU64,
}

impl Breaker {
    pub fn new(settings: Option<BreakerSettings>) -> Breaker {
        Breaker {
            settings,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
        }
    }

    /// The current state (an open circuit whose period ended still reads `Open` until
    /// a request takes the probe).
    pub fn state(&self) -> CircuitState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => CircuitState::Closed,
            OPEN => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    /// Whether a request could be admitted now (read-only: the balancer's filter).
    pub fn may_admit(&self, now_ms: u64) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN => self.open_period_over(now_ms),
            _ => false,
        }
    }

    /// Admits a request, taking the half-open probe slot when the open period is over.
    /// `None`: the circuit is open or its probe is already out.
    pub fn try_acquire(&self, now_ms: u64) -> Option<Admission> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Some(Admission::Normal),
            OPEN if self.open_period_over(now_ms) => self
                .state
                .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                .ok()
                .map(|_| Admission::Probe),
            _ => None,
        }
    }

    /// Reports a successful exchange.
    pub fn on_success(&self, admission: Admission) {
        if self.settings.is_none() {
            return;
        }
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if admission == Admission::Probe {
            self.state.store(CLOSED, Ordering::Release);
        }
    }

    /// Reports a failed exchange; `true` when it opened the circuit (the threshold
    /// was reached, or the half-open probe failed).
    pub fn on_failure(&self, admission: Admission, now_ms: u64) -> bool {
        let Some(s) = self.settings else { return false };
        if admission == Admission::Probe {
            self.open(now_ms);
            return true;
        }
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= s.failures
            && self.state.compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            self.opened_at.store(now_ms, Ordering::Release);
            self.failures.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// The probe was abandoned without an outcome (the client went away): let the
    /// next request probe again.
    pub fn abandon_probe(&self) {
        if let Some(s) = self.settings {
            let expired = self.opened_at.load(Ordering::Acquire).saturating_sub(duration_ms(s.open_for));
            self.opened_at.store(expired, Ordering::Release);
            self.state.store(OPEN, Ordering::Release);
        }
    }

    fn open(&self, now_ms: u64) {
        self.opened_at.store(now_ms, Ordering::Release);
        self.failures.store(0, Ordering::Relaxed);
        self.state.store(OPEN, Ordering::Release);
    }

    fn open_period_over(&self, now_ms: u64) -> bool {
        let Some(s) = self.settings else { return true };
        now_ms >= self.opened_at.load(Ordering::Acquire).saturating_add(duration_ms(s.open_for))
    }
}

pub(crate) fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(Some(BreakerSettings { failures: 3, open_for: Duration::from_millis(100) }))
    }

    #[test]
    fn opens_after_consecutive_failures_then_half_opens_and_closes() {
        let b = breaker();
        for _ in 0..2 {
            b.on_failure(Admission::Normal, 10);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        b.on_success(Admission::Normal);
        for _ in 0..2 {
            b.on_failure(Admission::Normal, 10);
        }
        assert_eq!(b.state(), CircuitState::Closed, "a success resets the count");
        b.on_failure(Admission::Normal, 10);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.may_admit(50));
        assert_eq!(b.try_acquire(50), None);
        assert!(b.may_admit(110));
        assert_eq!(b.try_acquire(110), Some(Admission::Probe));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.try_acquire(111), None, "exactly one probe");
        b.on_success(Admission::Probe);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.try_acquire(112), Some(Admission::Normal));
    }

    #[test]
    fn failed_probe_reopens_and_abandoned_probe_is_retaken() {
        let b = breaker();
        for _ in 0..3 {
            b.on_failure(Admission::Normal, 0);
        }
        assert_eq!(b.try_acquire(100), Some(Admission::Probe));
        b.on_failure(Admission::Probe, 100);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.try_acquire(150), None);
        assert_eq!(b.try_acquire(200), Some(Admission::Probe));
        b.abandon_probe();
        assert_eq!(b.try_acquire(201), Some(Admission::Probe));
    }

    #[test]
    fn disabled_breaker_never_opens() {
        let b = Breaker::new(None);
        for _ in 0..100 {
            b.on_failure(Admission::Normal, 0);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
