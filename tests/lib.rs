//! Shared helpers for the end-to-end tests live in `all/`; this library exposes the
//! test plugins compiled by `build.rs` and [`RedisServer`], a real `redis-server`.

mod redis_server;

pub use redis_server::RedisServer;

/// The variable that turns a missing external program into a failure instead of a
/// skip (`.ci/run` sets it: CI installs everything).
pub const REQUIRE_VAR: &str = "SLUICE_REQUIRE_TOOLCHAINS";

/// For a test that needs an external program (`redis-server`, a Python package):
/// `true` when it is here (`present`). When it is not, the test is skipped: one line
/// `SKIPPED <test>: <what> is not installed; install it with: <install>` goes to
/// stderr past the test harness's capture (so it shows without `--nocapture`), and
/// this returns `false` — unless `SLUICE_REQUIRE_TOOLCHAINS` is set, when it panics.
pub fn have(present: bool, what: &str, install: &str) -> bool {
    if present {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    assert!(
        std::env::var_os(REQUIRE_VAR).is_none(),
        "{test}: {what} is not installed and {REQUIRE_VAR} is set; install it with: {install}"
    );
    use std::io::Write as _;
    let _ =
        writeln!(std::io::stderr(), "SKIPPED {test}: {what} is not installed; install it with: {install}");
    false
}

/// Whether `program args…` runs and exits successfully.
pub fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

/// Paths of the test plugin components (`tests/plugins/*`) and the example plugin
/// (`examples/plugins/guard`), built for `wasm32-wasip2`.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}
