//! What a client connection is doing, for its timeouts, kept without a clock read or a
//! timer per request.
//!
//! A request counts as in flight from the moment its head is parsed until its
//! response body has been handed to the protocol layer in full ([`Guarded`]), so a
//! long streamed response is never mistaken for an idle connection. Every read from
//! the client and every request start or end marks the connection busy. The
//! connection's driver ticks a coarse clock (a quarter of the shorter of the listener's
//! idle and header-read timeouts) and decides on each tick: a connection neither busy
//! nor with a request in flight for a whole tick is idle — its HTTP/1 buffers are let
//! go (see `h1.rs`) — and one idle for `idle_timeout` is closed; a request head whose
//! first bytes came more than `header_read_timeout` ago is cut off. Timeouts fire at
//! most one tick late, never early.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::Limits;
use super::upgrade::{HandOver, UpgradedIo};

/// No request head is being read.
const NO_HEAD: u32 = u32::MAX;

/// One connection's activity, shared by its driver, its IO wrapper and its requests.
#[derive(Debug)]
pub(super) struct Activity {
    in_flight: AtomicUsize,
    /// Set by reads and by requests starting and ending; cleared by each tick.
    busy: AtomicBool,
    /// Ticks so far.
    ticks: AtomicU32,
    /// Whether reads begin request heads (HTTP/1; HTTP/2 frames do not).
    heads: bool,
    /// The tick at which the first bytes of the request head being read arrived.
    head_since: AtomicU32,
    /// The last write to the client could not complete (the protocol layer still
    /// holds bytes for it).
    write_blocked: AtomicBool,
    /// A `101 Switching Protocols` went out: the connection belongs to the tunnel next.
    switching: AtomicBool,
    /// Where the connection goes once it switched protocols (HTTP/1 only).
    upgrade: Mutex<Option<tokio::sync::oneshot::Sender<UpgradedIo>>>,
}

impl Activity {
    /// A new connection: its first request head is due within `header_read_timeout`
    /// of now (`reads_head: false` for protocols without one, HTTP/2).
    pub fn new(reads_head: bool) -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            ticks: AtomicU32::new(0),
            heads: reads_head,
            head_since: AtomicU32::new(if reads_head { 0 } else { NO_HEAD }),
            write_blocked: AtomicBool::new(false),
            switching: AtomicBool::new(false),
            upgrade: Mutex::new(None),
        }
    }

    /// Bytes came from the client. With no request in flight they begin a head.
    pub fn read(&self) {
        self.busy.store(true, Relaxed);
        if self.heads && self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) == NO_HEAD {
            self.head_since.store(self.ticks.load(Relaxed), Relaxed);
        }
    }

    /// Bytes are waiting for the client (the last write could not complete), or not.
    pub fn write_blocked(&self, blocked: bool) {
        self.write_blocked.store(blocked, Relaxed);
    }

    /// A head is being read from now on (bytes were left over when a connection was
    /// taken back from the protocol layer, or the client's socket turned readable),
    /// unless one already was: its time keeps running.
    pub fn head_started(&self) {
        let now = self.ticks.load(Relaxed);
        let _ = self.head_since.compare_exchange(NO_HEAD, now, Relaxed, Relaxed);
    }

    /// A request asks to switch protocols: the hand-over its connection will be sent
    /// to if the answer is `101`.
    pub fn expect_switch(&self) -> HandOver {
        let (hand_over, tx) = HandOver::new();
        if let Ok(mut slot) = self.upgrade.lock() {
            *slot = Some(tx);
        }
        hand_over
    }

    /// Where the connection goes, if a `101` went out.
    pub fn switched(&self) -> Option<tokio::sync::oneshot::Sender<UpgradedIo>> {
        if !self.switching.load(Relaxed) {
            return None;
        }
        self.upgrade.lock().ok().and_then(|mut slot| slot.take())
    }

    /// Whether part of a request head has arrived and the rest is awaited.
    pub fn reading_head(&self) -> bool {
        self.head_since.load(Relaxed) != NO_HEAD
    }
}

/// The coarse clock of one connection and what each tick found.
#[derive(Debug)]
pub(super) struct Clock {
    pub tick: Duration,
    idle_ticks: u32,
    head_ticks: u32,
    /// Ticks in a row with nothing in flight and nothing read.
    quiet: u32,
}

