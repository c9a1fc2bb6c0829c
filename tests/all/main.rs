//! End-to-end tests: real gateways, real upstreams, real sockets on 127.0.0.1:0.
//! One binary, many modules (one link, fast CI).

mod config_ui;
mod harness;
