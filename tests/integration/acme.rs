//! Automatic HTTPS against Pebble, Let's Encrypt's test CA, with real challenge validation:
//! Pebble resolves the mirror's name through pebble-challtestsrv (every name is 127.0.0.1) and
//! connects to hubferry's TLS listener (TLS-ALPN-01) or plain listener (HTTP-01) to check the
//! answers. A fresh hubferry gets a certificate and skopeo pulls over it verifying Pebble's
//! root; a short lifetime makes it renew without a restart; a CA that is down leaves the
//! certificate serving, and the issuer gets a new one once a CA is back.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    egress::dns_server,
    hubferry::{Hubferry, FOLLOW_LOCAL_REDIRECTS},
    skopeo::{self, assert_blobs_copied},
    tls_listener::{first_certificate, served_certificate, tempdir},
    world::{self, ManagedChild},
};

/// The name the certificates are for: Pebble validates it at 127.0.0.1 (through its DNS
/// server), and skopeo, curl and openssl reach `localhost` there too.
const DOMAIN: &str = "localhost";

/// Where Pebble listens and what it validates against; kept so a stopped Pebble can be
/// started again on the same ports.
struct PebbleSetup {
    dir: PathBuf,
    /// The CA of Pebble's own HTTPS certificate: `--acme-ca-file`.
    https_ca: PathBuf,
    port: u16,
    management: u16,
    dns_port: u16,
    /// hubferry's plain and TLS ports, where Pebble checks HTTP-01 and TLS-ALPN-01.
    http_port: u16,
    tls_port: u16,
    /// Lifetime of the certificates it issues, in seconds.
    validity: u64,
}

impl PebbleSetup {
    fn new(dns_port: u16, http_port: u16, tls_port: u16, validity: u64) -> PebbleSetup {
        let dir = tempdir("hubferry-pebble-");
        let files = world::tls_files(&dir);
        let setup = PebbleSetup {
            https_ca: files.ca_cert,
            port: world::free_port(),
            management: world::free_port(),
            dns_port,
            http_port,
            tls_port,
            validity,
            dir,
        };
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{}", setup.port),
            "managementListenAddress": format!("127.0.0.1:{}", setup.management),
            "certificate": files.cert,
            "privateKey": files.key,
            "httpPort": setup.http_port,
            "tlsPort": setup.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": setup.validity,
        }});
        std::fs::write(setup.config(), config.to_string()).unwrap();
        setup
    }

    fn config(&self) -> PathBuf {
        self.dir.join("pebble.json")
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// Starts Pebble; every start is a new CA (new roots, no accounts).
    fn start(&self) -> ManagedChild {
        let log = std::fs::File::create(self.dir.join("pebble.log")).unwrap();
        let mut cmd = Command::new(world::require_tool("pebble"));
        cmd.arg("-config")
            .arg(self.config())
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            // No random validation delays, every nonce accepted, every order validated anew.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = world::spawn_child(cmd);
        assert!(
            world::wait_for_port(("127.0.0.1", self.port), Duration::from_secs(10))
                && world::wait_for_port(("127.0.0.1", self.management), Duration::from_secs(10)),
            "pebble did not start:\n{}",
            self.log()
        );
        child
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// The root this Pebble instance issues under, written to a file (skopeo's CA).
    fn root(&self) -> PathBuf {
        let out = Command::new(world::require_tool("curl"))
            .args(["-sf", "--cacert"])
            .arg(&self.https_ca)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management))
            .output()
            .expect("run curl");
        assert!(out.status.success(), "no root from Pebble's management API");
        let path = self.dir.join(format!("root-{}.pem", world::free_port()));
        std::fs::write(&path, out.stdout).unwrap();
        path
    }
}

/// hubferry for the plain world with ACME for [`DOMAIN`] from `pebble`, on its ports.
fn hubferry(pebble: &PebbleSetup, cache: &Path, challenge: &str) -> Hubferry {
    hubferry_listening_on(pebble.http_port, pebble, cache, challenge)
}

/// As [`hubferry`], with the plain listener on `http_port`, which may not be where Pebble
/// looks.
fn hubferry_listening_on(
    http_port: u16,
    pebble: &PebbleSetup,
    cache: &Path,
    challenge: &str,
) -> Hubferry {
    let listen = format!("127.0.0.1:{http_port}");
    let tls_listen = format!("127.0.0.1:{}", pebble.tls_port);
    let directory = pebble.directory();
    let args = [
        &[
            "--listen",
            listen.as_str(),
            "--tls-listen",
            tls_listen.as_str(),
        ][..],
        &["--acme-domain", DOMAIN, "--acme-email", "ops@hubferry.test"],
        &["--acme-directory", directory.as_str()],
        &["--acme-ca-file", pebble.https_ca.to_str().unwrap()],
        &["--acme-cache-dir", cache.to_str().unwrap()],
        &["--acme-challenge", challenge, "--acme-retry", "1s"],
        &FOLLOW_LOCAL_REDIRECTS,
    ]
    .concat();
    Hubferry::for_world(world::plain(), &args)
}

