//! [`RedisServer`]: a real `redis-server` child process on a free loopback port, for
//! tests of the Redis kv backend (and everything built on it, like rate limits).
//!
//! ```no_run
//! // Skips the test (see `sluice_tests::have`) when redis-server is not installed.
//! let Some(mut redis) = sluice_tests::RedisServer::start_or_skip() else { return };
//! let url = redis.url(); // redis://127.0.0.1:PORT/0, for `plugins.kv.url`
//! redis.stop(); // Redis is down: connections are refused
//! redis.restart(); // up again on the same port, empty
//! // dropped: killed
//! ```
//!
//! The server keeps nothing on disk (`--save '' --appendonly no`), so a restart starts
//! empty. `redis-server` is looked up on `PATH` (`.ci/run` installs it); without it
//! the tests that need it are skipped with the install command.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server has to answer `PING`.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// Fresh ports tried when a server cannot bind the one it was given.
const START_ATTEMPTS: usize = 5;

/// A `redis-server` child process on `127.0.0.1`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// [`start`](Self::start)s a server, or returns `None` after printing the skip
    /// line when `redis-server` is not installed (see [`crate::have`]).
    pub fn start_or_skip() -> Option<RedisServer> {
        let present = crate::runs("redis-server", &["--version"]);
        crate::have(present, "redis-server", "apt-get install -y redis-server").then(RedisServer::start)
    }

    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// Panics if `redis-server` is not installed or does not come up.
    pub fn start() -> RedisServer {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match spawn(port) {
                Ok(child) => return RedisServer { port, child: Some(child) },
                // Another process may have taken the port in between: try another.
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (like a crash: no clean shutdown) and waits until it is gone.
    /// Connections to the port are refused until [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (stopping it first if it runs) and
    /// waits until it answers `PING`. Its data is gone.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The port was just freed; retry briefly in case the kernel still holds it.
        for _ in 0..20 {
            match spawn(self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}: {last}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// Spawns `redis-server` on `port` and waits for `PING`; kills it on failure.
fn spawn(port: u16) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run redis-server (is it installed?): {e}"))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server on port {port} exited with {status}"));
        }
        if pong(addr) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("redis-server on port {port} did not answer PING within {READY_WITHIN:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a server at `addr` answers `PING` with `+PONG`.
fn pong(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
