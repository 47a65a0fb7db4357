//! Keys and certificates made with the `openssl` CLI: the token issuer's RSA signing
//! certificate (trusted by the registry through `rootcertbundle`) and, for the TLS world, a
//! test CA with one leaf certificate for 127.0.0.1 / localhost.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::process::require_tool;

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

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(require_tool("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A private config so the host's /etc/ssl/openssl.cnf cannot add or clash with extensions.
fn write_config(dir: &Path, name: &str, cn: &str, extensions: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {cn}\n[ext]\n{extensions}\n"
    );
    std::fs::write(&path, text).expect("write openssl config");
    path
}

pub fn issuer_key(dir: &Path) -> IssuerKey {
    let cnf = write_config(
        dir,
        "issuer.cnf",
        "hubferry-test-issuer",
        "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n",
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-config",
            cnf.to_str().unwrap(),
            "-extensions",
            "ext",
            "-keyout",
            "issuer.key",
            "-out",
            "issuer.crt",
        ],
    );
    let pubkey_pem = openssl(dir, &["x509", "-in", "issuer.crt", "-pubkey", "-noout"]);
    IssuerKey {
        key_pem: std::fs::read(dir.join("issuer.key")).expect("read issuer.key"),
        cert_path: dir.join("issuer.crt"),
        kid: libtrust_key_id(&pem_body(&pubkey_pem)),
    }
}

/// The DER bytes inside a single-block PEM document.
fn pem_body(pem: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(pem);
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .expect("PEM body is base64")
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
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_cnf = write_config(
        dir,
        "ca.cnf",
        "hubferry test CA",
        "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n",
    );
    let mut args = vec!["req", "-x509", "-days", "2"];
    args.extend(ec);
    args.extend(["-config", ca_cnf.to_str().unwrap(), "-extensions", "ext"]);
    args.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(dir, &args);

    let leaf_cnf = write_config(
        dir,
        "leaf.cnf",
        "127.0.0.1",
        "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1,DNS:localhost\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    );
    let mut args = vec!["req", "-new"];
    args.extend(ec);
    args.extend(["-config", leaf_cnf.to_str().unwrap()]);
    args.extend(["-keyout", "leaf.key", "-out", "leaf.csr"]);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-days",
            "2",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            leaf_cnf.to_str().unwrap(),
            "-extensions",
            "ext",
            "-out",
            "leaf.crt",
        ],
    );
    TlsFiles {
        ca_cert: dir.join("ca.crt"),
        cert: dir.join("leaf.crt"),
        key: dir.join("leaf.key"),
    }
}

#[test]
fn base32_matches_rfc4648_vectors() {
    assert_eq!(base32_nopad(b"foobar"), "MZXW6YTBOI");
    assert_eq!(base32_nopad(b"f"), "MY");
}
