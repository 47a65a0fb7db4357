//! The answers to an ACME CA's challenges while an order is open: HTTP-01 (RFC 8555 §8.3),
//! a key authorization at `/.well-known/acme-challenge/<token>` on the plain listener, and
//! TLS-ALPN-01 (RFC 8737), a self-signed certificate carrying the key authorization's digest,
//! given to a handshake that offers only the `acme-tls/1` protocol. Shared by every worker
//! (the CA may connect to any) and the certificate resolver.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header::{CacheControl, CacheDirective, ContentType},
    middleware::Next,
    web, Error, HttpResponse,
};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    sign::CertifiedKey,
};

/// The ALPN protocol of a TLS-ALPN-01 validation handshake (RFC 8737 §6.2).
pub const TLS_ALPN_PROTOCOL: &[u8] = b"acme-tls/1";

/// Where HTTP-01 asks for a token's key authorization (RFC 8555 §8.3).
pub const HTTP_PATH: &str = "/.well-known/acme-challenge/";

#[derive(Default)]
pub struct Challenges {
    /// Token to key authorization.
    http: RwLock<HashMap<String, String>>,
    /// Lower-case DNS name to its challenge certificate.
    tls_alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The key authorization HTTP-01 expects for `token`, while its challenge is open.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        self.http
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    /// The TLS-ALPN-01 certificate for `server_name`, while its challenge is open.
    pub fn tls_alpn_certificate(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&server_name.to_ascii_lowercase())
            .cloned()
    }

    pub fn open_http(&self, token: &str, key_authorization: &str) {
        self.http
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Makes and keeps the certificate that answers TLS-ALPN-01 for `domain`; `digest` is
    /// the SHA-256 of the key authorization.
    pub fn open_tls_alpn(
        &self,
        domain: &str,
        digest: &[u8],
        provider: &CryptoProvider,
    ) -> Result<(), String> {
        let domain = domain.to_ascii_lowercase();
        let certificate = tls_alpn_certificate(&domain, digest, provider)?;
        self.tls_alpn
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(domain, Arc::new(certificate));
        Ok(())
    }

    /// Forgets every answer: the order is over, one way or the other.
    pub fn close_all(&self) {
        self.http
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.tls_alpn
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// RFC 8737 §3: a self-signed certificate for `domain` alone, with the critical
/// `id-pe-acmeIdentifier` extension holding the key authorization's SHA-256. A fresh P-256
/// key each time: it signs one handshake and is never used again.
fn tls_alpn_certificate(
    domain: &str,
    digest: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let failed = |e: &dyn std::fmt::Display| format!("TLS-ALPN-01 certificate for {domain}: {e}");
    let key = rcgen::KeyPair::generate().map_err(|e| failed(&e))?;
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(|e| failed(&e))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let certificate = params.self_signed(&key).map_err(|e| failed(&e))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| failed(&e))?;
    Ok(CertifiedKey::new(vec![certificate.der().clone()], signing))
}

/// Middleware: answers HTTP-01 before any other route, access control included (the CA
/// validates from addresses nobody can list in advance). Anything else under the challenge
/// path, or any request when ACME is off, goes on to the routes (and their 404).
pub async fn answer_http(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let answer = req
        .path()
        .strip_prefix(HTTP_PATH)
        .filter(|_| req.method() == actix_web::http::Method::GET)
        .and_then(|token| {
            let challenges = req.app_data::<web::Data<Challenges>>()?;
            challenges.http_answer(token)
        });
    match answer {
        Some(key_authorization) => {
            log::info!("ACME: answered the HTTP-01 challenge at {}", req.path());
            let res = HttpResponse::Ok()
                .content_type(ContentType::octet_stream())
                .insert_header(CacheControl(vec![CacheDirective::NoStore]))
                .body(key_authorization);
            Ok(req.into_response(res).map_into_right_body())
        }
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_alpn_certificate_names_the_domain_and_carries_the_digest() {
        let provider = rustls::crypto::ring::default_provider();
        let challenges = Challenges::default();
        let digest = [7u8; 32];
        challenges
            .open_tls_alpn("Mirror.Example.com", &digest, &provider)
            .unwrap();
        let certified = challenges
            .tls_alpn_certificate("mirror.example.COM")
            .unwrap();
        // (rustls' own check of the pair cannot parse the critical extension: by design, only
        // an ACME validator reads this certificate.)
        let (_, cert) = x509_parser::parse_x509_certificate(&certified.cert[0]).unwrap();
        let acme_identifier = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("id-pe-acmeIdentifier");
        assert!(acme_identifier.critical);
        // An OCTET STRING of the 32-byte digest.
        assert_eq!(acme_identifier.value, [&[0x04, 32][..], &digest].concat());
        let names = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", names.value.general_names),
            r#"[DNSName("mirror.example.com")]"#
        );

        assert!(challenges
            .tls_alpn_certificate("other.example.com")
            .is_none());
        challenges.close_all();
        assert!(challenges
            .tls_alpn_certificate("mirror.example.com")
            .is_none());
    }

    #[test]
    fn http_answers_last_while_open() {
        let challenges = Challenges::default();
        assert_eq!(challenges.http_answer("tok"), None);
        challenges.open_http("tok", "tok.thumbprint");
        assert_eq!(
            challenges.http_answer("tok").as_deref(),
            Some("tok.thumbprint")
        );
        assert_eq!(challenges.http_answer("other"), None);
        challenges.close_all();
        assert_eq!(challenges.http_answer("tok"), None);
    }
}
