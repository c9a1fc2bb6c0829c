//! HTTP/2 downstream (h2c and ALPN) and upstream, TLS termination with SNI.

use std::path::PathBuf;
use std::sync::Arc;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;

use crate::harness::{Client, TestServer, config, full, gateway, url};

#[tokio::test]
async fn h2c_downstream_and_http2_upstream() {
    let up = TestServer::echo().await;
    let yaml = config(&format!(
        "upstreams:\n  app:\n    protocol: http2\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: app\n    match: {{ path_prefix: / }}\n    target: {{ upstream: app }}\n",
        up.addr
    ));
    let gw = gateway(&yaml).await;
    let reply = Client::h2c().post(&url(gw.addr("public"), "/h2?x=1"), "hello over h2").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, http::Version::HTTP_2, "client side spoke HTTP/2");
    let seen = reply.json();
    assert_eq!(seen["version"], "HTTP/2.0", "upstream side spoke HTTP/2");
    assert_eq!(seen["body_bytes"], 13);
    assert!(seen["uri"].as_str().unwrap().ends_with("/h2?x=1"));
    // HTTP/1.1 clients are served by the same listener.
    let reply = Client::http1().get(&url(gw.addr("public"), "/h1")).await;
    assert_eq!(reply.version, http::Version::HTTP_11);
    assert_eq!(reply.json()["version"], "HTTP/2.0");
    gw.shutdown().await;
}

struct TestCert {
    cert_pem: String,
    cert_path: PathBuf,
    key_path: PathBuf,
}

fn make_cert(dir: &std::path::Path, name: &str, hosts: &[&str]) -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
    let cert_pem = ck.cert.pem();
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    TestCert { cert_pem, cert_path, key_path }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sluice-test-{tag}-{}-{}", std::process::id(), fastrand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Accepts any certificate (signatures still checked), so a test can look at which one
/// the server presented for a name it has no certificate for.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type TlsClient = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A client config offering TLS `versions` and trusting only `roots`.
fn trusting(
    roots: &[&TestCert],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(rustls_pki_types::CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth()
}

/// A TLS handshake with the server at `addr` as `sni`, with `cfg`.
async fn handshake(
    addr: std::net::SocketAddr,
    sni: &'static str,
    cfg: rustls::ClientConfig,
) -> std::io::Result<TlsClient> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(ServerName::try_from(sni).unwrap(), tcp).await
}

