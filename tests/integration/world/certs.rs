//! Keys and certificates made in-process with rcgen: the token issuer's RSA signing
//! certificate (trusted by the registry through `rootcertbundle`) and, for the TLS world, a
//! test CA with one leaf certificate for 127.0.0.1 / localhost. No openssl CLI: a missing or
//! different openssl cannot break the world's set-up.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _,
};
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
use sha2::{Digest, Sha256};

/// The issuer's signing key: the registry trusts `cert_path`, tokens carry `kid`.
pub struct IssuerKey {
    /// PEM private key, for `jsonwebtoken::EncodingKey::from_rsa_pem`.
    pub key_pem: Vec<u8>,
    pub cert_path: PathBuf,
    /// libtrust key ID of the certificate's public key.
    pub kid: String,
}

/// A server certificate signed by a test CA.
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Certificate parameters with `cn` as the whole subject, valid for two days from an hour ago.
fn params(cn: &str, subject_alt_names: &[&str]) -> CertificateParams {
    let names = subject_alt_names
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>();
    let mut params = CertificateParams::new(names).expect("valid subject alt names");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(2 * 24 * 3600)).into();
    params
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Docker Hub signs its tokens RS256, so the test issuer does too. ring signs with RSA but
/// cannot generate a key: the `rsa` crate does.
pub fn issuer_key(dir: &Path) -> IssuerKey {
    let rsa_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key");
    let key_pem = rsa_key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8 PEM")
        .to_string();
    let key = KeyPair::from_pem(&key_pem).expect("rcgen reads the RSA key");
    let mut params = params("hubferry-test-issuer", &[]);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).expect("issuer certificate");
    write(dir, "issuer.key", &key_pem);
    IssuerKey {
        key_pem: key_pem.into_bytes(),
        cert_path: write(dir, "issuer.crt", &cert.pem()),
        kid: libtrust_key_id(&key.subject_public_key_info()),
    }
}

/// libtrust's key ID, which distribution looks tokens' `kid` up by: SHA-256 of the DER
/// SubjectPublicKeyInfo, first 240 bits, base32 (48 chars), in groups of 4 joined by ':'.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let hash = Sha256::digest(spki_der);
    let b32 = base32_nopad(&hash[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

/// RFC 4648 base32, uppercase, no padding.
fn base32_nopad(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A test CA and a leaf for `IP:127.0.0.1, DNS:localhost`. EC P-256 keys: fast to generate,
/// accepted by Go (registry, skopeo), nginx and rustls.
pub fn tls_files(dir: &Path) -> TlsFiles {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = params("hubferry test CA", &[]);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");

    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf = params("127.0.0.1", &["127.0.0.1", "localhost"]);
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let issuer = Issuer::new(ca, ca_key);
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .expect("leaf certificate");
    TlsFiles {
        ca_cert: write(dir, "ca.crt", &ca_cert.pem()),
        cert: write(dir, "leaf.crt", &leaf_cert.pem()),
        key: write(dir, "leaf.key", &leaf_key.serialize_pem()),
    }
}

#[test]
fn base32_matches_rfc4648_vectors() {
    assert_eq!(base32_nopad(b"foobar"), "MZXW6YTBOI");
    assert_eq!(base32_nopad(b"f"), "MY");
}
