//! Worker runtimes: one single-threaded tokio runtime per worker thread.
//!
//! With `--workers N` every listener is bound N times on the same address with
//! `SO_REUSEPORT`; the kernel spreads new connections over the N sockets, and worker
//! `k` accepts from socket `k` and serves those connections (and the upstream requests
//! they make) on its own thread from start to end. Nothing on the request path wakes
//! another thread: that is what a work-stealing runtime pays for on every request
//! (measured in BENCHMARKS.md, P1: a single-threaded runtime spends ~27% less CPU per
//! request). What the workers share — the snapshot, plugin pools, upstream pools,
//! counters, rate-limit windows — is shared through the same atomics and locks a
//! multi-threaded runtime would use, so a limit stays exact across workers.
//!
//! The control plane (reloads, the admin listener, health checks, signals) runs on the
//! runtime that started the gateway.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The most workers a gateway runs (`--workers` is checked against it).
pub const MAX: usize = 256;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running on this thread, if this is a worker thread.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

static MOST_STARTED: AtomicUsize = AtomicUsize::new(0);

/// The most workers any gateway of this process started (0 if none): how many
/// per-worker lists a structure made now should have.
pub fn most_started() -> usize {
    MOST_STARTED.load(Ordering::Relaxed)
}

/// Running worker threads. Dropping this stops them; tasks still on them (pooled
/// upstream connections, say) are cancelled.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` (at least one, at most [`MAX`]) worker threads, each running its
    /// own runtime.
    pub fn start(n: usize) -> io::Result<Workers> {
        if n > MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("at most {MAX} workers")));
        }
        MOST_STARTED.fetch_max(n.max(1), Ordering::Relaxed);
        let mut workers = Workers { handles: Vec::new(), stops: Vec::new() };
        for index in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(rt.handle().clone());
            workers.stops.push(stop);
            std::thread::Builder::new().name(format!("sluice-worker-{index}")).spawn(move || {
                INDEX.with(|i| i.set(Some(index)));
                // Both a stop and the `Workers` being dropped end the wait; till
                // then the worker gives back its free memory once a second.
                rt.block_on(async move {
                    tokio::pin!(stopped);
                    let mut tick = tokio::time::interval(crate::trim::WORKER_EVERY);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            _ = tick.tick() => crate::trim::worker_tick(),
                        }
                    }
                });
            })?;
        }
        Ok(workers)
    }

    /// The workers' runtimes, in index order.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are none (never, once started).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_runs_its_tasks_on_its_own_thread_and_knows_its_index() {
        let workers = Workers::start(3).unwrap();
        assert_eq!(workers.len(), 3);
        let mut seen = Vec::new();
        for (k, h) in workers.handles().iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            h.spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send((current(), name)).unwrap();
            });
            let (index, name) = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
            assert_eq!(index, Some(k));
            seen.push(name.unwrap());
        }
        assert_eq!(seen, ["sluice-worker-0", "sluice-worker-1", "sluice-worker-2"]);
        assert_eq!(current(), None, "the test thread is not a worker");
    }

    /// Each worker gives back its free memory once a second, from its start on.
    #[test]
    fn workers_tick_to_give_back_free_memory() {
        let before = crate::trim::worker_ticks();
        let _workers = Workers::start(2).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while crate::trim::worker_ticks() < before + 2 {
            assert!(std::time::Instant::now() < deadline, "no worker ticked");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
