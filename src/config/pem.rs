//! The PEM files an operator names (`tls.cert`, `tls.key`, `upstream.ca_file`), read with
//! rustls-pki-types' parser (the one rustls itself ships; `rustls-pemfile`, its old wrapper, is
//! archived). Errors name the file and say what is wrong in it, without the setting's key: the
//! caller adds that.

use std::{fs, path::Path};

use rustls::pki_types::{
    pem::{self, PemObject},
    CertificateDer, PrivateKeyDer,
};

/// Every `CERTIFICATE` section of the file, in order (a chain leaf first, or a set of trust
/// anchors); other sections, such as a key kept in the same file, are passed over.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(path, &e))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The first private key of the file, of the three kinds rustls takes.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{} holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)",
            path.display()
        ),
        e => not_pem(path, &e),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn not_pem(path: &Path, e: &pem::Error) -> String {
    format!("{} is not valid PEM: {}", path.display(), problem(e))
}

/// pki-types' own `Display` shows a marker or a line as a list of byte values; they are ASCII
/// text, and an operator reads them as such.
fn problem(e: &pem::Error) -> String {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match e {
        // What the parser keeps as the "end marker" is the section's label alone.
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("the line \"-----END {}-----\" is missing", text(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed section start {:?}", text(line))
        }
        pem::Error::Base64Decode(reason) => format!("bad base64 ({reason})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAwQF\n-----END PRIVATE KEY-----\n";

    fn file(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
        let path = dir.path().join("file.pem");
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn sections_of_the_asked_kind_are_read_and_the_rest_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir, &format!("a comment\n{KEY}{CERT}{CERT}"));
        let certs = certificates(&path).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), [0, 1, 2]);
        let key = private_key(&path).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
        assert_eq!(key.secret_der(), [3, 4, 5]);
    }

    #[test]
    fn every_problem_names_the_file_and_reads_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nonexistent.pem");
        let err = certificates(&missing).unwrap_err();
        assert!(err.starts_with("cannot read ") && err.contains("nonexistent.pem"));

        let path = file(&dir, "not PEM at all\n");
        let err = certificates(&path).unwrap_err();
        assert!(err.ends_with("file.pem holds no PEM certificate"), "{err}");
        let err = private_key(&path).unwrap_err();
        assert!(err.contains("file.pem holds no PEM private key"), "{err}");

        for (text, problem) in [
            (
                "-----BEGIN CERTIFICATE-----\nAAEC\n",
                "the line \"-----END CERTIFICATE-----\" is missing",
            ),
            (
                "-----BEGIN CERTIFICATE----\nAAEC\n-----END CERTIFICATE-----\n",
                "malformed section start \"-----BEGIN CERTIFICATE----\"",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nA!EC\n-----END CERTIFICATE-----\n",
                "bad base64",
            ),
        ] {
            let path = file(&dir, text);
            let err = certificates(&path).unwrap_err();
            assert!(err.contains("file.pem is not valid PEM: "), "{err}");
            assert!(err.contains(problem), "{text:?}: {err}");
        }
    }
}
