//! The TLS listener: a rustls server configuration (TLS 1.2 and 1.3 only, ALPN `h2` and
//! `http/1.1`, session resumption) whose certificate comes from [`Certificates`], which loads
//! the PEM pair again when the files change on disk or on SIGHUP, so a renewal (cert-manager,
//! acme.sh, hubferry's own ACME client) needs no restart.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, PoisonError, RwLock},
    time::{Duration, SystemTime},
};

use prometheus_client::metrics::gauge::Gauge;
use rustls::{
    crypto::CryptoProvider,
    pki_types::CertificateDer,
    server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache},
    sign::CertifiedKey,
    version::{TLS12, TLS13},
    Error as TlsError, InconsistentKeys, ServerConfig,
};

use crate::{
    config::pem,
    config::TlsListener,
    server::acme::challenges::{Challenges, TLS_ALPN_PROTOCOL},
};

/// How often the certificate files are looked at. A change is loaded once the files have
/// looked the same for one whole interval, so a tool that writes the certificate and then the
/// key (acme.sh) is not caught half-way: a new pair is served 1–2 s after it is complete.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Sessions kept for resumption by ID (TLS 1.2 clients without tickets, and TLS 1.3 when no
/// ticket is used). An entry is a few hundred bytes.
const SESSION_CACHE_SIZE: usize = 8192;

/// The server configuration every worker of the TLS listener shares: the certificate resolver,
/// the session cache and the ticket keys are behind `Arc`s, so clones made per worker still
/// resume each other's sessions and see every certificate rotation.
///
/// actix-web puts `h2` and `http/1.1` in front of whatever ALPN list it is given (harmless
/// duplicates); they are set here as well so the configuration says what it serves.
pub fn server_config(certs: Arc<Certificates>) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::builder_with_provider(certs.provider.clone())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // RFC 8737: the CA's validation handshake offers this protocol alone, and must get it.
    if certs.challenges.is_some() {
        config.alpn_protocols.push(TLS_ALPN_PROTOCOL.to_vec());
    }
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    // Stateless resumption: keys rotate every 6 h, a ticket lives 12 h (rustls' choice).
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| format!("TLS set-up failed: no session ticket keys: {e}"))?;
    Ok(config)
}

/// The certificate chain and key the TLS listener serves, swapped in place when the files hold
/// a new, good pair. New connections get the current pair; open ones keep theirs.
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    /// `None` only with ACME, until the first certificate is issued: handshakes fail until then.
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// With ACME: the TLS-ALPN-01 answers, given to the CA's validation handshakes.
    challenges: Option<Arc<Challenges>>,
    /// `hubferry_tls_certificate_expiry_timestamp_seconds`, once reported: kept to the pair in
    /// service.
    expiry: OnceLock<Gauge>,
    /// What the files looked like when they were last read, whether the pair was good or not:
    /// a bad pair is reported once, not at every poll, and tried again when the files change.
    loaded_from: Mutex<PairStamp>,
}

impl Certificates {
    /// Reads the pair named by `tls.cert` / `tls.key`; the error is one line naming the setting
    /// at fault.
    pub fn load(tls: &TlsListener) -> Result<Arc<Certificates>, String> {
        let provider = ring_provider();
        let stamp = PairStamp::of(&tls.cert, &tls.key);
        let pair = load_pair(&tls.cert, &tls.key, &provider)?;
        Ok(Certificates::new(tls, stamp, provider, Some(pair), None))
    }

    /// With ACME: the pair stored by an earlier run if there is a good one, else none yet
    /// (the issuer gets one); `challenges` answers the CA's TLS-ALPN-01 handshakes.
    pub fn for_acme(tls: &TlsListener, challenges: Arc<Challenges>) -> Arc<Certificates> {
        let provider = ring_provider();
        let stamp = PairStamp::of(&tls.cert, &tls.key);
        let pair = if stamp.cert.is_none() {
            None
        } else {
            load_pair(&tls.cert, &tls.key, &provider)
                .map_err(|e| {
                    log::warn!("ACME: the stored certificate is unusable, getting a new one: {e}")
                })
                .ok()
        };
        Certificates::new(tls, stamp, provider, pair, Some(challenges))
    }

