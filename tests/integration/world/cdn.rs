//! The blob CDN: nginx serving the registry's storage root, so the URLs distribution's
//! `redirect` middleware hands out (`<baseurl>/docker/registry/v2/blobs/sha256/xx/<hex>/data`)
//! resolve to the blob bytes, with Range/HEAD support like a real CDN.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::certs::TlsFiles;
use super::process::{free_port, require_tool, spawn_child, wait_for_port, ManagedChild};

/// One line of the CDN access log. Absent headers are `None` (nginx logs them as "-").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CdnLogEntry {
    pub method: String,
    /// Request URI as sent (path and query).
    pub uri: String,
    pub status: u16,
    /// Body bytes sent (`$body_bytes_sent`).
    pub body_bytes: u64,
    /// Total bytes sent, headers included (`$bytes_sent`).
    pub bytes_sent: u64,
    pub authorization: Option<String>,
    pub host: Option<String>,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub user_agent: Option<String>,
}

/// Tab-separated so values never need quoting: nginx escapes control characters (tab
/// included) inside variables.
const LOG_FORMAT: &str = "$request_method\\t$request_uri\\t$status\\t$body_bytes_sent\\t\
$bytes_sent\\t$http_authorization\\t$http_host\\t$http_range\\t$http_if_range\\t\
$http_user_agent";

pub struct Cdn {
    pub child: ManagedChild,
    pub url: String,
    pub access_log: PathBuf,
}

/// Start nginx serving `root`, over HTTPS when `tls` is given. Retries on another port if the
/// picked one was taken in the meantime.
pub fn start(dir: &Path, root: &Path, tls: Option<&TlsFiles>) -> Cdn {
    let nginx = require_tool("nginx");
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp")).expect("create nginx dir");
    let access_log = dir.join("cdn-access.log");
    let error_log = dir.join("cdn-error.log");
    for _attempt in 0..5 {
        let port = free_port();
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            config(&prefix, root, port, &access_log, &error_log, tls),
        )
        .expect("write nginx.conf");
        let mut child = spawn_nginx(&nginx, &conf, &prefix, &error_log);
        let addr = format!("127.0.0.1:{port}");
        if wait_for_port(&addr, Duration::from_secs(10))
            && child.try_wait().ok().flatten().is_none()
        {
            let scheme = if tls.is_some() { "https" } else { "http" };
            return Cdn {
                child,
                url: format!("{scheme}://{addr}"),
                access_log,
            };
        }
    }
    panic!(
        "nginx did not start; error log:\n{}",
        std::fs::read_to_string(&error_log).unwrap_or_default()
    );
}

/// `worker_connections`: room for the benchmark's 500 concurrent streams plus keep-alive
/// connections left from its earlier runs, as a CDN is sized for many clients.
///
/// `master_process off`: a single process, so the death signal set on it reaches the process
/// that serves (orphaned workers would otherwise keep the port), and no privilege drop to an
/// unprivileged user that could not read our 0700 temp dir when run as root.
fn config(
    prefix: &Path,
    root: &Path,
    port: u16,
    access_log: &Path,
    error_log: &Path,
    tls: Option<&TlsFiles>,
) -> String {
    let p = |path: &Path| path.display().to_string();
    let tmp = p(&prefix.join("tmp"));
    let (listen, ssl) = match tls {
        Some(t) => (
            format!("127.0.0.1:{port} ssl"),
            format!(
                "ssl_certificate {};\n        ssl_certificate_key {};",
                p(&t.cert),
                p(&t.key)
            ),
        ),
        None => (format!("127.0.0.1:{port}"), String::new()),
    };
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {error_log} warn;
events {{ worker_connections 4096; }}
http {{
    log_format hubferry "{LOG_FORMAT}";
    access_log {access_log} hubferry;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen {listen};
        server_name _;
        {ssl}
        root {root};
        location / {{ }}
    }}
}}
"#,
        pid = p(&prefix.join("nginx.pid")),
        error_log = p(error_log),
        access_log = p(access_log),
        root = p(root),
    )
}

/// Parse the access log written by [`start`].
/// Starts `nginx` on config `conf` with everything it writes under `prefix`; dies with the
/// test process like every world child.
pub fn spawn_nginx(nginx: &Path, conf: &Path, prefix: &Path, error_log: &Path) -> ManagedChild {
    let mut cmd = Command::new(nginx);
    cmd.arg("-c").arg(conf).arg("-p").arg(prefix);
    // -e: the compiled-in error log must not be touched before our config is read.
    cmd.arg("-e").arg(error_log);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    spawn_child(cmd)
}

pub fn read_log(path: &Path) -> Vec<CdnLogEntry> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<CdnLogEntry> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != 10 {
        return None;
    }
    let opt = |s: &str| (s != "-").then(|| s.to_string());
    Some(CdnLogEntry {
        method: f[0].to_string(),
        uri: f[1].to_string(),
        status: f[2].parse().ok()?,
        body_bytes: f[3].parse().ok()?,
        bytes_sent: f[4].parse().ok()?,
        authorization: opt(f[5]),
        host: opt(f[6]),
        range: opt(f[7]),
        if_range: opt(f[8]),
        user_agent: opt(f[9]),
    })
}
