//! Retry budget, in the manner of linkerd and Envoy: over a sliding window of
//! [`WINDOW_SECS`] one-second buckets, retries may add at most `percent`% of the
//! requests seen, plus a reserve of `min_per_second` retries per second of the
//! window. Retries therefore cannot multiply the load of an upstream that is down.
//!
//! Counters are atomics; a bucket is recycled by whoever first sees it stale. The
//! counts are approximate under races, which a budget tolerates.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// Length of the sliding window, in seconds.
pub const WINDOW_SECS: u64 = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// The second (since the budget's epoch, plus one) this bucket counts.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// One upstream's retry budget.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    percent: u64,
    min_per_second: u64,
    epoch: Instant,
    buckets: [Bucket; WINDOW_SECS as usize],
}

impl RetryBudget {
    pub fn new(percent: u32, min_per_second: u32) -> RetryBudget {
        RetryBudget {
            percent: u64::from(percent),
            min_per_second: u64::from(min_per_second),
            epoch: Instant::now(),
            buckets: Default::default(),
        }
    }

    /// Counts one original (non-retry) request, sent at `now` (a clock read the
    /// caller already made).
    pub fn record_request_at(&self, now: Instant) {
        self.current(self.second_at(now)).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false when the budget is spent.
    pub fn try_withdraw(&self) -> bool {
        let now = self.second_at(Instant::now());
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in &self.buckets {
            let s = b.second.load(Ordering::Acquire);
            if s != 0 && s + WINDOW_SECS > now {
                requests += b.requests.load(Ordering::Relaxed);
                retries += b.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = requests * self.percent / 100 + self.min_per_second * WINDOW_SECS;
        if retries >= allowed {
            return false;
        }
        self.current(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn second_at(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() + 1
    }

    /// The bucket of second `now`, emptied first if it last counted an older second.
    fn current(&self, now: u64) -> &Bucket {
        let b = &self.buckets[(now % WINDOW_SECS) as usize];
        let s = b.second.load(Ordering::Acquire);
        if s != now && b.second.compare_exchange(s, now, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn percent_of_requests_plus_reserve() {
        let b = RetryBudget::new(20, 0);
        assert!(!b.try_withdraw(), "no requests, no reserve: no retries");
        for _ in 0..50 {
            b.record_request_at(Instant::now());
        }
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 10);

        let b = RetryBudget::new(0, 2);
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 2 * WINDOW_SECS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides() {
        let b = RetryBudget::new(10, 0);
        for _ in 0..100 {
            b.record_request_at(Instant::now());
        }
        assert_eq!((0..100).filter(|_| b.try_withdraw()).count(), 10);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.try_withdraw(), "still inside the window");
        tokio::time::advance(Duration::from_secs(6)).await;
        for _ in 0..10 {
            b.record_request_at(Instant::now());
        }
        assert_eq!((0..100).filter(|_| b.try_withdraw()).count(), 1);
    }
}
