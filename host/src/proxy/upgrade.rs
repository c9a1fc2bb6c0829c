//! Protocol upgrades (WebSocket and friends): once both sides switched protocols, bytes
//! are copied both ways until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::listener::ClientUpgrade;

/// Joins the client's and the upstream's upgraded connections.
pub async fn tunnel(client: ClientUpgrade, upstream: OnUpgrade) {
    let upstream = async { upstream.await.map_err(crate::body::BoxError::from) };
    let (mut client, upstream) = match tokio::try_join!(client.wait(), upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => debug!(bytes_up = up, bytes_down = down, "upgraded connection closed"),
        Err(e) => debug!(error = %e, "upgraded connection ended with an error"),
    }
}
