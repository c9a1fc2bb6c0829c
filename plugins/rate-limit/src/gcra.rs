//! GCRA, the generic cell rate algorithm: a token bucket kept as one number per client,
//! the *theoretical arrival time* (TAT) of the next request if clients sent exactly at
//! the configured rate. Pure functions of the stored TAT and `now` (nanoseconds since
//! the Unix epoch), so they are tested without a clock or a store.
//!
//! With `rate` requests per `per` the emission interval is `T = per / rate`; a bucket of
//! `burst` requests is `capacity = burst × T` of time. A request at `now` is admitted if,
//! after it, the TAT is at most `capacity` ahead of `now`:
//!
//! ```text
//! tat  = max(stored TAT, now)         (an idle client's bucket is full)
//! next = tat + T
//! next − now ≤ capacity  →  admit, store next (it expires when next passes)
//! otherwise              →  refuse, retry after next − capacity − now
//! ```

use std::time::Duration;

/// Largest bucket (`burst × per / rate`) accepted: 100 years of nanoseconds keeps every
/// sum with a current timestamp far below `u64::MAX`.
const MAX_CAPACITY_NS: u64 = 100 * 366 * 24 * 3600 * 1_000_000_000;

/// One limit's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Requests per period, as configured (for `RateLimit-Policy`).
    pub rate: u64,
    /// The period in seconds, as configured.
    pub per_secs: u64,
    /// The emission interval `T` in nanoseconds.
    pub interval_ns: u64,
    /// The bucket, `burst × T`, in nanoseconds.
    pub capacity_ns: u64,
}

/// What one request gets from one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted: store `tat`.
    Admit {
        /// The new TAT to store.
        tat: u64,
        /// Requests that would still be admitted right now.
        remaining: u64,
        /// Nanoseconds until the bucket is full again (also the key's TTL).
        reset_ns: u64,
    },
    /// Refused: nothing changes.
    Refuse {
        /// Nanoseconds until one request would be admitted.
        retry_after_ns: u64,
        /// Nanoseconds until the bucket is full again.
        reset_ns: u64,
    },
}

impl Gcra {
    /// `rate` requests per `per`, up to `burst` at once.
    pub fn new(rate: u64, per: Duration, burst: u64) -> Result<Gcra, String> {
        let per_ns = u64::try_from(per.as_nanos()).map_err(|_| "`per` is too long".to_owned())?;
        let interval_ns = per_ns / rate;
        if interval_ns == 0 {
            return Err("`rate` is more than one request per nanosecond".into());
        }
        let capacity_ns = interval_ns
            .checked_mul(burst)
            .filter(|c| *c <= MAX_CAPACITY_NS)
            .ok_or_else(|| "`burst` is too large: the bucket would take over 100 years to fill".to_owned())?;
        Ok(Gcra { rate, per_secs: per.as_secs(), interval_ns, capacity_ns })
    }

    /// The verdict on one request at `now`, given the stored TAT (`None`: no state,
    /// the bucket is full).
    pub fn check(&self, stored: Option<u64>, now: u64) -> Verdict {
        let tat = stored.map_or(now, |t| t.max(now));
        let next = tat.saturating_add(self.interval_ns);
        let ahead = next - now;
        if ahead <= self.capacity_ns {
            Verdict::Admit {
                tat: next,
                remaining: (self.capacity_ns - ahead) / self.interval_ns,
                reset_ns: ahead,
            }
        } else {
            Verdict::Refuse { retry_after_ns: ahead - self.capacity_ns, reset_ns: tat - now }
        }
    }

    /// The TAT after giving back one admitted request (when a later limit refused it),
    /// and how long it must be kept.
    pub fn refund(&self, stored: u64, now: u64) -> (u64, u64) {
        let tat = stored.saturating_sub(self.interval_ns).max(now);
        (tat, tat - now)
    }
}

