//! TLS termination: certificates chosen by SNI (exact names, then `*.` wildcards, then
//! the first certificate as default), TLS 1.2+ only, ALPN for HTTP/2.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ListenerTlsConfig, LoadedConfig, Problem, TlsVersion};

/// Builds the rustls server config of listener `index`.
pub fn server_config(
    index: usize,
    tls: &ListenerTlsConfig,
    http1: bool,
    http2: bool,
    loaded: &LoadedConfig,
) -> Result<rustls::ServerConfig, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut resolver = SniResolver::default();
    for (ci, c) in tls.certificates.iter().enumerate() {
        let at = format!("listeners[{index}].tls.certificates[{ci}]");
        match load_certified_key(loaded, &c.cert, &c.key) {
            Ok(key) => {
                let key = Arc::new(key);
                if resolver.default.is_none() {
                    resolver.default = Some(Arc::clone(&key));
                }
                for host in &c.hosts {
                    let host = host.to_ascii_lowercase();
                    match host.strip_prefix("*.") {
                        Some(suffix) => resolver.wildcard.insert(suffix.to_owned(), Arc::clone(&key)),
                        None => resolver.exact.insert(host, Arc::clone(&key)),
                    };
                }
            }
            Err((field, msg)) => problems.push(Problem::new(format!("{at}.{field}"), msg)),
        }
    }
    if resolver.default.is_none() && problems.is_empty() {
        problems.push(Problem::new(
            format!("listeners[{index}].tls.certificates"),
            "at least one certificate is required",
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(versions)
        .map_err(|e| vec![Problem::new(format!("listeners[{index}].tls"), format!("tls setup failed: {e}"))])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    if http2 {
        config.alpn_protocols.push(b"h2".to_vec());
    }
    if http1 {
        config.alpn_protocols.push(b"http/1.1".to_vec());
    }
    Ok(config)
}

fn load_certified_key(
    loaded: &LoadedConfig,
    cert: &str,
    key: &str,
) -> Result<CertifiedKey, (&'static str, String)> {
    let cert_path = loaded.resolve_path(cert);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| ("cert", format!("cannot load certificates from `{}`: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(("cert", format!("no certificate found in `{}`", cert_path.display())));
    }
    let key_path = loaded.resolve_path(key);
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| ("key", format!("cannot load a private key from `{}`: {e}", key_path.display())))?;
    let signing = provider::sign::any_supported_type(&key)
        .map_err(|e| ("key", format!("unsupported private key in `{}`: {e}", key_path.display())))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| ("key", format!("key does not match the certificate: {e}")))?;
    Ok(certified)
}

/// Picks a certificate by SNI name.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(k) = self.exact.get(&name) {
                return Some(Arc::clone(k));
            }
            if let Some((_, suffix)) = name.split_once('.')
                && let Some(k) = self.wildcard.get(suffix)
            {
                return Some(Arc::clone(k));
            }
        }
        self.default.clone()
    }
}
