//! The limits' state in the host kv store: one key per (scope, limit, client) holding
//! the GCRA theoretical arrival time and the key's clock (`"TAT CLOCK"`, decimal
//! nanoseconds), changed only with
//! `compare-and-swap` (one atomic Lua script on Redis, one locked map shard in
//! process). Every admission is one successful swap from the value it was computed
//! on, so concurrent requests — in one gateway or in several sharing Redis — can never
//! admit more than the limit: a lost swap means another request moved the TAT, and the
//! verdict is computed again on the new value.
//!
//! The key's clock is the latest `now` any admission of this key used; a request uses
//! `max(its now, the key's clock)`. Concurrent requests take their timestamps a little
//! before their swaps (and gateways sharing Redis have skewed clocks): without it, a
//! request stamped a millisecond before the one that filled a fresh bucket would see
//! that bucket as a millisecond less refilled, and be refused one unit early. Time
//! per key only moves forward, so the count is exact.
//!
//! Why not `increment`: an atomic add cannot express GCRA's `max(tat, now)` (an idle
//! client's bucket refills), and a counter per fixed window admits up to twice the
//! limit across a window boundary. The swap loop is bounded ([`MAX_SWAPS`]); since
//! refusals never write, a loop only retries while other requests are being admitted.

use std::time::Duration;

use crate::gcra::{Gcra, Verdict, ttl};

/// Compare-and-swap attempts per limit and request before giving up (the request is
/// then refused: never admit what could not be counted).
pub const MAX_SWAPS: usize = 32;
/// Attempts to give a unit back when a later limit refused the request.
pub const MAX_REFUND_SWAPS: usize = 4;

/// The kv operations the limiter needs; [`HostKv`] in the gateway, fakes in tests.
pub trait Store {
    /// The value of `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Replaces the value of `key` with `new` (expiring after `ttl`) if it is still
    /// `expected`; true if it was replaced.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl: Duration,
    ) -> Result<bool, String>;
}

/// The host's kv store (needs `grants: { kv: true }`).
#[derive(Debug, Clone, Copy)]
pub struct HostKv;

fn kv_error(e: sluice_plugin_sdk::kv::KvError) -> String {
    use sluice_plugin_sdk::kv::KvError;
    match e {
        KvError::Unavailable(why) => why,
        KvError::NotANumber => "kv: not a number".to_owned(),
    }
}

impl Store for HostKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        sluice_plugin_sdk::kv::get(key).map_err(kv_error)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl: Duration,
    ) -> Result<bool, String> {
        sluice_plugin_sdk::kv::compare_and_swap(key, expected, new, Some(ttl)).map_err(kv_error)
    }
}

/// What one limit decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted and counted.
    Admitted {
        /// Requests still admitted right now.
        remaining: u64,
        /// Nanoseconds until the bucket is full again.
        reset_ns: u64,
    },
    /// Refused (nothing written).
    Refused {
        /// Nanoseconds until one request would be admitted.
        retry_after_ns: u64,
        /// Nanoseconds until the bucket is full again.
        reset_ns: u64,
    },
    /// Every swap attempt lost to concurrent admissions.
    Contended,
}

/// A stored `(TAT, clock)`; anything unreadable counts as no state (and is
/// overwritten).
fn parse(v: Option<&[u8]>) -> Option<(u64, u64)> {
    let (tat, clock) = std::str::from_utf8(v?).ok()?.split_once(' ')?;
    Some((tat.parse().ok()?, clock.parse().ok()?))
}

fn encode(tat: u64, clock: u64) -> String {
    format!("{tat} {clock}")
}

/// Checks and counts one request at `now` against `gcra` under `key`.
pub fn admit(store: &impl Store, gcra: &Gcra, key: &str, now: u64) -> Result<Outcome, String> {
    let mut current = store.get(key)?;
    for _ in 0..MAX_SWAPS {
        let state = parse(current.as_deref());
        let now = state.map_or(now, |(_, clock)| clock.max(now));
        match gcra.check(state.map(|(tat, _)| tat), now) {
            Verdict::Refuse { retry_after_ns, reset_ns } => {
                return Ok(Outcome::Refused { retry_after_ns, reset_ns });
            }
            Verdict::Admit { tat, remaining, reset_ns } => {
                let new = encode(tat, now);
                if store.compare_and_swap(key, current.as_deref(), new.as_bytes(), ttl(reset_ns))? {
                    return Ok(Outcome::Admitted { remaining, reset_ns });
                }
                current = store.get(key)?;
            }
        }
    }
    Ok(Outcome::Contended)
}

