//! Debian's `docker-registry` (distribution 2.8) as a child process, configured like Docker
//! Hub: token auth against the world's issuer and blob GET/HEAD answered with 307 to the CDN.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::certs::TlsFiles;
use super::process::{free_port, require_tool, spawn_child, wait_for_port, ManagedChild};
use super::token;

pub struct Registry {
    pub child: ManagedChild,
    pub url: String,
    /// Filesystem driver root; the CDN serves this directory.
    pub storage_root: PathBuf,
    /// Apache combined log of every request the registry received (its stdout).
    pub access_log: PathBuf,
    /// Everything else it logs (stderr, level warn).
    pub log: PathBuf,
}

pub struct RegistryOptions<'a> {
    pub dir: &'a Path,
    pub storage_root: &'a Path,
    /// Where its clients get tokens; empty: no auth at all.
    pub realm: String,
    /// `service` of the registry's token config: the audience its tokens must name.
    pub service: &'a str,
    pub root_cert_bundle: &'a Path,
    pub cdn_url: &'a str,
    pub tls: Option<&'a TlsFiles>,
}

/// Start the registry; retries on another port if the picked one was taken meanwhile.
/// Only waits for the port: the caller checks `/v2/` answers 401.
pub fn start(opts: &RegistryOptions) -> Registry {
    let bin = require_tool("docker-registry");
    let conf = opts.dir.join("registry.yml");
    let access_log = opts.dir.join("registry-access.log");
    let log = opts.dir.join("registry.log");
    for _attempt in 0..5 {
        let port = free_port();
        std::fs::write(&conf, config(opts, port)).expect("write registry.yml");
        let mut cmd = Command::new(&bin);
        cmd.arg("serve").arg(&conf);
        // REGISTRY_* variables would override the config file.
        cmd.env_clear();
        cmd.stdin(Stdio::null())
            .stdout(File::create(&access_log).expect("create registry access log"))
            .stderr(File::create(&log).expect("create registry log"));
        let mut child = spawn_child(cmd);
        let addr = format!("127.0.0.1:{port}");
        if wait_for_port(&addr, Duration::from_secs(15))
            && child.try_wait().ok().flatten().is_none()
        {
            let scheme = if opts.tls.is_some() { "https" } else { "http" };
            return Registry {
                child,
                url: format!("{scheme}://{addr}"),
                storage_root: opts.storage_root.to_path_buf(),
                access_log,
                log,
            };
        }
    }
    panic!(
        "docker-registry did not start; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

fn config(opts: &RegistryOptions, port: u16) -> String {
    let p = |path: &Path| path.display().to_string();
    let tls = match opts.tls {
        Some(t) => format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            p(&t.cert),
            p(&t.key)
        ),
        None => String::new(),
    };
    // No realm: a registry that serves anyone (as mirror.gcr.io serves Docker Hub's images).
    let auth = match opts.realm.as_str() {
        "" => String::new(),
        realm => format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    \
             rootcertbundle: {}\n",
            opts.service,
            token::ISSUER,
            p(opts.root_cert_bundle)
        ),
    };
    // The redirect middleware (2.8) keeps only scheme and host of `baseurl` and appends the
    // driver path, e.g. /docker/registry/v2/blobs/sha256/ab/<hex>/data; it applies to HEAD too.
    format!(
        r#"version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: hubferry-world-http-secret
{tls}{auth}middleware:
  storage:
    - name: redirect
      options:
        baseurl: {cdn}
"#,
        root = p(opts.storage_root),
        auth = auth,
        cdn = opts.cdn_url,
    )
}

/// One request from the registry's access log (Apache combined format).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRequest {
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    pub status: u16,
    pub user_agent: String,
}

/// Parse the access log: `127.0.0.1 - - [date] "HEAD /v2/... HTTP/1.1" 200 123 "referer" "ua"`.
pub fn read_access_log(path: &Path) -> Vec<RegistryRequest> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(parse_access_line).collect()
}

fn parse_access_line(line: &str) -> Option<RegistryRequest> {
    let mut quoted = line.split('"');
    let _prefix = quoted.next()?;
    let request = quoted.next()?;
    let status = quoted.next()?.split_whitespace().next()?.parse().ok()?;
    // Then: referer, the space between, user agent.
    let user_agent = quoted.nth(2).unwrap_or("").to_string();
    let mut parts = request.split(' ');
    Some(RegistryRequest {
        method: parts.next()?.to_string(),
        uri: parts.next()?.to_string(),
        status,
        user_agent,
    })
}

#[test]
fn parses_combined_log_lines() {
    let line = r#"127.0.0.1 - - [27/Nov/2026:18:16:04 +0000] "HEAD /v2/library/nginx/manifests/latest HTTP/1.1" 200 529 "" "containerd/1.7""#;
    let r = parse_access_line(line).unwrap();
    assert_eq!(r.method, "HEAD");
    assert_eq!(r.uri, "/v2/library/nginx/manifests/latest");
    assert_eq!(r.status, 200);
    assert_eq!(r.user_agent, "containerd/1.7");
}