    /// `loaded_from`: the files' stamp taken before `pair` was read from them, so a write that
    /// lands during the read is seen at the next poll.
    fn new(
        tls: &TlsListener,
        loaded_from: PairStamp,
        provider: Arc<CryptoProvider>,
        pair: Option<CertifiedKey>,
        challenges: Option<Arc<Challenges>>,
    ) -> Arc<Certificates> {
        Arc::new(Certificates {
            cert_path: tls.cert.clone(),
            key_path: tls.key.clone(),
            provider,
            current: RwLock::new(pair.map(Arc::new)),
            challenges,
            expiry: OnceLock::new(),
            loaded_from: Mutex::new(loaded_from),
        })
    }

    /// The pair new connections are given; `None` before ACME's first certificate.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps `gauge` at the expiry (Unix time) of the certificate in service from now on; 0
    /// while there is none.
    pub fn report_expiry(&self, gauge: Gauge) {
        gauge.set(self.expiry_now());
        let _ = self.expiry.set(gauge);
    }

    fn expiry_now(&self) -> i64 {
        self.current()
            .and_then(|pair| validity(&pair.cert[0]))
            .and_then(|v| v.not_after.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
    }

    /// The crypto provider the pairs are loaded with.
    pub fn provider(&self) -> &CryptoProvider {
        &self.provider
    }

    /// The certificate chain and key files.
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        (self.cert_path.clone(), self.key_path.clone())
    }

    /// Reads the files again; a good pair replaces the current one, a bad one is an error and
    /// the current pair stays.
    pub fn reload(&self) -> Result<(), String> {
        // Stamped before reading, so a write that lands during the read is seen next time.
        let stamp = self.stamp();
        let loaded = load_pair(&self.cert_path, &self.key_path, &self.provider);
        *self
            .loaded_from
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = stamp;
        let pair = loaded?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(pair));
        if let Some(gauge) = self.expiry.get() {
            gauge.set(self.expiry_now());
        }
        Ok(())
    }

    /// [`Certificates::reload`], logged: info on success, a warning (old pair kept) on failure.
    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => log::info!(
                "TLS certificate reloaded ({why}) from {} and {}",
                self.cert_path.display(),
                self.key_path.display()
            ),
            Err(err) => {
                log::warn!("TLS certificate not reloaded ({why}), keeping the old one: {err}")
            }
        }
    }

    /// What the files look like now, through any symlinks (cert-manager swaps a `..data`
    /// symlink; the paths we were given never change).
    fn stamp(&self) -> PairStamp {
        PairStamp::of(&self.cert_path, &self.key_path)
    }

    /// Whether the files differ from those last read.
    fn changed_since_load(&self, now: &PairStamp) -> bool {
        *self
            .loaded_from
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            != *now
    }
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("acme", &self.challenges.is_some())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(challenges) = &self.challenges {
            let validating = client_hello
                .alpn()
                .is_some_and(|mut offered| offered.any(|p| p == TLS_ALPN_PROTOCOL));
            if validating {
                // Only the challenge certificate: never the real one to a validation handshake.
                return client_hello
                    .server_name()
                    .and_then(|name| challenges.tls_alpn_certificate(name));
            }
        }
        self.current()
    }
}

