//! The Rust SDK for Sluice plugins (see issue: plugin runtime).
#![deny(missing_docs)]
