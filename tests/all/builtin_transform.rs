//! End-to-end tests of the built-in `transform` plugin through the gateway.
