//! A function's outgoing HTTP (`wasi:http/outgoing-handler`): refused, except to the
//! upstream pools its config lists (`outgoing: [NAME]`). A request to `http://NAME/…`
//! (or `https://`: the pool decides how it connects) goes to that pool like a proxied
//! request — its balancing, health, circuit breaker, retries and timeouts — and
//! nowhere else: the function never chooses an address, so it cannot reach the
//! gateway's network beyond what the operator named (SSRF).

use std::sync::Arc;

use http::{Request, Response, Uri};
use http_body_util::BodyExt as _;
use wasmtime_wasi_http::{Error, WasiBody};

use crate::body;
use crate::error::ProxyError;
use crate::upstream::Upstream;

/// The upstream pools a function may call, by name.
#[derive(Debug, Default)]
pub struct Outgoing {
    allowed: Vec<(String, Arc<Upstream>)>,
}

impl Outgoing {
    /// Allows calls to `pools`.
    pub fn new(pools: Vec<(String, Arc<Upstream>)>) -> Self {
        Self { allowed: pools }
    }

    /// The pool a request to `uri` goes to: its authority must be exactly an allowed
    /// upstream's name, without a port or user info.
    fn pool(&self, uri: &Uri) -> Option<&Arc<Upstream>> {
        let authority = uri.authority()?;
        if authority.port().is_some() || authority.as_str().contains('@') {
            return None;
        }
        let host = authority.host();
        self.allowed.iter().find(|(name, _)| name.eq_ignore_ascii_case(host)).map(|(_, pool)| pool)
    }

    /// Sends `req` to its pool, or refuses it (`HTTP-request-denied`).
    pub fn send(
        self: Arc<Self>,
        req: Request<WasiBody>,
    ) -> impl Future<Output = Result<Response<WasiBody>, Error>> + Send + 'static {
        let pool = self.pool(req.uri()).cloned();
        async move {
            let Some(pool) = pool else {
                tracing::debug!(uri = %req.uri(), "a function's outgoing request was refused");
                return Err(Error::HttpRequestDenied);
            };
            let (mut parts, body) = req.into_parts();
            // Origin form: the pool's target decides where it goes.
            parts.uri =
                parts.uri.path_and_query().map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
            let req = Request::from_parts(parts, body::boxed(body));
            let resp = pool.forward(req).await.map_err(wasi_error)?;
            Ok(resp.map(|b| b.map_err(|e| Error::InternalError(Some(e.to_string()))).boxed_unsync()))
        }
    }
}

/// The `wasi:http` error code a function sees for the pool's failure.
fn wasi_error(e: ProxyError) -> Error {
    match e {
        ProxyError::NoAvailableTarget { .. } => Error::DestinationUnavailable,
        ProxyError::Connect { .. } => Error::ConnectionRefused,
        ProxyError::ConnectTimeout { .. } => Error::ConnectionTimeout,
        ProxyError::UpstreamTimeout { .. } => Error::HttpResponseTimeout,
        ProxyError::BodyTooLarge { .. } => Error::HttpRequestBodySize(None),
        other => Error::InternalError(Some(other.public_message())),
    }
}