/// Nanoseconds as whole seconds, rounded up (`Retry-After`, `t=`).
pub fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// A key's time to live: `ns` rounded up to whole milliseconds (the kv API's unit),
/// at least one (a TTL of 0 would delete the key on Redis).
pub fn ttl(ns: u64) -> Duration {
    Duration::from_millis(ns.div_ceil(1_000_000).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const NOW: u64 = 1_700_000_000 * S;

    fn gcra(rate: u64, per_secs: u64, burst: u64) -> Gcra {
        Gcra::new(rate, Duration::from_secs(per_secs), burst).unwrap()
    }

    /// Runs `n` requests at `now`, threading the TAT; returns how many were admitted.
    fn burst_at(g: &Gcra, tat: &mut Option<u64>, now: u64, n: usize) -> usize {
        let mut admitted = 0;
        for _ in 0..n {
            if let Verdict::Admit { tat: t, .. } = g.check(*tat, now) {
                *tat = Some(t);
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn a_full_bucket_admits_exactly_burst_then_one_per_interval() {
        let g = gcra(10, 1, 20);
        let mut tat = None;
        assert_eq!(burst_at(&g, &mut tat, NOW, 100), 20);
        // 100ms later exactly one more unit has come back.
        assert_eq!(burst_at(&g, &mut tat, NOW + S / 10, 100), 1);
        assert_eq!(burst_at(&g, &mut tat, NOW + S / 10 + S / 20, 100), 0);
        // After a full second, ten.
        assert_eq!(burst_at(&g, &mut tat, NOW + S + S / 10, 100), 10);
    }

    #[test]
    fn burst_defaults_to_rate_and_a_quiet_client_gets_its_whole_burst_back() {
        let g = gcra(5, 60, 5);
        let mut tat = None;
        assert_eq!(burst_at(&g, &mut tat, NOW, 9), 5);
        assert_eq!(
            burst_at(&g, &mut tat, NOW + 3600 * S, 9),
            5,
            "an hour later the bucket is full, not fuller"
        );
    }

    #[test]
    fn remaining_retry_after_and_reset() {
        let g = gcra(10, 1, 10);
        match g.check(None, NOW) {
            Verdict::Admit { remaining, reset_ns, tat } => {
                assert_eq!(remaining, 9);
                assert_eq!(reset_ns, S / 10);
                assert_eq!(tat, NOW + S / 10);
            }
            v => panic!("{v:?}"),
        }
        // Bucket empty: TAT one second ahead.
        match g.check(Some(NOW + S), NOW) {
            Verdict::Refuse { retry_after_ns, reset_ns } => {
                assert_eq!(retry_after_ns, S / 10);
                assert_eq!(reset_ns, S);
            }
            v => panic!("{v:?}"),
        }
        // The last unit: admitted with nothing left.
        assert!(matches!(g.check(Some(NOW + S - S / 10), NOW), Verdict::Admit { remaining: 0, .. }));
    }

    #[test]
    fn a_stale_tat_counts_as_a_full_bucket() {
        let g = gcra(2, 1, 2);
        assert_eq!(g.check(Some(NOW - 50 * S), NOW), g.check(None, NOW));
    }

    #[test]
    fn refund_gives_one_unit_back_but_never_below_now() {
        let g = gcra(10, 1, 10);
        assert_eq!(g.refund(NOW + S / 2, NOW), (NOW + S / 2 - S / 10, S / 2 - S / 10));
        assert_eq!(g.refund(NOW + S / 20, NOW), (NOW, 0));
    }

    #[test]
    fn daily_limits_and_odd_rates() {
        let g = gcra(3, 1, 3);
        assert_eq!(g.interval_ns, 333_333_333);
        let mut tat = None;
        assert_eq!(burst_at(&g, &mut tat, NOW, 10), 3);
        let day = gcra(10_000, 86_400, 10_000);
        let mut tat = None;
        assert_eq!(burst_at(&day, &mut tat, NOW, 10_050), 10_000);
    }

    #[test]
    fn impossible_parameters_are_refused() {
        assert!(Gcra::new(2_000_000_000, Duration::from_secs(1), 1).is_err());
        assert!(Gcra::new(1, Duration::from_secs(366 * 86_400), 200).is_err());
    }

    #[test]
    fn rounding() {
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(S), 1);
        assert_eq!(ceil_secs(S + 1), 2);
        assert_eq!(ttl(1), Duration::from_millis(1));
        assert_eq!(ttl(1_500_001), Duration::from_millis(2));
    }
}
