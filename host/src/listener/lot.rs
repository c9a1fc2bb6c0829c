//! Parked HTTP/1 connections kept without a task.
//!
//! An idle plaintext HTTP/1 connection that parks (`h1.rs`) leaves its task: the task
//! ends, and the socket moves here, into its listener's lot, a table of sockets
//! waited on through one epoll set of its own. What a parked connection then costs
//! the process is one row of this table. Parking inside the task instead kept the
//! task, its boxed states and the connection's small records alive, allocated when
//! the connection was accepted, in between the buffers it had freed: glibc could not
//! give those pages back, and an idle connection still cost ~7.7 KiB of RSS
//! (BENCHMARKS.md, P6). nginx keeps an idle connection in a few hundred bytes the
//! same way.
//!
//! The lot belongs to the accept loop (`serve.rs`) of one listener on one worker. A
//! socket that turns readable (the client's next request, or its close) is handed
//! back and gets a fresh task; a socket whose idle timeout passes, or that is still
//! parked at shutdown, is closed. TLS connections keep parking in their task: their
//! session state does not fit in a row.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use tokio::io::unix::AsyncFd;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::ListenerSpec;
use crate::observability::metrics::{OpenConnection, ParkedConnection};

/// A connection that left its task to wait for its next request. It holds what a
/// new task needs inline rather than the old task's `ConnInfo`, which was allocated at
/// accept among the buffers since freed and would keep their page.
#[derive(Debug)]
pub(super) struct Idle {
    pub socket: std::net::TcpStream,
    /// When its idle timeout passes.
    pub until: Instant,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The listener's settings as of when the connection was accepted.
    pub spec: Arc<ListenerSpec>,
    /// Its count among the listener's open connections.
    pub open: OpenConnection,
}

/// A row of the lot: the connection, its slot under the listener's connection limit,
/// and its count among the parked.
#[derive(Debug)]
pub(super) struct Parked {
    pub idle: Idle,
    pub permit: OwnedSemaphorePermit,
    _counted: ParkedConnection,
}

impl Parked {
    pub fn new(idle: Idle, permit: OwnedSemaphorePermit) -> Parked {
        let counted = idle.spec.metrics.parked();
        Parked { idle, permit, _counted: counted }
    }

    /// The connection leaves the lot (no longer counted as parked).
    pub fn resumed(self) -> (Idle, OwnedSemaphorePermit) {
        (self.idle, self.permit)
    }

    /// Closes the connection: a FIN, as a parked connection in its task is closed.
    pub fn close(self) {
        let _ = self.idle.socket.shutdown(Shutdown::Write);
    }
}

/// The parked connections of one listener on one worker.
pub(super) struct Lot {
    poll: AsyncFd<mio::Poll>,
    events: Events,
    rows: Rows,
}

/// Events taken from the epoll set per wake-up.
const EVENTS: usize = 256;

impl Lot {
    pub fn new() -> io::Result<Lot> {
        let poll = mio::Poll::new()?;
        // SAFETY: `mio::Poll` owns its epoll descriptor, keeps it open until it is
        // dropped, and always reports that one; the `AsyncFd` owns the `Poll`.
        #[allow(unsafe_code)]
        let poll = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Lot { poll, events: Events::with_capacity(EVENTS), rows: Rows::default() })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Parks `p` until its socket turns readable or its idle timeout passes. A socket
    /// that cannot be watched is closed.
    pub fn park(&mut self, p: Parked) {
        let fd = p.idle.socket.as_raw_fd();
        let token = Token(self.rows.vacant());
        // Edge-triggered: a socket that already has bytes is reported at once.
        match self.poll.get_ref().registry().register(&mut SourceFd(&fd), token, Interest::READABLE) {
            Ok(()) => self.rows.fill(token.0, p),
            Err(e) => {
                tracing::debug!(error = %e, "cannot park a connection; closing it");
                p.close();
            }
        }
    }

    /// Waits until parked sockets turn readable and moves them to `out`. Cancel-safe:
    /// rows leave the lot only after the wait.
    pub async fn woken(&mut self, out: &mut Vec<Parked>) -> io::Result<()> {
        loop {
            let mut ready = self.poll.readable_mut().await?;
            ready.get_inner_mut().poll(&mut self.events, Some(Duration::ZERO))?;
            let registry = ready.get_ref().get_ref().registry();
            let mut seen = 0;
            for event in self.events.iter() {
                seen += 1;
                out.extend(self.rows.take(event.token().0, registry));
            }
            // A full batch may have left more: the epoll set then stays marked ready.
            if seen < EVENTS {
                ready.clear_ready();
            }
            if !out.is_empty() {
                return Ok(());
            }
        }
    }

    /// Takes out the rows whose idle timeout has passed by `now`.
    pub fn expired(&mut self, now: Instant, out: &mut Vec<Parked>) {
        self.rows.take_where(|p| p.idle.until <= now, self.poll.get_ref().registry(), out);
        if self.rows.len() == 0 && self.rows.rows.capacity() > EVENTS {
            // A crowd of idle connections has left: give its table back.
            self.rows = Rows::default();
        }
    }

    /// Takes out every row.
    pub fn drain(&mut self, out: &mut Vec<Parked>) {
        self.rows.take_where(|_| true, self.poll.get_ref().registry(), out);
    }
}

/// The lot's table: a row per parked connection, its index the connection's epoll
/// token; rows left empty are reused.
#[derive(Default)]
struct Rows {
    rows: Vec<Option<Parked>>,
    /// Empty rows.
    free: Vec<usize>,
}

impl Rows {
    fn len(&self) -> usize {
        self.rows.len() - self.free.len()
    }

    /// The row the next [`Rows::fill`] takes.
    fn vacant(&self) -> usize {
        self.free.last().copied().unwrap_or(self.rows.len())
    }

    /// Puts `p` in `row`, which [`Rows::vacant`] gave.
    fn fill(&mut self, row: usize, p: Parked) {
        if self.free.last() == Some(&row) {
            self.free.pop();
            self.rows[row] = Some(p);
        } else {
            debug_assert_eq!(row, self.rows.len(), "a row from `vacant`");
            self.rows.push(Some(p));
        }
    }

    /// Takes out every row that `which` picks.
    fn take_where(
        &mut self,
        which: impl Fn(&Parked) -> bool,
        registry: &mio::Registry,
        out: &mut Vec<Parked>,
    ) {
        for row in 0..self.rows.len() {
            if self.rows[row].as_ref().is_some_and(&which) {
                out.extend(self.take(row, registry));
            }
        }
    }

    /// Empties `row`, taking its socket out of the epoll set.
    fn take(&mut self, row: usize, registry: &mio::Registry) -> Option<Parked> {
        let p = self.rows.get_mut(row)?.take()?;
        let _ = registry.deregister(&mut SourceFd(&p.idle.socket.as_raw_fd()));
        self.free.push(row);
        Some(p)
    }
}
