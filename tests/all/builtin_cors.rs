//! End-to-end tests of the built-in `cors` plugin through the gateway.
