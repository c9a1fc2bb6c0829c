//! Upstream pools: target selection, connection pooling, health, circuit breaking,
//! timeouts and retries. (Stub: the real pool replaces this.)

use std::path::Path;

use http::{Request, Response};

use crate::body::Body;
use crate::config::{Name, Problem, UpstreamConfig};
use crate::proxy::error::ProxyError;

/// One upstream pool, built from its config.
#[derive(Debug)]
pub struct Upstream {
    name: Name,
}

impl Upstream {
    /// Builds the pool. Problems are reported at `upstreams.<name>…`; relative file
    /// paths (CA bundles) are resolved against `base_dir`.
    pub fn build(name: &Name, _config: &UpstreamConfig, _base_dir: &Path) -> Result<Upstream, Vec<Problem>> {
        Ok(Upstream { name: name.clone() })
    }

    /// The pool's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Sends `req` to a target of this pool, retrying where safe, and returns the
    /// target's response head with its body still streaming.
    pub async fn forward(&self, _req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        Err(ProxyError::NoAvailableTarget { upstream: self.name.to_string() })
    }
}
