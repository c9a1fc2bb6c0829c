//! Tries what a plugin granted nothing must not be able to do, and reports each
//! attempt in a response header: `x-file` (reading `path`, default `/etc/hostname`),
//! `x-env` (the gateway's environment), `x-net` (a TCP connection to `addr`).
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, export};

#[derive(serde::Deserialize)]
struct Prober {
    #[serde(default = "default_path")]
    path: String,
    addr: String,
}

fn default_path() -> String {
    "/etc/hostname".to_owned()
}

impl Plugin for Prober {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, _req: &mut Request<'_>) -> Decision {
        let file = match std::fs::read(&self.path) {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(e) => format!("denied ({:?})", e.kind()),
        };
        let vars = std::env::vars().count();
        let env = if vars == 0 { "empty".to_owned() } else { format!("{vars} variables") };
        let net = match std::net::TcpStream::connect(&self.addr) {
            Ok(_) => "connected".to_owned(),
            Err(e) => format!("denied ({:?})", e.kind()),
        };
        Decision::respond(200, "probed").with_header("x-file", file).with_header("x-env", env).with_header(
            "x-net", net,
        )
    }
}

export!(Prober);
