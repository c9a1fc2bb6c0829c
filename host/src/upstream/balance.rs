//! Target selection. Every algorithm is lock-free: the only shared state touched per
//! pick is an atomic counter (round robin position, tie-break rotation) and the
//! targets' in-flight counters.
//!
//! - Smooth weighted round robin (nginx's algorithm) is precomputed at build time into
//!   one cycle of target indexes; a pick is `cycle[counter++ % len]`, skipping targets
//!   that are unavailable.
//! - Least outstanding: the lowest in-flight count relative to weight, scanning from a
//!   rotating start so ties go round robin.
//! - Random: weighted random among the available targets.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::BalanceConfig;

/// Upper bound on one smooth-WRR cycle; larger weight sums are scaled down.
const MAX_CYCLE: u64 = 16_384;

/// A balancer over a fixed list of target weights.
#[derive(Debug)]
pub(crate) enum Balancer {
    RoundRobin { cycle: Box<[u32]>, next: AtomicUsize },
    LeastOutstanding { next: AtomicUsize },
    Random,
}

impl Balancer {
    pub fn new(kind: BalanceConfig, weights: &[u32]) -> Balancer {
        match kind {
            BalanceConfig::RoundRobin => {
                Balancer::RoundRobin { cycle: smooth_wrr_cycle(weights).into(), next: AtomicUsize::new(0) }
            }
            BalanceConfig::LeastOutstanding => Balancer::LeastOutstanding { next: AtomicUsize::new(0) },
            BalanceConfig::Random => Balancer::Random,
        }
    }

    /// Picks a target index among those for which `ok(i)` holds (weight-0 targets are
    /// never picked). `load(i)` is target `i`'s in-flight count.
    pub fn pick(
        &self,
        weights: &[u32],
        ok: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        let n = weights.len();
        if n == 0 {
            return None;
        }
        let ok = |i: usize| weights[i] > 0 && ok(i);
        match self {
            Balancer::RoundRobin { cycle, next } => {
                if cycle.is_empty() {
                    return None;
                }
                let start = next.fetch_add(1, Ordering::Relaxed);
                // Walk the cycle a little, then fall back to a linear scan so a pick
                // stays O(targets) even when most of them are down.
                let walk = cycle.len().min(2 * n);
                (0..walk)
                    .map(|k| cycle[(start + k) % cycle.len()] as usize)
                    .find(|&i| ok(i))
                    .or_else(|| (0..n).map(|k| (start + k) % n).find(|&i| ok(i)))
            }
            Balancer::LeastOutstanding { next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                let mut best: Option<(usize, u128, u128)> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    if !ok(i) {
                        continue;
                    }
                    let (l, w) = (load(i) as u128, u128::from(weights[i]));
                    // l / w < best_l / best_w  ⇔  l * best_w < best_l * w
                    if best.is_none_or(|(_, bl, bw)| l * bw < bl * w) {
                        best = Some((i, l, w));
                    }
                }
                best.map(|(i, _, _)| i)
            }
            Balancer::Random => {
                let total: u64 = (0..n).filter(|&i| ok(i)).map(|i| u64::from(weights[i])).sum();
                if total == 0 {
                    return None;
                }
                let mut r = fastrand::u64(0..total);
                let mut last = None;
                for i in (0..n).filter(|&i| ok(i)) {
                    let w = u64::from(weights[i]);
                    if r < w {
                        return Some(i);
                    }
                    r -= w;
                    last = Some(i);
                }
                // Availability changed between the two passes.
                last
            }
        }
    }
}

/// One full cycle of nginx's smooth weighted round robin: each step adds every
/// target's weight to its current value, picks the largest, and subtracts the total
/// from the winner. Weights are reduced by their gcd and scaled to [`MAX_CYCLE`].
fn smooth_wrr_cycle(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    if g == 0 {
        return Vec::new();
    }
    let mut w: Vec<u64> = weights.iter().map(|&x| u64::from(x) / g).collect();
    let sum: u64 = w.iter().sum();
    if sum > MAX_CYCLE {
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = (*x * MAX_CYCLE / sum).max(1);
        }
    }
    let total: i64 = w.iter().map(|&x| x as i64).sum();
    let mut current = vec![0i64; w.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        cycle.push(best as u32);
    }
    cycle
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(b: &Balancer, weights: &[u32], picks: usize, ok: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut c = vec![0; weights.len()];
        for _ in 0..picks {
            c[b.pick(weights, &ok, |_| 0).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn smooth_wrr_interleaves_by_weight() {
        assert_eq!(smooth_wrr_cycle(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_wrr_cycle(&[3, 1]), vec![0, 0, 1, 0]);
        assert_eq!(smooth_wrr_cycle(&[2, 2]), vec![0, 1]);
        assert_eq!(smooth_wrr_cycle(&[0, 4]), vec![1]);
        assert!(smooth_wrr_cycle(&[0, 0]).is_empty());
        let big = smooth_wrr_cycle(&[u32::MAX, 1, u32::MAX / 2]);
        assert!(big.len() as u64 <= MAX_CYCLE + 3 && big.contains(&1));
    }

    #[test]
    fn round_robin_is_exact_and_skips_unavailable() {
        let w = [3, 1];
        let b = Balancer::new(BalanceConfig::RoundRobin, &w);
        assert_eq!(counts(&b, &w, 400, |_| true), vec![300, 100]);
        assert_eq!(counts(&b, &w, 10, |i| i == 1), vec![0, 10]);
        assert_eq!(b.pick(&w, |_| false, |_| 0), None);
    }

    #[test]
    fn zero_weight_is_never_picked() {
        let w = [0, 1, 2];
        for kind in [BalanceConfig::RoundRobin, BalanceConfig::LeastOutstanding, BalanceConfig::Random] {
            let b = Balancer::new(kind, &w);
            assert_eq!(counts(&b, &w, 300, |_| true)[0], 0, "{kind:?}");
            assert_eq!(b.pick(&w, |i| i == 0, |_| 0), None, "{kind:?}");
        }
    }

    #[test]
    fn least_outstanding_prefers_lowest_relative_load_and_rotates_ties() {
        let w = [1, 1, 2];
        let b = Balancer::new(BalanceConfig::LeastOutstanding, &w);
        let loads = [3usize, 1, 3];
        // 1/1 < 3/2 < 3/1
        assert_eq!(b.pick(&w, |_| true, |i| loads[i]), Some(1));
        assert_eq!(b.pick(&w, |i| i != 1, |i| loads[i]), Some(2));
        let w = [1, 1, 1];
        let b = Balancer::new(BalanceConfig::LeastOutstanding, &w);
        assert_eq!(counts(&b, &w, 300, |_| true), vec![100, 100, 100]);
    }

    #[test]
    fn random_follows_weights() {
        let w = [3, 1];
        let b = Balancer::new(BalanceConfig::Random, &w);
        let c = counts(&b, &w, 20_000, |_| true);
        let share = c[0] as f64 / 20_000.0;
        assert!((0.72..0.78).contains(&share), "{c:?}");
    }
}
