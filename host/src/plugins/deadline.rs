//! A plugin call's deadline, and what a long call does to the requests around it.
//!
//! The engine's epoch advances every [`EPOCH_TICK`]. Before each call the chain arms
//! the instance ([`CallTiming::arm`]) for a callback at the next tick, so the calls
//! shorter than a tick (nearly all) cost nothing here. At each tick a call is still
//! running, [`on_tick`] compares the time it has *run* (since it started, less what
//! it waited on the host and what it yielded to other requests) with its deadline:
//! past it the call traps ([`Trap::Interrupt`], reported as the deadline). Before it:
//!
//! - on the asynchronous path the call yields to the runtime, so the requests that
//!   share its worker thread run in between: a call that loops delays them by about
//!   a tick, not by its whole deadline;
//! - on the synchronous path a call cannot yield: one that has used [`LONG_CALL`] of
//!   its thread's CPU time after its first tick marks its entry ([`CallTiming::long`]), and the entry's instances are made for
//!   the asynchronous path from then on (see [`super::pool`]). So a plugin that loops
//!   blocks its worker once per config generation, not on every request.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use wasmtime::{StoreContextMut, Trap, UpdateDeadline};

use super::engine::EPOCH_TICK;
use super::state::PluginState;

/// A call on the synchronous path that has run this long moves its entry to the
/// asynchronous path, where long calls yield.
pub const LONG_CALL: Duration = EPOCH_TICK;

/// A running call yields at most this often (a call resumed after waiting on the
/// host does not yield again at once).
const YIELD_EVERY: Duration = Duration::from_millis(1);

/// The clock of the call an instance is running.
pub struct CallTiming {
    /// When the call started.
    started: Instant,
    /// How long it may run: `limits.deadline`, or `limits.configure_deadline` while
    /// the instance is made.
    deadline: Duration,
    /// Time spent waiting on the host (outbound HTTP, Redis): not running.
    host_wait: Duration,
    /// Nanoseconds spent yielded to other requests: not running either. Added to by
    /// the yield's future, which outlives the callback that made it.
    yielded: Arc<AtomicU64>,
    /// Run time at the last yield.
    ran_at_yield: Duration,
    /// The thread's CPU time at the call's first tick, on the synchronous path. A
    /// call is long when it has used [`LONG_CALL`] of CPU since: the time the OS gave
    /// other threads (a preempted short call) does not count.
    cpu_at_tick: Option<Duration>,
    /// True on the asynchronous path, where a long call yields.
    yields: bool,
    /// True while the instance is being made: a slow language runtime's start-up
    /// says nothing about its calls, so it does not move the entry.
    loading: bool,
    /// The entry's mark, set by a long call on the synchronous path.
    long: Arc<AtomicBool>,
}

impl CallTiming {
    /// The timing of a new instance of an entry whose mark is `long`, on the
    /// asynchronous path when `yields`, timing its start-up against `deadline`.
    pub fn loading(long: Arc<AtomicBool>, yields: bool, deadline: Duration) -> CallTiming {
        CallTiming {
            started: Instant::now(),
            deadline,
            host_wait: Duration::ZERO,
            yielded: Arc::default(),
            ran_at_yield: Duration::ZERO,
            cpu_at_tick: None,
            yields,
            loading: true,
            long,
        }
    }

    /// Starts a call at `started` that may run for `deadline`. The store must then be
    /// given an epoch deadline of one tick.
    pub fn arm(&mut self, started: Instant, deadline: Duration) {
        self.started = started;
        self.deadline = deadline;
        self.host_wait = Duration::ZERO;
        self.ran_at_yield = Duration::ZERO;
        self.cpu_at_tick = None;
        self.loading = false;
        if self.yields {
            self.yielded.store(0, Relaxed);
        }
    }

    /// Counts `waited` as time the call did not run.
    pub fn waited(&mut self, waited: Duration) {
        self.host_wait += waited;
    }

    /// How long the call has run so far.
    fn ran(&self) -> Duration {
        let yielded = Duration::from_nanos(self.yielded.load(Relaxed));
        self.started.elapsed().saturating_sub(self.host_wait).saturating_sub(yielded)
    }
}

/// The epoch callback of every plugin store (see the module's documentation).
pub fn on_tick(mut ctx: StoreContextMut<'_, PluginState>) -> wasmtime::Result<UpdateDeadline> {
    let state = ctx.data_mut();
    let t = &mut state.timing;
    let ran = t.ran();
    if ran >= t.deadline {
        return Err(Trap::Interrupt.into());
    }
    if t.yields {
        if ran.saturating_sub(t.ran_at_yield) < YIELD_EVERY {
            return Ok(UpdateDeadline::Continue(1));
        }
        t.ran_at_yield = ran;
        state.env.stats.record_yield();
        let yielded = Arc::clone(&t.yielded);
        return Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                let paused = Instant::now();
                tokio::task::yield_now().await;
                let nanos = u64::try_from(paused.elapsed().as_nanos()).unwrap_or(u64::MAX);
                yielded.fetch_add(nanos, Relaxed);
            }),
        ));
    }
    if t.loading || t.long.load(Relaxed) {
        return Ok(UpdateDeadline::Continue(1));
    }
    let cpu = thread_cpu();
    let since = *t.cpu_at_tick.get_or_insert(cpu);
    if cpu.saturating_sub(since) >= LONG_CALL && !t.long.swap(true, Relaxed) {
        tracing::warn!(
            plugin = %state.env.plugin,
            route = %state.route,
            "a call ran past {LONG_CALL:?} on the synchronous path, blocking its worker thread; \
             this entry's calls now take the asynchronous path, where long calls yield to other requests"
        );
    }
    Ok(UpdateDeadline::Continue(1))
}

/// The CPU time the current thread has used. A call on the synchronous path runs on
/// its caller's thread from start to end, so the difference of two readings is what
/// it ran. Zero when the clock is unavailable (then no call is ever called long).
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}
