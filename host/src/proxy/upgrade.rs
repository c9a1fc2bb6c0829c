//! Protocol upgrades (WebSocket and friends): once both sides switched protocols, bytes
//! are copied both ways until either side closes.

use tracing::debug;

use crate::listener::{ClientUpgrade, Rewind};
use crate::upstream::Stream;

/// Joins the client's and the upstream's upgraded connections.
pub async fn tunnel(client: ClientUpgrade, mut upstream: Rewind<Stream>) {
    let mut client = match client.wait().await {
        Ok(client) => client,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            return;
        }
    };
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => debug!(bytes_up = up, bytes_down = down, "upgraded connection closed"),
        Err(e) => debug!(error = %e, "upgraded connection ended with an error"),
    }
}