/// Waits until hubferry's log holds more than `seen` lines containing `text`; returns the
/// count.
fn wait_for_log(hf: &Hubferry, text: &str, seen: usize, within: Duration) -> usize {
    let count = || hf.log_text().matches(text).count();
    assert!(
        world::wait_until(within, || count() > seen),
        "no new {text:?} in hubferry's log:\n{}",
        hf.log_text()
    );
    count()
}

const ISSUED: &str = "ACME: new certificate for localhost";

/// skopeo pulls the world's alpine from hubferry's TLS listener at [`DOMAIN`], verifying the
/// chain against the root of `pebble`'s running instance and the name against `localhost`.
fn pull_over_https(w: &world::World, pebble: &PebbleSetup) {
    let root = pebble.root();
    let host = format!("{DOMAIN}:{}", pebble.tls_port);
    let registry = skopeo::Registry {
        host: &host,
        ca_file: Some(&root),
    };
    let alpine = w.image("library/alpine");
    let dir = skopeo::pull(&registry, &alpine.reference(), &["--all"]);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        alpine.manifest
    );
    assert_blobs_copied(&dir, &alpine.blobs);
}

#[test]
fn a_fresh_mirror_gets_a_certificate_and_skopeo_pulls_over_it() {
    let w = world::plain();
    let (_dns, dns_port) = dns_server();
    let pebble = PebbleSetup::new(dns_port, world::free_port(), world::free_port(), 3600);
    let cache = tempdir("hubferry-acme-");
    // hubferry first: its first tries find no CA, and it keeps trying.
    let hf = hubferry(&pebble, &cache, "tls-alpn-01");
    wait_for_log(
        &hf,
        "ACME: no certificate for localhost",
        0,
        Duration::from_secs(10),
    );
    let _pebble = pebble.start();
    wait_for_log(&hf, ISSUED, 0, Duration::from_secs(60));
    // Its expiry is on /metrics, for alerts.
    let metrics = Command::new(world::require_tool("curl"))
        .args([
            "-sf",
            &format!("{}/metrics", hf.admin_url.as_deref().unwrap()),
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let expiry: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hubferry_tls_certificate_expiry_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no expiry gauge:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Pebble was told 3600 s.
    assert!(
        (now..=now + 3700).contains(&expiry),
        "{expiry} against {now}"
    );
    // Validated for real: Pebble looked at the TLS-ALPN-01 answer, the only one offered.
    assert!(
        hf.log_text()
            .contains("ACME: answering tls-alpn-01 for localhost"),
        "{}",
        hf.log_text()
    );
    assert!(
        pebble.log().contains("set VALID by completed challenge"),
        "{}",
        pebble.log()
    );

    pull_over_https(w, &pebble);

    // Kept for the next start, the key readable by hubferry's user only.
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let key = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap_or_else(|| panic!("no key in the cache: {files:?}"));
    assert_eq!(key.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    assert!(files
        .iter()
        .any(|p| p.to_string_lossy().contains("account-")));

    // A restart serves the stored certificate at once, and orders nothing.
    let served = served_certificate(&format!("127.0.0.1:{}", pebble.tls_port));
    drop(hf);
    let hf = hubferry(&pebble, &cache, "tls-alpn-01");
    assert!(world::wait_for_port(
        ("127.0.0.1", pebble.tls_port),
        Duration::from_secs(10)
    ));
    assert_eq!(
        served_certificate(&format!("127.0.0.1:{}", pebble.tls_port)),
        served
    );
    wait_for_log(&hf, "renewal in", 0, Duration::from_secs(10));
    assert!(!hf.log_text().contains(ISSUED), "{}", hf.log_text());
}

#[test]
fn http_01_renews_without_a_restart_and_survives_a_ca_that_is_down() {
    let (_dns, dns_port) = dns_server();
    // 20 s certificates: renewed after about 13 s.
    let pebble = PebbleSetup::new(dns_port, world::free_port(), world::free_port(), 20);
    let cache = tempdir("hubferry-acme-");
    let ca = pebble.start();
    let hf = hubferry(&pebble, &cache, "http-01");
    let tls_addr = format!("127.0.0.1:{}", pebble.tls_port);
    let issued = wait_for_log(&hf, ISSUED, 0, Duration::from_secs(60));
    assert!(
        hf.log_text()
            .contains("ACME: answered the HTTP-01 challenge at /.well-known/acme-challenge/"),
        "{}",
        hf.log_text()
    );
    let first = served_certificate(&tls_addr);

    // Renewed in place: new connections get the new certificate, no restart.
    let issued = wait_for_log(&hf, ISSUED, issued, Duration::from_secs(40));
    let second = served_certificate(&tls_addr);
    assert_ne!(first, second, "the renewed certificate is not served");
    let stored = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "crt"))
        .unwrap();
    assert_eq!(
        first_certificate(&std::fs::read_to_string(stored).unwrap()).unwrap(),
        second
    );

    // The CA goes away: the renewal fails, is logged, and the certificate keeps serving.
    drop(ca);
    let failures = hf.log_text().matches("ACME: no certificate").count();
    wait_for_log(
        &hf,
        "ACME: no certificate",
        failures,
        Duration::from_secs(40),
    );
    assert!(
        hf.log_text()
            .contains("the certificate in service stays, valid until"),
        "{}",
        hf.log_text()
    );
    assert_eq!(served_certificate(&tls_addr), second);

    // A CA again (a new one: new roots, no account): the retries reach it, a new account is
    // made, and a new certificate is served.
    let _ca = pebble.start();
    wait_for_log(&hf, ISSUED, issued, Duration::from_secs(40));
    assert!(
        hf.log_text().contains("ACME: new account"),
        "{}",
        hf.log_text()
    );
    assert_ne!(served_certificate(&tls_addr), second);
}

/// The README's quick start, with Pebble standing in for Let's Encrypt: `install.sh --domain
/// --email` (into a scratch root), then hubferry started with the config it wrote, gets its
/// certificate, and skopeo pulls over HTTPS verifying the CA's root. What a scratch root and
/// a shared test machine change is given as flags: the ports (80 and 443 are the machine's, so
/// the public URL names the port), and the installed CA file and cache directory (under the
/// scratch root, not /).
#[test]
fn the_quick_start_installs_a_mirror_that_serves_https_with_its_own_certificate() {
    let w = world::plain();
    let (_dns, dns_port) = dns_server();
    let pebble = PebbleSetup::new(dns_port, world::free_port(), world::free_port(), 3600);
    let _ca = pebble.start();
    let destdir = tempdir("hubferry-quickstart-");
    let directory = pebble.directory();
    let out = Command::new("sh")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/install.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_hubferry")])
        .args(["--domain", DOMAIN, "--email", "ops@hubferry.test"])
        .args(["--acme-directory", directory.as_str()])
        .arg("--acme-ca-file")
        .arg(&pebble.https_ca)
        .env("DESTDIR", &destdir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let config = destdir.join("etc/hubferry/hubferry.toml");
    let listen = format!("127.0.0.1:{}", pebble.http_port);
    let tls_listen = format!("127.0.0.1:{}", pebble.tls_port);
    let ca_file = destdir.join("etc/hubferry/acme-ca.pem");
    let cache = destdir.join("var/lib/hubferry/acme");
    let public_url = format!("https://{DOMAIN}:{}", pebble.tls_port);
    let mut args = Hubferry::world_args(w, &w.registry_url);
    args.extend(
        [
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &listen,
            "--tls-listen",
            &tls_listen,
            "--public-url",
            &public_url,
            "--acme-ca-file",
            ca_file.to_str().unwrap(),
            "--acme-cache-dir",
            cache.to_str().unwrap(),
            "--acme-retry",
            "1s",
        ]
        .iter()
        .chain(&FOLLOW_LOCAL_REDIRECTS)
        .map(|s| s.to_string()),
    );
    let hf = Hubferry::start(&args);
    wait_for_log(&hf, ISSUED, 0, Duration::from_secs(60));

    pull_over_https(w, &pebble);
}

/// A challenge the CA cannot validate (HTTP-01 asked of a port where nothing answers, as when
/// port 80 is closed): the CA's refusal is logged, with its reason, and tried again later.
#[test]
fn a_refused_challenge_is_logged_with_the_cas_reason_and_tried_again() {
    let (_dns, dns_port) = dns_server();
    // Pebble checks HTTP-01 on a port nobody listens on; hubferry's plain listener is
    // elsewhere.
    let closed = world::free_port();
    let pebble = PebbleSetup::new(dns_port, closed, world::free_port(), 3600);
    let _ca = pebble.start();
    let cache = tempdir("hubferry-acme-");
    let hf = hubferry_listening_on(world::free_port(), &pebble, &cache, "http-01");
    // The CA's own problem document, naming what it could not reach; the wait doubles.
    let refused = "the CA said: API error: Get \"http://localhost:";
    wait_for_log(&hf, refused, 1, Duration::from_secs(60));
    let log = hf.log_text();
    assert!(
        log.contains("urn:ietf:params:acme:error:connection"),
        "{log}"
    );
    for wait in ["trying again in 1s", "trying again in 2s"] {
        assert!(
            log.contains(&format!(
                "HTTPS has no certificate until one is issued; {wait}"
            )),
            "{wait}: {log}"
        );
    }
    assert!(!hf.log_text().contains(ISSUED), "{}", hf.log_text());
}
