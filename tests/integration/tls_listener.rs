//! The TLS listener with real TLS clients against a test CA: skopeo pulling over HTTPS, curl
//! negotiating HTTP/2, openssl refused at TLS 1.1 and resuming sessions, and certificates
//! rotated on disk (laid out like a Kubernetes secret volume) or on SIGHUP reaching new
//! connections without a restart.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    hubferry::Hubferry,
    skopeo::{self, assert_blobs_copied},
    world::{self, TlsFiles},
};

/// A temp dir removed at exit.
pub fn tempdir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap()
        .keep();
    world::remove_at_exit(dir.clone());
    dir
}

/// A test CA and a leaf for 127.0.0.1 / localhost, in a fresh directory.
pub fn new_pair(name: &str) -> TlsFiles {
    world::tls_files(&tempdir(&format!("hubferry-tls-{name}-")))
}

/// hubferry for the plain world, plus `extra`, with its TLS listener (`cert`, `key`) on a free
/// port; returns it and the TLS listener's `127.0.0.1:PORT`.
pub fn start(cert: &Path, key: &Path, extra: &[&str]) -> (Hubferry, String) {
    let tls_addr = format!("127.0.0.1:{}", world::free_port());
    let hf = Hubferry::for_world(
        world::plain(),
        &[
            "--tls-listen",
            &tls_addr,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>(),
    );
    assert!(
        world::wait_for_port(&tls_addr, Duration::from_secs(10)),
        "no TLS listener on {tls_addr}; log:\n{}",
        hf.log_text()
    );
    (hf, tls_addr)
}

/// What curl saw: the protocol version it used, the status and the response headers.
struct CurlResponse {
    http_version: String,
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
}

impl CurlResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn curl(args: &[&str], url: &str) -> CurlResponse {
    curl_to(args, url, Path::new("/dev/null"))
}

/// [`curl`], writing the body to `output`.
fn curl_to(args: &[&str], url: &str, output: &Path) -> CurlResponse {
    let curl = world::require_tool("curl");
    let features = Command::new(&curl).arg("-V").output().expect("run curl -V");
    assert!(
        String::from_utf8_lossy(&features.stdout).contains("HTTP2"),
        "this curl cannot speak HTTP/2: run `make test`, which installs Debian's curl"
    );
    let out = Command::new(&curl)
        .args(["-sS", "--max-time", "120", "-D", "-"])
        .arg("-o")
        .arg(output)
        .args(["-w", "\n%{http_version} %{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?} {url} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (head, write_out) = stdout.trim_end().rsplit_once('\n').expect("curl output");
    let (http_version, status) = write_out.split_once(' ').expect("curl write-out");
    CurlResponse {
        http_version: http_version.to_owned(),
        status: status.parse().expect("status"),
        headers: head
            .lines()
            .skip(1) // the status line
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect(),
    }
}

/// One TLS handshake with `openssl s_client` (it ends as soon as stdin, empty, is read).
fn s_client(addr: &str, args: &[&str]) -> Output {
    Command::new(world::require_tool("openssl"))
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client")
}

/// Two handshakes, the second offering the session the first was given: whether the server
/// resumed it (and so skipped the full handshake).
fn resumed(addr: &str, args: &[&str]) -> bool {
    let session = tempdir("hubferry-tls-session-").join("session.pem");
    let mut first = Command::new(world::require_tool("openssl"))
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .args(args)
        .arg("-sess_out")
        .arg(&session)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl s_client");
    // TLS 1.3 tickets arrive after the handshake: stay connected until s_client has stored
    // one (it writes the file as a ticket comes in).
    world::wait_until(Duration::from_secs(10), || {
        std::fs::metadata(&session).is_ok_and(|m| m.len() > 0)
    });
    drop(first.stdin.take());
    first.wait().unwrap();
    let mut args = args.to_vec();
    args.extend(["-sess_in", session.to_str().unwrap()]);
    let second = s_client(addr, &args);
    String::from_utf8_lossy(&second.stdout).contains("\nReused, ")
}

/// Whether `out` is a completed handshake: openssl prints `Cipher is (NONE)` when none was
/// agreed (its exit status alone does not always say).
fn handshake_completed(out: &Output) -> bool {
    out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("Cipher is (NONE)")
}

/// The base64 body of the first PEM certificate in `text`: equal bodies, same certificate.
pub fn first_certificate(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start;
    Some(
        text[start..end]
            .lines()
            .skip(1)
            .map(str::trim)
            .collect::<String>(),
    )
}

fn certificate_in(path: &Path) -> String {
    first_certificate(&std::fs::read_to_string(path).unwrap()).expect("a PEM certificate")
}

/// The leaf certificate a new connection to `addr` is given.
pub fn served_certificate(addr: &str) -> String {
    let out = s_client(addr, &[]);
    first_certificate(&String::from_utf8_lossy(&out.stdout)).unwrap_or_else(|| {
        panic!(
            "no certificate from {addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Waits until hubferry's log holds more than `seen` lines containing `text`; returns the count.
fn wait_for_log(hf: &Hubferry, text: &str, seen: usize) -> usize {
    let count = || hf.log_text().matches(text).count();
    assert!(
        world::wait_until(Duration::from_secs(10), || count() > seen),
        "no new {text:?} in hubferry's log:\n{}",
        hf.log_text()
    );
    count()
}

#[test]
fn skopeo_pulls_through_the_tls_listener() {
    let w = world::plain();
    let pair = new_pair("skopeo");
    let (hf, tls_addr) = start(&pair.cert, &pair.key, &FOLLOW_LOCAL_REDIRECTS);
    // Verified against the test CA: skopeo speaks HTTPS to hubferry, and fetches its token
    // from the `https://` realm hubferry's challenge names.
    let registry = skopeo::Registry {
        host: &tls_addr,
        ca_file: Some(&pair.ca_cert),
    };
    let alpine = w.image("library/alpine");
    let dir = skopeo::pull(&registry, &alpine.reference(), &["--all"]);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        alpine.manifest
    );
    assert_eq!(
        skopeo::sha256_file(&dir.join("manifest.json")),
        alpine.digest
    );
    assert_blobs_copied(&dir, &alpine.blobs);
    assert!(
        hf.log_text().contains("redirects=1"),
        "the blobs came through the CDN redirect:\n{}",
        hf.log_text()
    );
}

#[test]
fn curl_negotiates_http2_and_is_told_an_https_realm() {
    let w = world::plain();
    let pair = new_pair("curl");
    let (hf, tls_addr) = start(&pair.cert, &pair.key, &FOLLOW_LOCAL_REDIRECTS);
    let ca = pair.ca_cert.to_str().unwrap();
    let base = format!("https://{tls_addr}");

    // ALPN picked h2, and the challenge sends the client back over HTTPS.
    let h2 = curl(&["--http2", "--cacert", ca], &format!("{base}/v2/"));
    assert_eq!(h2.http_version, "2");
    assert_eq!(h2.status, 401);
    let challenge = h2.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{base}/token\"")),
        "{challenge}"
    );

    // HTTP/1.1 over TLS still works.
    let h1 = curl(&["--http1.1", "--cacert", ca], &format!("{base}/v2/"));
    assert_eq!(h1.http_version, "1.1");
    assert_eq!(h1.status, 401);
    assert_eq!(h1.header("www-authenticate"), Some(challenge));

    // The plain listener of the same process still says http: the scheme is per listener.
    let plain = curl(&[], &format!("{}/v2/", hf.url));
    assert_eq!(plain.http_version, "1.1");
    assert!(plain
        .header("www-authenticate")
        .unwrap()
        .starts_with(&format!("Bearer realm=\"{}/token\"", hf.url)));

    // Upstreams are told the client came over HTTPS.
    let marker = format!("repository:library/big-{}:pull", std::process::id());
    let out = tempdir("hubferry-tls-curl-out-");
    let token_file = out.join("token.json");
    let scopes = format!("scope=repository:library/big:pull&scope={marker}");
    let token = curl_to(
        &["--http2", "--cacert", ca],
        &format!("{base}/token?service=registry.docker.io&{scopes}"),
        &token_file,
    );
    assert_eq!((token.http_version.as_str(), token.status), ("2", 200));
    let record = w
        .issuer_records()
        .into_iter()
        .find(|r| r.query.contains(&marker))
        .expect("the issuer saw the token request");
    assert_eq!(record.x_forwarded_proto.as_deref(), Some("https"));

    // The 100 MiB layer streams whole over one HTTP/2 stream (flow control on the client side,
    // the CDN redirect followed by hubferry).
    let token: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    let bearer = format!("Authorization: Bearer {}", token["token"].as_str().unwrap());
    let big = w.big_layer();
    let blob_file = out.join("big.blob");
    let blob = curl_to(
        &["--http2", "--cacert", ca, "-H", &bearer],
        &format!("{base}/v2/library/big/blobs/{}", big.digest),
        &blob_file,
    );
    assert_eq!((blob.http_version.as_str(), blob.status), ("2", 200));
    assert_eq!(
        blob.header("content-length"),
        Some(big.size.to_string().as_str())
    );
    assert_eq!(skopeo::sha256_file(&blob_file), big.digest);
}

#[test]
fn tls_1_1_is_refused_while_1_2_and_1_3_are_served_and_resumed() {
    let pair = new_pair("versions");
    let (_hf, tls_addr) = start(&pair.cert, &pair.key, &[]);
    // OpenSSL 3 only offers TLS 1.1 at security level 0.
    let tls11 = ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"];

    // The same client does complete a TLS 1.1 handshake with a server that allows it, so a
    // failure below is hubferry refusing, not the client unable.
    let control_addr = format!("127.0.0.1:{}", world::free_port());
    let mut control = Command::new(world::require_tool("openssl"));
    control
        .args(["s_server", "-www", "-accept", &control_addr])
        .args(["-cert", pair.cert.to_str().unwrap()])
        .args(["-key", pair.key.to_str().unwrap()])
        .args(tls11)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _control = world::spawn_child(control);
    assert!(world::wait_for_port(&control_addr, Duration::from_secs(10)));
    let out = s_client(&control_addr, &tls11);
    assert!(
        handshake_completed(&out) && String::from_utf8_lossy(&out.stdout).contains("TLSv1.1"),
        "openssl cannot speak TLS 1.1 here: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = s_client(&tls_addr, &tls11);
    assert!(!handshake_completed(&out), "hubferry accepted TLS 1.1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("alert"),
        "the refusal should be hubferry's TLS alert: {stderr}"
    );

    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(&tls_addr, &[flag]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            handshake_completed(&out) && stdout.contains(&format!("New, {version}, Cipher is")),
            "{flag}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Sessions resume, with tickets (1.2 and 1.3) and by session ID from the server's cache
    // (1.2 without tickets); each pair of connections may land on either worker.
    for args in [&["-tls1_2"][..], &["-tls1_2", "-no_ticket"], &["-tls1_3"]] {
        assert!(resumed(&tls_addr, args), "no resumption with {args:?}");
    }
}

/// A directory laid out like a Kubernetes secret volume, which is how cert-manager's renewals
/// reach a pod: `tls.crt` and `tls.key` are symlinks into `..data`, itself a symlink to a
/// directory per version; an update writes a new directory and renames a new `..data` link
/// over the old one, so both files change at once and the paths hubferry holds never do.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: PathBuf, cert: &Path, key: &Path) -> SecretVolume {
        std::fs::create_dir_all(&dir).unwrap();
        let mut volume = SecretVolume { dir, version: 0 };
        volume.update(cert, key);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.dir.join(name)).unwrap();
        }
        volume
    }

    fn update(&mut self, cert: &Path, key: &Path) {
        self.version += 1;
        let version = format!("..version_{}", self.version);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        std::fs::copy(cert, self.dir.join(&version).join("tls.crt")).unwrap();
        std::fs::copy(key, self.dir.join(&version).join("tls.key")).unwrap();
        let staged = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, self.dir.join("..data")).unwrap();
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

fn sighup(hf: &Hubferry) {
    // SAFETY: a plain syscall on our own child's pid.
    let rc = unsafe { libc::kill(hf.child.id() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP failed");
}

#[test]
fn rotated_certificates_reach_new_connections_without_a_restart() {
    let [first, second, third] = ["first", "second", "third"].map(new_pair);
    let mut volume = SecretVolume::new(
        tempdir("hubferry-tls-secret-").join("secret"),
        &first.cert,
        &first.key,
    );
    let (mut hf, tls_addr) = start(&volume.cert(), &volume.key(), &[]);
    assert_eq!(served_certificate(&tls_addr), certificate_in(&first.cert));

    // A renewal on disk: new connections get the new pair within a few seconds.
    volume.update(&second.cert, &second.key);
    let renewed = Instant::now();
    assert!(
        world::wait_until(Duration::from_secs(10), || {
            served_certificate(&tls_addr) == certificate_in(&second.cert)
        }),
        "the renewed certificate was never served; log:\n{}",
        hf.log_text()
    );
    assert!(
        renewed.elapsed() < Duration::from_secs(5),
        "{:?}",
        renewed.elapsed()
    );
    let reloaded = "TLS certificate reloaded (the files changed)";
    wait_for_log(&hf, reloaded, 0);
    // Its whole chain is good: a verifying HTTP/2 client trusts it through the new CA.
    let res = curl(
        &["--http2", "--cacert", second.ca_cert.to_str().unwrap()],
        &format!("https://{tls_addr}/v2/"),
    );
    assert_eq!((res.http_version.as_str(), res.status), ("2", 401));

    // A broken renewal (the third certificate with the second key): logged, naming the
    // setting, and the last good pair is still served.
    volume.update(&third.cert, &second.key);
    let refused = "TLS certificate not reloaded (the files changed)";
    wait_for_log(&hf, refused, 0);
    let log = hf.log_text();
    let warning = log.lines().find(|l| l.contains(refused)).unwrap();
    assert!(
        warning.contains("WARN") && warning.contains("tls.key"),
        "{warning}"
    );
    assert_eq!(served_certificate(&tls_addr), certificate_in(&second.cert));
    assert_eq!(log.matches(reloaded).count(), 1, "{log}");

    // SIGHUP reloads at once, whether the files changed or not, and does not end the process.
    let refused_on_hup = "TLS certificate not reloaded (SIGHUP)";
    sighup(&hf);
    wait_for_log(&hf, refused_on_hup, 0);
    assert_eq!(served_certificate(&tls_addr), certificate_in(&second.cert));

    volume.update(&third.cert, &third.key);
    sighup(&hf);
    wait_for_log(&hf, "TLS certificate reloaded (SIGHUP)", 0);
    assert_eq!(served_certificate(&tls_addr), certificate_in(&third.cert));
    assert!(
        hf.child.try_wait().unwrap().is_none(),
        "SIGHUP ended hubferry"
    );
    // The poll, a moment later, finds nothing new to load. Not a wait: what is tested is that
    // nothing happens over two and a half poll intervals (1 s each), and no event marks a poll
    // that found nothing.
    std::thread::sleep(Duration::from_millis(2500));
    let log = hf.log_text();
    assert_eq!(log.matches(reloaded).count(), 1, "{log}");
    assert_eq!(log.matches(refused).count(), 1, "{log}");
}

#[test]
fn a_bad_pair_stops_start_up_with_one_line_and_tls_alone_serves() {
    let [good, other] = ["good", "other"].map(new_pair);
    let tls_addr = format!("127.0.0.1:{}", world::free_port());
    let hubferry = |cert: &Path, key: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubferry"));
        cmd.args(["--listen", "off", "--admin-listen", "off", "--workers", "1"])
            .args(["--registry", &world::plain().registry_url])
            .args(["--auth", &world::plain().issuer_url])
            .args(["--tls-listen", &tls_addr])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key);
        cmd
    };

    let out = hubferry(&good.cert, &other.key)
        .stdin(Stdio::null())
        .output()
        .expect("run hubferry");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("hubferry: tls.key: ") && last.contains("does not match"),
        "{stderr}"
    );

    // TLS only, with the plain listener off.
    let mut cmd = hubferry(&good.cert, &good.key);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _child = world::spawn_child(cmd);
    assert!(world::wait_for_port(&tls_addr, Duration::from_secs(20)));
    let res = curl(
        &["--http2", "--cacert", good.ca_cert.to_str().unwrap()],
        &format!("https://{tls_addr}/v2/"),
    );
    assert_eq!((res.http_version.as_str(), res.status), ("2", 401));
}