/// The end-entity certificate (DER) the server at `addr` presents for `sni`.
async fn presented_certificate(addr: std::net::SocketAddr, sni: &'static str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let stream = handshake(addr, sni, cfg).await.expect("tls handshake");
    stream.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

/// Connects with TLS, SNI `sni`, trusting only `roots`, offering `alpn`.
async fn tls_connect(
    addr: std::net::SocketAddr,
    sni: &'static str,
    roots: &[&TestCert],
    alpn: &[&[u8]],
) -> TlsClient {
    let mut cfg = trusting(roots, rustls::DEFAULT_VERSIONS);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    handshake(addr, sni, cfg).await.expect("tls handshake with a verified certificate")
}

/// A config with one TLS listener `tls`: `certs` as (YAML list of hosts, certificate),
/// `tls_extra` lines in its `tls:` block, then `routes` (a `routes:` section).
fn tls_config(certs: &[(&str, &TestCert)], tls_extra: &str, routes: &str) -> String {
    let mut yaml = format!(
        "version: 1\nlisteners:\n  - name: tls\n    address: 127.0.0.1:0\n    tls:\n{tls_extra}      certificates:\n"
    );
    for (hosts, c) in certs {
        yaml.push_str(&format!(
            "        - {{ hosts: {hosts}, cert: \"{}\", key: \"{}\" }}\n",
            c.cert_path.display(),
            c.key_path.display()
        ));
    }
    yaml + routes
}

/// A route answering `ok` to everything.
const OK_ROUTE: &str =
    "routes:\n  - name: ok\n    match: { path_prefix: / }\n    target: { static: { body: ok } }\n";

use rustls_pki_types::pem::PemObject;

#[tokio::test]
async fn tls_termination_picks_certificate_by_sni() {
    let dir = temp_dir("tls");
    let a = make_cert(&dir, "a", &["a.test"]);
    let b = make_cert(&dir, "b", &["*.b.test"]);
    let yaml = tls_config(
        &[("[a.test]", &a), ("[\"*.b.test\"]", &b)],
        "",
        "routes:\n  - name: echo\n    match: { path_prefix: / }\n    target: { echo: {} }\n",
    );
    let gw = gateway(&yaml).await;
    let addr = gw.addr("tls");

    // SNI a.test, trusting only a's certificate: verification passes only if the
    // gateway presented a's certificate. HTTP/1.1 over TLS.
    let stream = tls_connect(addr, "a.test", &[&a], &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(Request::get("/one").header("host", "a.test").body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["path"], "/one");

    // SNI x.b.test matches the wildcard certificate; ALPN h2 gives HTTP/2.
    let stream = tls_connect(addr, "x.b.test", &[&b], &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(Request::get("https://x.b.test/two").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);

    // An unknown SNI gets the first (default) certificate: a's.
    let a_der = rustls_pki_types::CertificateDer::from_pem_slice(a.cert_pem.as_bytes()).unwrap();
    assert_eq!(presented_certificate(addr, "unknown.test").await, a_der.to_vec());
    assert_ne!(
        presented_certificate(addr, "x.b.test").await,
        a_der.to_vec(),
        "the check can tell them apart"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn certificates_rotate_on_reload_without_dropping_connections() {
    let dir = temp_dir("tls-rotate");
    let old = make_cert(&dir, "old", &["a.test"]);
    let new = make_cert(&dir, "new", &["a.test"]);
    let yaml = |c: &TestCert| tls_config(&[("[a.test]", c)], "", OK_ROUTE);
    let gw = gateway(&yaml(&old)).await;
    let addr = gw.addr("tls");
    let stream = tls_connect(addr, "a.test", &[&old], &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let get = || Request::get("/").header("host", "a.test").body(full("")).unwrap();
    assert_eq!(send.send_request(get()).await.unwrap().status(), 200);

    gw.reload(sluice::config::parse_str("rotated", &yaml(&new), ".".into()).unwrap()).await.unwrap();
    // The open connection keeps working…
    assert_eq!(send.send_request(get()).await.unwrap().status(), 200);
    // …and new connections get the new certificate (trusting only it succeeds).
    let _ = tls_connect(addr, "a.test", &[&new], &[b"http/1.1"]).await;
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Over TLS too, the absolute-form target's authority routes the request and is the
/// `Host` passed on, and HTTP/2's `:authority` may not be contradicted by `host`.
#[tokio::test]
async fn over_tls_one_authority_routes_and_is_forwarded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = temp_dir("tls-authority");
    let cert = make_cert(&dir, "a", &["a.test"]);
    let yaml = tls_config(
        &[("[a.test]", &cert)],
        "",
        r#"routes:
  - name: vhost
    match: { hosts: [vhost.test], path_prefix: / }
    target: { static: { status: 403, body: "vhost denied" } }
  - name: echo
    match: { path_prefix: / }
    target: { echo: {} }
"#,
    );
    let gw = gateway(&yaml).await;
    let addr = gw.addr("tls");

    let mut stream = tls_connect(addr, "a.test", &[&cert], &[b"http/1.1"]).await;
    stream
        .write_all(b"GET https://plain.example/x HTTP/1.1\r\nHost: vhost.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["headers"]["host"], "plain.example", "{body}");

    let stream = tls_connect(addr, "a.test", &[&cert], &[b"h2"]).await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://plain.example/x").header("host", "vhost.test").body(full("")).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let req = Request::get("https://vhost.test/x").body(full("")).unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 403);
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_tls_min_version_of_1_3_refuses_tls_1_2_clients() {
    let dir = temp_dir("tls-min-version");
    let a = make_cert(&dir, "a", &["a.test"]);
    let gw = gateway(&tls_config(&[("[a.test]", &a)], "      min_version: \"1.3\"\n", OK_ROUTE)).await;
    let tls12 = handshake(gw.addr("tls"), "a.test", trusting(&[&a], &[&rustls::version::TLS12])).await;
    assert!(tls12.is_err(), "a TLS 1.2-only client is refused");
    let tls13 = handshake(gw.addr("tls"), "a.test", trusting(&[&a], &[&rustls::version::TLS13])).await;
    let ok = tls13.expect("TLS 1.3 is accepted");
    assert_eq!(ok.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
