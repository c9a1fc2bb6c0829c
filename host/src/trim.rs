//! Giving freed heap memory back to the operating system.
//!
//! glibc's malloc keeps what is freed for reuse, and only returns memory at the top of
//! its heaps by itself. A parked HTTP/1 connection (`listener/h1.rs`) frees hyper's
//! buffers (~17 KiB), scattered between the allocations that stay, where glibc would
//! keep them resident for good: 1,000 parked connections would still show their
//! buffers in the RSS. So the listeners count what they release, and the gateway's
//! once-a-second housekeeping asks glibc to return whole free pages (`malloc_trim`)
//! after a batch of them: the work (a walk over the free lists, a few `madvise` calls)
//! happens at most once a second and only after connections parked, never on the
//! request path. mimalloc (the binary's default allocator, `allocator.rs`) returns
//! freed pages itself, at a thread's next allocation; a worker with nothing more to
//! do makes none, so each worker thread also asks it once a second
//! ([`worker_tick`]). `malloc_trim` is then a no-op on glibc's unused heap. Tests and
//! builds with `--no-default-features` allocate with glibc and rely on it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How often each worker thread runs [`worker_tick`].
pub const WORKER_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Worker ticks so far, all workers together (for tests).
static WORKER_TICKS: AtomicU64 = AtomicU64::new(0);

/// Run on each worker thread every [`WORKER_EVERY`]: gives back the memory that
/// thread's allocator holds free ([`give_back_thread_memory`]).
pub fn worker_tick() {
    WORKER_TICKS.fetch_add(1, Relaxed);
    give_back_thread_memory();
}

/// Gives back the memory the calling thread's allocator holds free (mimalloc's
/// heaps are per thread; `crate::allocator::collect`). glibc's arenas are trimmed by
/// [`trim_if_due`] instead.
pub fn give_back_thread_memory() {
    #[cfg(feature = "mimalloc")]
    crate::allocator::collect();
}

/// How many [`worker_tick`]s have run.
pub fn worker_ticks() -> u64 {
    WORKER_TICKS.load(Relaxed)
}

/// Releases counted since the last trim.
static RELEASED: Batch = Batch(AtomicU64::new(0));

/// How many releases make a trim worth its walk over the heap.
const BATCH: u64 = 32;

/// A connection let go of its buffers.
pub fn released() {
    RELEASED.0.fetch_add(1, Relaxed);
}

/// Returns freed memory to the OS if enough was released since the last call;
/// whether it did.
pub fn trim_if_due() -> bool {
    let due = RELEASED.take();
    if due {
        release_free_pages();
    }
    due
}

/// A count of releases that comes due at [`BATCH`].
struct Batch(AtomicU64);

impl Batch {
    /// Whether a batch is due; if so the count starts again.
    fn take(&self) -> bool {
        if self.0.load(Relaxed) < BATCH {
            return false;
        }
        self.0.store(0, Relaxed);
        true
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_pages() {
    // SAFETY: `malloc_trim` has no preconditions; it locks each arena while it walks it.
    #[allow(unsafe_code)]
    unsafe extern "C" {
        safe fn malloc_trim(pad: usize) -> i32;
    }
    malloc_trim(0);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_pages() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_waits_for_a_batch_of_releases_and_starts_counting_again() {
        let b = Batch(AtomicU64::new(0));
        b.0.store(BATCH - 1, Relaxed);
        assert!(!b.take(), "not yet a batch");
        b.0.fetch_add(1, Relaxed);
        assert!(b.take(), "a batch");
        assert!(!b.take(), "counting starts again");
        // The real call path runs (and on glibc, trims) without harm.
        for _ in 0..BATCH {
            released();
        }
        trim_if_due();
    }
}