/// Reloads `certs` when its files change (polled every [`POLL_INTERVAL`]) and on SIGHUP, for
/// as long as the actix system runs. Call it from inside the system, before the server starts:
/// the SIGHUP handler is installed here, so from now on SIGHUP no longer ends the process.
pub fn spawn_rotation(certs: Arc<Certificates>) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut hangups = signal(SignalKind::hangup())?;
    let polled = certs.clone();
    actix_rt::spawn(async move {
        let mut previous = polled.stamp();
        loop {
            actix_rt::time::sleep(POLL_INTERVAL).await;
            let now = polled.stamp();
            if now == previous && polled.changed_since_load(&now) {
                polled.reload_logged("the files changed");
            }
            previous = now;
        }
    });
    actix_rt::spawn(async move {
        while hangups.recv().await.is_some() {
            certs.reload_logged("SIGHUP");
        }
    });
    Ok(())
}

/// Identity and version of one file, `None` when it cannot be read (mid-swap, or gone).
/// Inode and device catch an atomic replacement even when size and mtime match.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PairStamp {
    cert: Option<FileStamp>,
    key: Option<FileStamp>,
}

impl PairStamp {
    fn of(cert: &Path, key: &Path) -> PairStamp {
        // `fs::metadata` follows symlinks: the stamp is the file's, not the link's.
        let stamp = |path: &Path| {
            fs::metadata(path).ok().map(|m| FileStamp {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                modified: m.modified().ok(),
            })
        };
        PairStamp {
            cert: stamp(cert),
            key: stamp(key),
        }
    }
}