/// What a tick found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Something happened, or not for long.
    Active,
    /// Nothing happened for a whole tick: the connection may let go of its buffers.
    Quiet,
    /// Idle for the listener's `idle_timeout`: close it.
    IdleTimeout,
    /// A request head took longer than `header_read_timeout`: cut it off.
    HeadTimeout,
}

impl Clock {
    pub fn new(limits: &Limits) -> Clock {
        let shorter = limits.idle_timeout.min(limits.header_read_timeout);
        let tick = (shorter / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let ticks = |d: Duration| u32::try_from(d.as_nanos().div_ceil(tick.as_nanos())).unwrap_or(u32::MAX);
        Clock {
            tick,
            idle_ticks: ticks(limits.idle_timeout),
            head_ticks: ticks(limits.header_read_timeout),
            quiet: 0,
        }
    }

    /// The time from now until the idle timeout, for a connection that waits without
    /// ticking (parked): it has been quiet for `quiet` ticks already.
    pub fn idle_left(&self) -> Duration {
        self.tick * self.idle_ticks.saturating_sub(self.quiet)
    }

    /// Advances the clock by one tick.
    pub fn tick(&mut self, a: &Activity) -> Verdict {
        let now = a.ticks.fetch_add(1, Relaxed).wrapping_add(1);
        let busy = a.busy.swap(false, Relaxed);
        let since = a.head_since.load(Relaxed);
        // `>`: a head that began just before a tick gets its full time.
        if since != NO_HEAD && now.wrapping_sub(since) > self.head_ticks {
            return Verdict::HeadTimeout;
        }
        if busy || a.in_flight.load(Relaxed) > 0 || a.write_blocked.load(Relaxed) {
            self.quiet = 0;
            return Verdict::Active;
        }
        self.quiet += 1;
        if self.quiet >= self.idle_ticks { Verdict::IdleTimeout } else { Verdict::Quiet }
    }
}

/// What woke a connection's driver.
pub(super) enum Woke<T> {
    /// The protocol's connection is done, with this.
    Done(T),
    /// The gateway is shutting down (said once).
    Shutdown,
    /// The connection's clock ticked.
    Tick,
}

/// What a connection's driver waits on besides the protocol's connection: its
/// clock's tick and the gateway's shutdown. Polled by hand rather than with
/// `select!`, which polls every branch at each wake of the task: the shutdown watch
/// and the tick's timer re-registered the task's waker at every wake, twice per
/// HTTP/1 request (~700 instructions; BENCHMARKS.md, P1, 2026-12-04, evening). Each
/// is polled once to register, then again only once an atomic load says it fired.
pub(super) struct Alarms {
    period: Duration,
    tick: Pin<Box<tokio::time::Sleep>>,
    tick_armed: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Done once the shutdown was seen (then `None`).
    changed: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    watching: bool,
}

impl Alarms {
    /// The first tick one of `clock`'s ticks from now.
    pub fn new(clock: &Clock, shutdown: &tokio::sync::watch::Receiver<bool>) -> Alarms {
        let mut watch = shutdown.clone();
        Alarms {
            period: clock.tick,
            tick: Box::pin(tokio::time::sleep(clock.tick)),
            tick_armed: false,
            shutdown: shutdown.clone(),
            changed: Some(Box::pin(async move {
                let _ = watch.changed().await;
            })),
            watching: false,
        }
    }

    /// Polls `conn`, then, unless the driver is `closing`, the shutdown and the tick.
    /// A tick is followed by the next one a whole tick after it was seen (a late tick
    /// is not made up for).
    pub fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        closing: bool,
        conn: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<Woke<T>> {
        if let Poll::Ready(done) = conn(cx) {
            return Poll::Ready(Woke::Done(done));
        }
        if closing {
            return Poll::Pending;
        }
        if let Some(changed) = &mut self.changed
            && (!self.watching || !matches!(self.shutdown.has_changed(), Ok(false)))
        {
            self.watching = true;
            if changed.as_mut().poll(cx).is_ready() {
                self.changed = None;
                return Poll::Ready(Woke::Shutdown);
            }
        }
        if !self.tick_armed || self.tick.is_elapsed() {
            self.tick_armed = true;
            if self.tick.as_mut().poll(cx).is_ready() {
                self.tick.as_mut().reset(tokio::time::Instant::now() + self.period);
                self.tick_armed = false;
                return Poll::Ready(Woke::Tick);
            }
        }
        Poll::Pending
    }
}

/// One request in flight on a connection. It ends when its response body has been
/// taken in full, or when it is dropped however the request ends (the client reset
/// the HTTP/2 stream, or went away).
#[derive(Debug)]
pub(super) struct InFlight(std::sync::Arc<Activity>);

impl InFlight {
    /// A request head was parsed.
    pub fn start(activity: &std::sync::Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Relaxed);
        activity.head_since.store(NO_HEAD, Relaxed);
        activity.busy.store(true, Relaxed);
        InFlight(std::sync::Arc::clone(activity))
    }
}

