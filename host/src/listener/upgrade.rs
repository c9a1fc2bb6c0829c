//! The client's side of a protocol switch (`101 Switching Protocols`).
//!
//! HTTP/1 connections are driven by the listener itself (`h1.rs`), which takes the
//! socket back from hyper between requests; a switch is handed over the same way:
//! once the `101` is written, the driver sends the socket (with any bytes the client
//! sent after its request) to the request's [`ClientUpgrade`]. Connections hyper drives
//! to their end use hyper's own upgrade mechanism.

use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::body::BoxError;

/// A connection after a protocol switch.
pub trait Upgraded: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Upgraded for T {}

impl std::fmt::Debug for dyn Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upgraded")
    }
}

/// A switched connection, boxed.
pub type UpgradedIo = Box<dyn Upgraded>;

/// Where the listener sends a request's connection once its `101` is written
/// (a request extension, taken by [`ClientUpgrade::of`]).
#[derive(Clone)]
pub(super) struct HandOver(Arc<Mutex<Option<oneshot::Receiver<UpgradedIo>>>>);

impl HandOver {
    /// A hand-over for one request, and the sender its connection's driver keeps.
    pub fn new() -> (HandOver, oneshot::Sender<UpgradedIo>) {
        let (tx, rx) = oneshot::channel();
        (HandOver(Arc::new(Mutex::new(Some(rx)))), tx)
    }
}

/// The client's connection once the switch is done.
#[derive(Debug)]
pub enum ClientUpgrade {
    /// From hyper (connections hyper drives to their end).
    Hyper(hyper::upgrade::OnUpgrade),
    /// From the listener's HTTP/1 driver.
    HandedOver(oneshot::Receiver<UpgradedIo>),
}

impl ClientUpgrade {
    /// Takes the upgrade of `req`: the listener's hand-over when there is one,
    /// otherwise hyper's.
    pub fn of<B>(req: &mut http::Request<B>) -> ClientUpgrade {
        let handed = req.extensions_mut().remove::<HandOver>().and_then(|h| h.0.lock().ok()?.take());
        match handed {
            Some(rx) => ClientUpgrade::HandedOver(rx),
            None => ClientUpgrade::Hyper(hyper::upgrade::on(req)),
        }
    }

    /// Waits for the switch.
    pub async fn wait(self) -> Result<UpgradedIo, BoxError> {
        match self {
            ClientUpgrade::Hyper(on) => Ok(Box::new(TokioIo::new(on.await?))),
            ClientUpgrade::HandedOver(rx) => {
                rx.await.map_err(|_| "the client connection closed before switching protocols".into())
            }
        }
    }
}

impl std::fmt::Debug for HandOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandOver")
    }
}