/// Explicitly ring: feature unification could enable a second provider, and then rustls
/// refuses to pick a default.
fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain (leaf first) and its private key, checked to belong together.
fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = load_chain(cert_path)?;
    let key_der = pem::private_key(key_path).map_err(|e| format!("tls.key: {e}"))?;
    let key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("tls.key: {}: unusable private key: {e}", key_path.display()))?;
    let pair = CertifiedKey::new(chain, key);
    match pair.keys_match() {
        // Unknown: the key type cannot tell its public key; the handshake will show.
        Ok(()) | Err(TlsError::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(pair),
        Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(format!(
            "tls.key: {} does not match the certificate in tls.cert {}",
            key_path.display(),
            cert_path.display()
        )),
        Err(e) => Err(format!(
            "tls.cert: {}: unusable certificate: {e}",
            cert_path.display()
        )),
    }
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    pem::certificates(path).map_err(|e| format!("tls.cert: {e}"))
}

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The validity of a DER certificate; `None` when it cannot be read (then it is replaced).
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let at = |t: x509_parser::time::ASN1Time| {
        let seconds = u64::try_from(t.timestamp()).ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
    };
    Some(Validity {
        not_before: at(cert.validity().not_before)?,
        not_after: at(cert.validity().not_after)?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::rand_core::OsRng;

    use super::*;

    /// The key formats certificate tools write, with the PEM label each one carries.
    #[derive(Clone, Copy)]
    enum KeyFormat {
        /// `PRIVATE KEY`: EC P-256 in PKCS#8 (cert-manager, `openssl genpkey`).
        Pkcs8Ec,
        /// `RSA PRIVATE KEY`: RSA in PKCS#1 (`openssl genrsa -traditional`, older tools).
        Pkcs1Rsa,
        /// `EC PRIVATE KEY`: EC P-256 in SEC1 (`openssl ecparam -genkey`, Let's Encrypt clients).
        Sec1Ec,
    }

    /// One 2048-bit RSA key per test process, as (PKCS#1 PEM, PKCS#8 PEM): generating one
    /// takes far longer than the EC keys, and no test needs two.
    fn rsa_key() -> &'static (String, String) {
        static KEY: OnceLock<(String, String)> = OnceLock::new();
        KEY.get_or_init(|| {
            let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
            (
                key.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
                rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, LineEnding::LF)
                    .unwrap()
                    .to_string(),
            )
        })
    }

    /// A fresh key in `format`: the PEM written to the key file, and the same key in PKCS#8
    /// for rcgen to sign its certificate with (ring reads only PKCS#8).
    fn key_pem(format: KeyFormat) -> (String, String) {
        match format {
            KeyFormat::Pkcs8Ec => {
                let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
                (pem.clone(), pem)
            }
            KeyFormat::Pkcs1Rsa => rsa_key().clone(),
            KeyFormat::Sec1Ec => {
                let key = p256::SecretKey::random(&mut OsRng);
                (
                    key.to_sec1_pem(LineEnding::LF).unwrap().to_string(),
                    key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
                )
            }
        }
    }

    /// Writes `<name>.key` in `format` and a self-signed `<name>.crt` for it.
    fn pair(dir: &Path, name: &str, format: KeyFormat) -> TlsListener {
        let label = match format {
            KeyFormat::Pkcs8Ec => "BEGIN PRIVATE KEY",
            KeyFormat::Pkcs1Rsa => "BEGIN RSA PRIVATE KEY",
            KeyFormat::Sec1Ec => "BEGIN EC PRIVATE KEY",
        };
        let (pem, pkcs8) = key_pem(format);
        assert!(pem.contains(label), "{name}.key is not {label}: {pem}");
        let key = dir.join(format!("{name}.key"));
        fs::write(&key, pem).unwrap();

        // With a subjectAltName extension, so the certificate is X.509 v3: webpki refuses v1.
        let signer = rcgen::KeyPair::from_pem(&pkcs8).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = dir.join(format!("{name}.crt"));
        fs::write(&cert, params.self_signed(&signer).unwrap().pem()).unwrap();
        TlsListener {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert,
            key,
            acme: None,
        }
    }

    fn leaf(path: &Path) -> CertificateDer<'static> {
        load_chain(path).unwrap().remove(0)
    }

    #[test]
    fn loads_pkcs8_pkcs1_and_sec1_keys() {
        let dir = tempfile::tempdir().unwrap();
        for (name, format) in [
            ("pkcs8", KeyFormat::Pkcs8Ec),
            ("pkcs1", KeyFormat::Pkcs1Rsa),
            ("sec1", KeyFormat::Sec1Ec),
        ] {
            let files = pair(dir.path(), name, format);
            let certs = Certificates::load(&files).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                certs.current().unwrap().cert[0],
                leaf(&files.cert),
                "{name}"
            );
            assert_eq!(certs.current().unwrap().keys_match(), Ok(()), "{name}");
        }
    }

    #[test]
    fn a_key_for_another_certificate_is_one_line_naming_tls_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a", KeyFormat::Sec1Ec);
        let b = pair(dir.path(), "b", KeyFormat::Sec1Ec);
        let mixed = TlsListener { key: b.key, ..a };
        let err = Certificates::load(&mixed).unwrap_err();
        assert!(err.starts_with("tls.key: "), "{err}");
        assert!(err.contains("does not match the certificate"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn unreadable_pem_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let good = pair(dir.path(), "good", KeyFormat::Sec1Ec);
        let junk = dir.path().join("junk.pem");
        fs::write(&junk, "not a certificate\n").unwrap();

        let no_cert = TlsListener {
            cert: junk.clone(),
            ..good.clone()
        };
        let err = Certificates::load(&no_cert).unwrap_err();
        assert!(
            err.starts_with("tls.cert: ") && err.contains("no PEM certificate"),
            "{err}"
        );

        let no_key = TlsListener {
            key: junk,
            ..good.clone()
        };
        let err = Certificates::load(&no_key).unwrap_err();
        assert!(
            err.starts_with("tls.key: ") && err.contains("no PEM private key"),
            "{err}"
        );

        // A key where the certificate should be (the mistake of swapping the two flags).
        let swapped = TlsListener {
            cert: good.key.clone(),
            key: good.cert.clone(),
            ..good
        };
        let err = Certificates::load(&swapped).unwrap_err();
        assert!(err.starts_with("tls.cert: "), "{err}");
    }

    #[test]
    fn reload_swaps_in_a_good_pair_and_keeps_the_old_one_on_a_bad_pair() {
        let dir = tempfile::tempdir().unwrap();
        let live = pair(dir.path(), "live", KeyFormat::Sec1Ec);
        let first = leaf(&live.cert);
        let certs = Certificates::load(&live).unwrap();
        assert!(!certs.changed_since_load(&certs.stamp()));

        // A renewal that wrote the certificate but not yet its key: refused, old pair kept.
        let next = pair(dir.path(), "next", KeyFormat::Pkcs1Rsa);
        fs::copy(&next.cert, &live.cert).unwrap();
        assert!(certs.changed_since_load(&certs.stamp()));
        let err = certs.reload().unwrap_err();
        assert!(err.starts_with("tls.key: "), "{err}");
        assert_eq!(certs.current().unwrap().cert[0], first);
        // Reported once: the same bad files are not retried until they change again.
        assert!(!certs.changed_since_load(&certs.stamp()));

        // The key arrives: the new pair is served.
        fs::copy(&next.key, &live.key).unwrap();
        assert!(certs.changed_since_load(&certs.stamp()));
        certs.reload().unwrap();
        assert_eq!(certs.current().unwrap().cert[0], leaf(&next.cert));
        assert_ne!(certs.current().unwrap().cert[0], first);

        // Both files gone: an error, the last good pair stays.
        fs::remove_file(&live.cert).unwrap();
        assert!(certs.reload().unwrap_err().contains("cannot read"));
        assert_eq!(certs.current().unwrap().cert[0], leaf(&next.cert));
    }

    #[test]
    fn a_replaced_file_counts_as_changed_even_with_the_same_size_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let live = pair(dir.path(), "live", KeyFormat::Sec1Ec);
        let certs = Certificates::load(&live).unwrap();
        let before = certs.stamp();
        // cert-manager and most tools replace by rename: a new inode.
        let tmp = dir.path().join("live.crt.tmp");
        fs::copy(&live.cert, &tmp).unwrap();
        let mtime = fs::metadata(&live.cert).unwrap().modified().unwrap();
        fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        fs::rename(&tmp, &live.cert).unwrap();
        let after = certs.stamp();
        assert_eq!(
            before.cert.as_ref().unwrap().len,
            after.cert.as_ref().unwrap().len
        );
        assert_eq!(
            before.cert.as_ref().unwrap().modified,
            after.cert.as_ref().unwrap().modified
        );
        assert!(certs.changed_since_load(&after));
    }

    #[test]
    fn server_config_offers_h2_and_resumes_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certificates::load(&pair(dir.path(), "s", KeyFormat::Sec1Ec)).unwrap();
        let config = server_config(certs).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(config.ticketer.enabled());
        assert!(config.send_tls13_tickets > 0);
        // A stored session can be found again.
        assert!(config
            .session_storage
            .put(b"id".to_vec(), b"session".to_vec()));
        assert_eq!(config.session_storage.get(b"id"), Some(b"session".to_vec()));
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn the_expiry_gauge_follows_the_pair_in_service() {
        let dir = tempfile::tempdir().unwrap();
        let live = pair(dir.path(), "live", KeyFormat::Sec1Ec);
        let certs = Certificates::load(&live).unwrap();
        let gauge = Gauge::default();
        certs.report_expiry(gauge.clone());
        let first = gauge.get();
        // rcgen's default validity ends in 4096; the test pairs' own run for two days.
        assert!(first > 1_700_000_000, "{first}");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = at(2_000_000_000).into();
        fs::write(&live.cert, params.self_signed(&key).unwrap().pem()).unwrap();
        fs::write(&live.key, key.serialize_pem()).unwrap();
        certs.reload().unwrap();
        assert_eq!(gauge.get(), 2_000_000_000);
    }

    #[test]
    fn validity_is_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.not_before = at(1_700_000_000).into();
        params.not_after = at(1_700_086_400).into();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            validity(cert.der()),
            Some(Validity {
                not_before: at(1_700_000_000),
                not_after: at(1_700_086_400),
            })
        );
        assert_eq!(validity(b"not a certificate"), None);
    }
}
