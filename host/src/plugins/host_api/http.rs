//! `http`: outbound calls from plugins, limited to the hosts the operator allows and
//! bounded by a timeout. One pooled client per process.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::plugins::bindings::sluice::plugin::http::{Host, HttpError, IncomingResponse, OutgoingRequest};
use crate::plugins::bindings::sync::sluice::plugin::http as sync_http;
use crate::plugins::state::PluginState;

/// Why a plugin's call was refused when it has no `http` grant.
const NOT_GRANTED: &str = "outbound http is not granted to this plugin";

/// Largest response body a plugin's outbound call may receive.
pub const MAX_OUTBOUND_RESPONSE_BYTES: usize = 10 << 20;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What a plugin may call.
#[derive(Debug, Clone)]
pub struct HttpGrant {
    /// Allowed `host` or `host:port` entries, lowercase.
    pub allow: Vec<String>,
    /// Longest time a call may take.
    pub timeout: Duration,
}

impl HttpGrant {
    /// True if `uri`'s host (and port) is in the allow-list.
    pub fn allows(&self, uri: &Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        let with_port = format!("{host}:{port}");
        self.allow.iter().any(|a| {
            let a = a.trim_start_matches('[').replace("]:", ":");
            let a = a.trim_end_matches(']');
            a == host || a == with_port
        })
    }
}

fn client() -> &'static HttpsClient {
    static CLIENT: OnceLock<HttpsClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

fn build(req: OutgoingRequest, uri: Uri) -> Result<http::Request<Full<Bytes>>, HttpError> {
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| HttpError::InvalidRequest(format!("invalid method `{}`", req.method)))?;
    let mut out = http::Request::builder().method(method).uri(uri);
    for (k, v) in &req.headers {
        let k = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| HttpError::InvalidRequest(format!("invalid header name `{k}`")))?;
        let v = HeaderValue::from_str(v)
            .map_err(|_| HttpError::InvalidRequest(format!("invalid value for header `{k}`")))?;
        out = out.header(k, v);
    }
    out.body(Full::new(Bytes::from(req.body))).map_err(|e| HttpError::InvalidRequest(e.to_string()))
}

async fn send(req: http::Request<Full<Bytes>>) -> Result<IncomingResponse, HttpError> {
    let resp = client().request(req).await.map_err(|e| HttpError::Transport(e.to_string()))?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_OUTBOUND_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| HttpError::Transport(e.to_string()))?
        .to_bytes();
    Ok(IncomingResponse {
        status: parts.status.as_u16(),
        headers: parts.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
        body: body.to_vec(),
    })
}

impl Host for PluginState {
    async fn send(&mut self, req: OutgoingRequest) -> wasmtime::Result<Result<IncomingResponse, HttpError>> {
        let Some(grant) = self.env.grants.http.clone() else {
            return Ok(Err(HttpError::NotAllowed(NOT_GRANTED.into())));
        };
        if self.configuring {
            return Ok(Err(HttpError::NotAllowed("outbound http is not available during configure".into())));
        }
        let uri: Uri = match req.url.parse() {
            Ok(u) => u,
            Err(_) => return Ok(Err(HttpError::InvalidRequest(format!("invalid url `{}`", req.url)))),
        };
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Ok(Err(HttpError::InvalidRequest("the url must be http:// or https://".into())));
        }
        if !grant.allows(&uri) {
            let host = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
            tracing::warn!(plugin = %self.env.plugin, route = %self.route, %host, "outbound call refused: host not allowed");
            return Ok(Err(HttpError::NotAllowed(format!("host `{host}` is not in the allow-list"))));
        }
        let timeout = req
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()))
            .unwrap_or(grant.timeout)
            .min(grant.timeout);
        let mut out = match build(req, uri) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        // The request's trace goes on (unless the plugin set its own `traceparent`).
        if let Some(tp) = &self.traceparent {
            out.headers_mut().entry(&crate::observability::trace::TRACEPARENT).or_insert_with(|| tp.clone());
        }
        Ok(self.wait_on(tokio::time::timeout(timeout, send(out))).await.unwrap_or(Err(HttpError::Timeout)))
    }
}

/// `http` on the synchronous call path: only plugins that are not granted `http`
/// take it (see [`super::sync_blocker`]), so a call is refused as it would be on
/// the asynchronous path.
impl sync_http::Host for PluginState {
    fn send(
        &mut self,
        _: sync_http::OutgoingRequest,
    ) -> wasmtime::Result<Result<sync_http::IncomingResponse, sync_http::HttpError>> {
        let why = if self.env.grants.http.is_some() {
            "outbound http needs the asynchronous call path"
        } else {
            NOT_GRANTED
        };
        Ok(Err(sync_http::HttpError::NotAllowed(why.into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_host_or_host_and_port() {
        let g = HttpGrant {
            allow: vec!["127.0.0.1:8080".into(), "api.example.com".into()],
            timeout: Duration::from_secs(1),
        };
        assert!(g.allows(&"http://127.0.0.1:8080/x".parse().unwrap()));
        assert!(!g.allows(&"http://127.0.0.1:8081/x".parse().unwrap()));
        assert!(g.allows(&"https://API.example.com/x".parse().unwrap()));
        assert!(!g.allows(&"https://evil.example.com/x".parse().unwrap()));
    }
}