impl InFlight {
    /// The request was answered with `status`; a `101` hands the connection over.
    pub fn answered(&self, status: http::StatusCode) {
        if status == http::StatusCode::SWITCHING_PROTOCOLS {
            self.0.switching.store(true, Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
        self.0.busy.store(true, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it ends.
    pub(super) struct Guarded<B> {
        #[pin]
        body: B,
        guard: Option<InFlight>,
    }
}

impl<B> Guarded<B> {
    pub fn new(body: B, guard: InFlight) -> Guarded<B> {
        Guarded { body, guard: Some(guard) }
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for Guarded<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(idle: u64, head: u64) -> Limits {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1 << 20,
            max_uri_bytes: 8 * 1024,
            header_read_timeout: Duration::from_secs(head),
            body_read_timeout: Duration::from_secs(30),
            min_body_rate: 0,
            idle_timeout: Duration::from_secs(idle),
            max_connections: 10,
        }
    }

    #[test]
    fn a_quiet_connection_is_quiet_after_one_tick_and_times_out_after_the_idle_timeout() {
        let mut c = Clock::new(&limits(8, 40));
        assert_eq!(c.tick, Duration::from_secs(2));
        let a = Activity::new(false);
        assert_eq!(c.tick(&a), Verdict::Quiet);
        assert_eq!(c.idle_left(), Duration::from_secs(6));
        assert_eq!(c.tick(&a), Verdict::Quiet);
        a.read();
        assert_eq!(c.tick(&a), Verdict::Active, "a read makes the tick busy");
        for _ in 0..3 {
            assert_eq!(c.tick(&a), Verdict::Quiet);
        }
        assert_eq!(c.tick(&a), Verdict::IdleTimeout, "four quiet ticks are the 8 s");
    }

    #[test]
    fn a_request_in_flight_or_a_blocked_write_keeps_the_connection_active() {
        let mut c = Clock::new(&limits(1, 1));
        let a = std::sync::Arc::new(Activity::new(false));
        let req = InFlight::start(&a);
        for _ in 0..10 {
            assert_eq!(c.tick(&a), Verdict::Active);
        }
        drop(req);
        assert_eq!(c.tick(&a), Verdict::Active, "the end of a request is activity");
        a.write_blocked(true);
        assert_eq!(c.tick(&a), Verdict::Active);
        a.write_blocked(false);
        assert_eq!(c.tick(&a), Verdict::Quiet);
    }

    #[test]
    fn a_head_times_out_after_its_ticks_whatever_trickles_in_and_a_parsed_head_stops_the_clock() {
        let mut c = Clock::new(&limits(60, 8));
        let a = std::sync::Arc::new(Activity::new(true));
        for _ in 0..4 {
            a.read();
            assert_eq!(c.tick(&a), Verdict::Active);
        }
        assert_eq!(c.tick(&a), Verdict::HeadTimeout, "more than 8 s since the connection opened");

        let mut c = Clock::new(&limits(60, 8));
        let a = std::sync::Arc::new(Activity::new(true));
        c.tick(&a);
        let req = InFlight::start(&a);
        for _ in 0..10 {
            assert_eq!(c.tick(&a), Verdict::Active, "no head is being read");
        }
        drop(req);
        for _ in 0..4 {
            a.read();
            assert_eq!(c.tick(&a), Verdict::Active);
        }
        assert_eq!(c.tick(&a), Verdict::HeadTimeout, "the next head got its own 8 s");
    }
}