/// Gives back the unit a request took from `gcra` under `key` (best effort: a
/// concurrent writer or an unreachable store leaves it taken).
pub fn refund(store: &impl Store, gcra: &Gcra, key: &str, now: u64) {
    for _ in 0..MAX_REFUND_SWAPS {
        let Ok(current) = store.get(key) else { return };
        let Some((stored, clock)) = parse(current.as_deref()) else { return };
        let (tat, keep_ns) = gcra.refund(stored, clock.max(now));
        let new = encode(tat, clock.max(now));
        match store.compare_and_swap(key, current.as_deref(), new.as_bytes(), ttl(keep_ns)) {
            Ok(false) => continue,
            Ok(true) | Err(_) => return,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use super::*;

    const S: u64 = 1_000_000_000;
    const NOW: u64 = 1_700_000_000 * S;

    /// An in-memory store whose swaps can be made to lose against a simulated
    /// concurrent writer, or to fail like an unreachable Redis.
    #[derive(Default)]
    pub(crate) struct TestStore {
        pub map: RefCell<HashMap<String, Vec<u8>>>,
        /// Before each of the next `n` swaps, another "request" moves the TAT by this.
        pub interfere: Cell<(usize, u64)>,
        pub down: Cell<bool>,
        pub swaps: Cell<usize>,
    }

    impl Store for TestStore {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            if self.down.get() {
                return Err("redis did not answer get within 50ms".into());
            }
            Ok(self.map.borrow().get(key).cloned())
        }

        fn compare_and_swap(
            &self,
            key: &str,
            expected: Option<&[u8]>,
            new: &[u8],
            _ttl: Duration,
        ) -> Result<bool, String> {
            if self.down.get() {
                return Err("redis did not answer compare-and-swap within 50ms".into());
            }
            self.swaps.set(self.swaps.get() + 1);
            let mut map = self.map.borrow_mut();
            let (n, by) = self.interfere.get();
            if n > 0 {
                self.interfere.set((n - 1, by));
                let (tat, clock) = parse(map.get(key).map(Vec::as_slice)).unwrap_or((NOW, NOW));
                map.insert(key.to_owned(), encode(tat + by, clock).into_bytes());
            }
            if map.get(key).map(Vec::as_slice) != expected {
                return Ok(false);
            }
            map.insert(key.to_owned(), new.to_vec());
            Ok(true)
        }
    }

    fn gcra(rate: u64, burst: u64) -> Gcra {
        Gcra::new(rate, Duration::from_secs(1), burst).unwrap()
    }

    #[test]
    fn admits_burst_then_refuses_without_writing() {
        let store = TestStore::default();
        let g = gcra(10, 3);
        for left in [2, 1, 0] {
            assert_eq!(
                admit(&store, &g, "k", NOW).unwrap(),
                Outcome::Admitted { remaining: left, reset_ns: (3 - left) * S / 10 }
            );
        }
        let swaps = store.swaps.get();
        assert!(matches!(admit(&store, &g, "k", NOW).unwrap(), Outcome::Refused { .. }));
        assert_eq!(store.swaps.get(), swaps, "a refusal does not write");
    }

    #[test]
    fn a_swap_lost_to_a_concurrent_admission_is_recomputed_on_the_new_value() {
        let store = TestStore::default();
        let g = gcra(10, 3);
        // Two other requests get in between our read and our swap: we take the last unit.
        store.interfere.set((2, S / 10));
        assert_eq!(
            admit(&store, &g, "k", NOW).unwrap(),
            Outcome::Admitted { remaining: 0, reset_ns: 3 * S / 10 }
        );
        // And then the bucket is empty for everyone.
        assert!(matches!(admit(&store, &g, "k", NOW).unwrap(), Outcome::Refused { .. }));
    }

    #[test]
    fn endless_contention_gives_up_after_a_bounded_number_of_swaps() {
        let store = TestStore::default();
        // Before every swap another request moves the TAT by 1ns: every swap loses.
        let g = gcra(1_000_000, 1_000_000);
        store.interfere.set((usize::MAX, 1));
        assert_eq!(admit(&store, &g, "k", NOW).unwrap(), Outcome::Contended);
        assert_eq!(store.swaps.get(), MAX_SWAPS);
    }

    #[test]
    fn an_unreachable_store_is_an_error_and_a_refund_gives_a_unit_back() {
        let store = TestStore::default();
        let g = gcra(10, 2);
        admit(&store, &g, "k", NOW).unwrap();
        admit(&store, &g, "k", NOW).unwrap();
        refund(&store, &g, "k", NOW);
        assert!(matches!(admit(&store, &g, "k", NOW).unwrap(), Outcome::Admitted { remaining: 0, .. }));
        store.down.set(true);
        assert!(admit(&store, &g, "k", NOW).unwrap_err().contains("within 50ms"));
        refund(&store, &g, "k", NOW); // no panic, no effect
    }

    #[test]
    fn a_request_stamped_before_the_one_that_filled_a_fresh_bucket_still_gets_its_unit() {
        let store = TestStore::default();
        let g = gcra(10, 3);
        // The first admission is stamped 1ms after the two that follow it.
        assert!(matches!(admit(&store, &g, "k", NOW + 1_000_000).unwrap(), Outcome::Admitted { .. }));
        assert!(matches!(admit(&store, &g, "k", NOW).unwrap(), Outcome::Admitted { .. }));
        assert!(matches!(admit(&store, &g, "k", NOW).unwrap(), Outcome::Admitted { remaining: 0, .. }));
        assert!(matches!(admit(&store, &g, "k", NOW).unwrap(), Outcome::Refused { .. }));
        assert_eq!(
            parse(store.map.borrow().get("k").map(Vec::as_slice)),
            Some((NOW + 1_000_000 + 3 * S / 10, NOW + 1_000_000))
        );
    }

    #[test]
    fn garbage_in_the_store_counts_as_no_state() {
        let store = TestStore::default();
        store.map.borrow_mut().insert("k".into(), b"not a number".to_vec());
        assert!(matches!(admit(&store, &gcra(1, 1), "k", NOW).unwrap(), Outcome::Admitted { .. }));
    }
}
