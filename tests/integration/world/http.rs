//! awc clients for talking to the world (set-up pushes, the issuer's catalog fetch, tests).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{pem::PemObject, CertificateDer};

/// A client that follows no redirects (tests must see the registry's 307) and trusts
/// `ca_file` when given. The timeout is long because the big layer is uploaded in one request.
pub fn client(ca_file: Option<&Path>) -> awc::Client {
    let builder = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(300));
    // `connector` changes the builder's type, hence two `finish` calls.
    match ca_file {
        Some(ca) => {
            let tls = Arc::new(rustls_config(ca));
            builder
                .connector(awc::Connector::new().rustls_0_23(tls))
                .finish()
        }
        None => builder.finish(),
    }
}

/// A rustls client config trusting only the PEM certificates in `ca_file`. HTTP/1.1 only (no
/// ALPN), like most registry clients.
pub fn rustls_config(ca_file: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("read CA file") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    // Explicit provider: feature unification might enable a second one, and then
    // `ClientConfig::builder()` refuses to pick.
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
