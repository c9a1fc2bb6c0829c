//! The client's request body as the gateway reads it: failing once it carries more
//! than the listener's limit, or when it comes too slowly (a gap longer than
//! `body_read_timeout`, or an average rate under `min_body_rate` over the time spent
//! waiting for it), and keeping its [`ClientBodyState`] up to date so a failure can
//! be put on the right side: `413`/`408` for the client, never the upstream's health.
//!
//! Only time the gateway spends *waiting on the client* counts: while the upstream
//! (or a plugin) is not reading, the body is not polled and no clock runs.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::{BodyProgress, BoxError, ClientBodyState};
use crate::listener::Limits;

pin_project_lite::pin_project! {
    /// Wraps a request body, counting its bytes and the time spent waiting for them.
    pub struct ClientBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        state: Option<Arc<ClientBodyState>>,
        gap: Duration,
        min_rate: u64,
        received: u64,
        // Waiting time of earlier waits, and the start of the current one.
        waited: Duration,
        wait_started: Option<Instant>,
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> ClientBody<B> {
    /// Wraps `inner` under the listener's `limits`; `state` (absent for a request
    /// without a body) follows its progress.
    pub fn new(inner: B, limits: &Limits, state: Option<Arc<ClientBodyState>>) -> Self {
        Self {
            inner,
            remaining: limits.max_body_bytes,
            state,
            gap: limits.body_read_timeout,
            min_rate: limits.min_body_rate,
            received: 0,
            waited: Duration::ZERO,
            wait_started: None,
            timer: None,
        }
    }
}

fn mark(state: &Option<Arc<ClientBodyState>>, progress: BodyProgress) {
    if let Some(s) = state {
        s.set(progress);
    }
}

/// The error a [`ClientBody`] fails with when it carries more than the limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit")]
pub struct BodyLimitExceeded;

/// The error a [`ClientBody`] fails with when it comes too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly: {0}")]
pub struct BodyTooSlow(pub &'static str);

/// When, counted in waiting time, a body that has carried `received` bytes falls
/// under `min_rate` per second (never before `grace`); `None` when the rate is off.
fn rate_deadline(received: u64, min_rate: u64, grace: Duration) -> Option<Duration> {
    (min_rate > 0).then(|| grace.max(Duration::from_secs_f64(received as f64 / min_rate as f64)))
}

impl<B> HttpBody for ClientBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if !polled.is_pending()
            && let Some(started) = this.wait_started.take()
        {
            *this.waited += started.elapsed();
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > *this.remaining {
                        mark(this.state, BodyProgress::TooLarge);
                        return Poll::Ready(Some(Err(Box::new(BodyLimitExceeded))));
                    }
                    *this.remaining -= n;
                    *this.received += n;
                    if let Some(s) = this.state {
                        s.add_received(n);
                    }
                }
                if rate_deadline(*this.received, *this.min_rate, *this.gap).is_some_and(|d| *this.waited > d)
                {
                    mark(this.state, BodyProgress::TooSlow);
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow("slower than min_body_rate")))));
                }
                mark(this.state, BodyProgress::Flowing);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                mark(this.state, BodyProgress::Failed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                mark(this.state, BodyProgress::Done);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let now = Instant::now();
                let started = *this.wait_started.get_or_insert_with(|| {
                    mark(this.state, BodyProgress::WaitingOnClient);
                    now
                });
                // The sooner of: the gap running out, and the average rate falling
                // under the minimum (both counted from this wait's start).
                let mut budget = *this.gap;
                if let Some(d) = rate_deadline(*this.received, *this.min_rate, *this.gap) {
                    budget = budget.min(d.saturating_sub(*this.waited));
                }
                let deadline = started + budget;
                let timer = match this.timer {
                    Some(t) => {
                        if t.deadline() != deadline {
                            t.as_mut().reset(deadline);
                        }
                        t
                    }
                    None => this.timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                if timer.as_mut().poll(cx).is_ready() {
                    mark(this.state, BodyProgress::TooSlow);
                    let why = if now.duration_since(started) >= *this.gap {
                        "no data within body_read_timeout"
                    } else {
                        "slower than min_body_rate"
                    };
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow(why)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_judged_only_after_the_grace_and_by_bytes_received() {
        let grace = Duration::from_secs(10);
        assert_eq!(rate_deadline(0, 1024, grace), Some(grace));
        assert_eq!(rate_deadline(1024 * 60, 1024, grace), Some(Duration::from_secs(60)));
        assert_eq!(rate_deadline(1024 * 60, 0, grace), None);
    }
}
