//! `Gateway`: builds a snapshot from config, opens listeners, serves, reloads, stops.

/// A configured gateway.
#[derive(Debug)]
pub struct Gateway {}

/// Builds a [`Gateway`].
#[derive(Debug, Default)]
pub struct GatewayBuilder {}

impl Gateway {
    /// Starts building a gateway.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }
}
