//! The body type that flows through the gateway, and small constructors for it.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// Any error a body can produce while streaming.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body: the client's request body on its way upstream, or an upstream's
/// (or the gateway's own) response body on its way to the client.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Why [`read_limited`] gave up.
#[derive(Debug)]
pub enum ReadError {
    /// The body is longer than the limit.
    TooLong,
    /// The body failed.
    Failed(BoxError),
}

/// The whole of `body`, if it ends within `limit` bytes.
pub async fn read_limited(mut body: Body, limit: usize) -> Result<Bytes, ReadError> {
    let mut whole = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.map_err(ReadError::Failed)?.data_ref() {
            if whole.len() + data.len() > limit {
                return Err(ReadError::TooLong);
            }
            whole.extend_from_slice(data);
        }
    }
    Ok(whole.freeze())
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// Boxes a body whose error is already [`BoxError`]: no error-mapping layer for each
/// frame to pass through, as [`boxed`] puts in.
pub fn boxed_direct<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    body.boxed_unsync()
}

/// Boxes any body whose error converts to [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// How far the client's request body has come, shared between the body as it
/// streams and whoever must judge a failure while it streams (the upstream pool: a
/// timeout or error while the gateway was waiting on the client is the client's
/// fault, not the target's). Put in the request's extensions as
/// `Arc<ClientBodyState>` when the request has a body.
#[derive(Debug, Default)]
pub struct ClientBodyState {
    progress: std::sync::atomic::AtomicU8,
    received: std::sync::atomic::AtomicU64,
}

/// A [`ClientBodyState`]'s value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BodyProgress {
    /// The last piece asked for arrived (or none was asked for yet).
    Flowing = 0,
    /// The gateway asked for the next piece and the client has not sent it.
    WaitingOnClient = 1,
    /// The body ended.
    Done = 2,
    /// The body was larger than the listener allows.
    TooLarge = 3,
    /// The body came too slowly.
    TooSlow = 4,
    /// Reading it failed (the client went away, bad framing).
    Failed = 5,
}

impl ClientBodyState {
    /// The current progress.
    pub fn get(&self) -> BodyProgress {
        match self.progress.load(std::sync::atomic::Ordering::Acquire) {
            0 => BodyProgress::Flowing,
            1 => BodyProgress::WaitingOnClient,
            2 => BodyProgress::Done,
            3 => BodyProgress::TooLarge,
            4 => BodyProgress::TooSlow,
            _ => BodyProgress::Failed,
        }
    }

    /// Records progress.
    pub fn set(&self, p: BodyProgress) {
        self.progress.store(p as u8, std::sync::atomic::Ordering::Release);
    }

    /// Counts `n` more bytes read.
    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Body bytes read so far (for the request metrics).
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a failure now is the client's doing: its body failed, or the gateway
    /// was waiting for more of it.
    pub fn client_at_fault(&self) -> bool {
        !matches!(self.get(), BodyProgress::Flowing | BodyProgress::Done)
    }
}
