//! TLS to upstream targets: one rustls `ClientConfig` per upstream, built at load time
//! with the ring provider, trusting either the system roots or a configured CA bundle.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::settings::Protocol;
use crate::config::UpstreamTlsConfig;

/// The TLS side of an upstream's connection settings.
#[derive(Clone)]
pub(crate) struct TlsSettings {
    /// The connector over the upstream's `ClientConfig`.
    pub connector: TlsConnector,
    /// The configured SNI name; `None` means each target's host.
    pub server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// Builds the TLS settings; an error names the offending field (`ca`, `server_name`)
/// and says what is wrong.
pub(crate) fn build(
    config: &UpstreamTlsConfig,
    protocol: Protocol,
    base_dir: &Path,
) -> Result<TlsSettings, (&'static str, String)> {
    let roots = match &config.ca {
        Some(ca) => Arc::new(load_ca(&base_dir.join(ca)).map_err(|e| ("ca", e))?),
        None => native_roots().map_err(|e| ("ca", e))?,
    };
    let server_name = match &config.server_name {
        Some(n) => Some(
            ServerName::try_from(n.clone())
                .map_err(|_| ("server_name", format!("invalid server name `{n}`")))?,
        ),
        None => None,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("ca", format!("tls setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = match protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::Http2 => vec![b"h2".to_vec()],
    };
    Ok(TlsSettings { connector: TlsConnector::from(Arc::new(client)), server_name })
}

/// The SNI name for a target whose host is `host`, unless one is configured.
pub(crate) fn target_server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|_| format!("`{host}` is not a valid tls server name"))
}

fn load_ca(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read ca file {shown}: {e}"))?;
    let mut store = RootCertStore::empty();
    for cert in iter {
        let cert = cert.map_err(|e| format!("invalid pem in ca file {shown}: {e}"))?;
        store.add(cert).map_err(|e| format!("invalid certificate in ca file {shown}: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!("ca file {shown} holds no certificate"));
    }
    Ok(store)
}

/// The system's root store, loaded once per process.
fn native_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (_added, _ignored) = store.add_parsable_certificates(loaded.certs);
            if store.is_empty() {
                let why = loaded.errors.first().map(ToString::to_string).unwrap_or_default();
                return Err(format!("no system root certificates found {why}").trim_end().to_owned());
            }
            Ok(Arc::new(store))
        })
        .clone()
}
