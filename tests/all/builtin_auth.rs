//! End-to-end tests of the built-in `auth` plugin through the gateway.
