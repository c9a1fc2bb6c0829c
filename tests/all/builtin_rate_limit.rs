//! End-to-end tests of the built-in `rate-limit` plugin through the gateway.
