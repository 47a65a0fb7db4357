//! The contenders, all pointed at the same test world: no proxy at all, nginx running the nginx
//! config hubferry replaces, hubferry's release binary, and wharf (a peer project, built from
//! `../shared/peers/wharf`, see `/work/shared/peers/README.md`) when its source is there.
//! Each proxy can be pointed at another upstream registry (the proxy-bound manifest scenario's
//! static nginx).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::world::{self, ManagedChild, TlsFiles, World};

/// The adapted nginx config; every change from the original post's is commented in the file.
const NGINX_CONFIG_TEMPLATE: &str = include_str!("nginx-config.conf");

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Direct,
    NginxConfig,
    Hubferry,
    Wharf,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::NginxConfig => "nginx-config",
            Kind::Hubferry => "hubferry",
            Kind::Wharf => "wharf",
        }
    }
}

pub struct Contender {
    pub kind: Kind,
    /// `http://127.0.0.1:PORT`: HTTP/1.1 without TLS.
    pub plain: String,
    /// `https://127.0.0.1:PORT` (HTTP/2 by ALPN); none for direct, whose registry is plain.
    pub tls: Option<String>,
    /// `127.0.0.1:PORT` of hubferry's admin listener (`/metrics`); none for the others.
    #[allow(dead_code)] // read by the soak, not by compare
    pub admin: Option<String>,
    process: Option<Process>,
}

enum Process {
    Nginx(Nginx),
    Hubferry(ManagedChild),
    Wharf(ManagedChild),
}

impl Contender {
    /// The process whose tree is measured (nginx's master, hubferry); none for direct.
    pub fn pid(&self) -> Option<u32> {
        match &self.process {
            Some(Process::Nginx(n)) => Some(n.child.id()),
            Some(Process::Hubferry(c)) | Some(Process::Wharf(c)) => Some(c.id()),
            None => None,
        }
    }

    /// Without a proxy the client itself follows the registry's 307 to the CDN.
    pub fn client_follows_redirects(&self) -> bool {
        self.kind == Kind::Direct
    }

    /// `127.0.0.1:PORT` of the plain listener, for raw sockets.
    pub fn plain_addr(&self) -> &str {
        self.plain.trim_start_matches("http://")
    }
}

/// The registry a proxy is pointed at, and the name its files get in the bench's temp dir (the
/// proxy-bound scenario runs a second set of proxies beside the first).
pub struct Upstream<'a> {
    /// `http://127.0.0.1:PORT`.
    pub registry_url: &'a str,
    /// Suffix of this set's file names ("" for the test world's registry).
    pub label: &'a str,
}

impl Upstream<'_> {
    /// The test world's registry.
    pub fn world(world: &World) -> Upstream<'_> {
        Upstream {
            registry_url: &world.registry_url,
            label: "",
        }
    }

    fn host(&self) -> &str {
        self.registry_url
            .split_once("://")
            .map_or(self.registry_url, |(_, rest)| rest)
    }
}

/// No proxy: clients talk to the registry and follow its redirect to the CDN themselves.
pub fn direct(world: &World) -> Contender {
    direct_to(&Upstream::world(world))
}

/// No proxy, against `upstream`.
pub fn direct_to(upstream: &Upstream) -> Contender {
    Contender {
        kind: Kind::Direct,
        plain: upstream.registry_url.to_string(),
        tls: None,
        admin: None,
        process: None,
    }
}

/// nginx with the nginx config hubferry replaces, its master and workers in a private prefix under `dir`.
pub fn nginx_config(world: &World, dir: &Path, tls: &TlsFiles) -> Result<Contender, String> {
    nginx_config_to(world, dir, tls, &Upstream::world(world))
}

/// As [`nginx_config`], its registry placeholders filled with `upstream`'s address.
pub fn nginx_config_to(
    world: &World,
    dir: &Path,
    tls: &TlsFiles,
    upstream: &Upstream,
) -> Result<Contender, String> {
    let nginx = world::require_tool("nginx");
    let prefix = dir.join(format!("nginx-config{}", upstream.label));
    std::fs::create_dir_all(prefix.join("tmp")).map_err(|e| format!("create prefix: {e}"))?;
    let conf = prefix.join("nginx.conf");
    let error_log = prefix.join("error.log");
    let mut last_error = String::new();
    // A port picked by free_port may be taken before nginx binds it: try again on new ones.
    for _attempt in 0..5 {
        let (plain_port, tls_port) = (world::free_port(), world::free_port());
        let text = render_nginx_config(world, upstream, &prefix, tls, plain_port, tls_port)?;
        std::fs::write(&conf, text).map_err(|e| format!("write nginx.conf: {e}"))?;
        let mut child = Nginx {
            child: world::spawn_nginx(&nginx, &conf, &prefix, &error_log),
        };
        let plain = format!("127.0.0.1:{plain_port}");
        let secure = format!("127.0.0.1:{tls_port}");
        if wait_both(&plain, &secure) && child.child.try_wait().ok().flatten().is_none() {
            return Ok(Contender {
                kind: Kind::NginxConfig,
                plain: format!("http://{plain}"),
                tls: Some(format!("https://{secure}")),
                admin: None,
                process: Some(Process::Nginx(child)),
            });
        }
        last_error = std::fs::read_to_string(&error_log).unwrap_or_default();
    }
    Err(format!(
        "the nginx config did not start; error log:\n{last_error}"
    ))
}

/// The nginx config template with this world's addresses, the test certificate and fresh ports.
fn render_nginx_config(
    world: &World,
    upstream: &Upstream,
    prefix: &Path,
    tls: &TlsFiles,
    plain_port: u16,
    tls_port: u16,
) -> Result<String, String> {
    let p = |path: &Path| path.display().to_string();
    let text = NGINX_CONFIG_TEMPLATE
        .replace("{{prefix}}", &p(prefix))
        .replace("{{plain_listen}}", &format!("127.0.0.1:{plain_port}"))
        .replace("{{tls_listen}}", &format!("127.0.0.1:{tls_port}"))
        .replace("{{tls_cert}}", &p(&tls.cert))
        .replace("{{tls_key}}", &p(&tls.key))
        .replace("{{registry_host}}", upstream.host())
        .replace("{{auth_host}}", world.issuer_host())
        .replace("{{index_host}}", world.issuer_host());
    match text.find("{{") {
        Some(at) => Err(format!(
            "the nginx config template has an unknown placeholder near: {}",
            &text[at..(at + 40).min(text.len())]
        )),
        None => Ok(text),
    }
}

/// hubferry's release binary with one worker per core, plain and TLS listeners.
pub fn hubferry(
    world: &World,
    dir: &Path,
    tls: &TlsFiles,
    workers: usize,
) -> Result<Contender, String> {
    hubferry_to(world, dir, tls, workers, &Upstream::world(world))
}

/// As [`hubferry`], with `--registry` set to `upstream`.
pub fn hubferry_to(
    world: &World,
    dir: &Path,
    tls: &TlsFiles,
    workers: usize,
    upstream: &Upstream,
) -> Result<Contender, String> {
    let log = dir.join(format!("hubferry{}.log", upstream.label));
    for _attempt in 0..5 {
        let plain = format!("127.0.0.1:{}", world::free_port());
        let secure = format!("127.0.0.1:{}", world::free_port());
        let admin = format!("127.0.0.1:{}", world::free_port());
        let mut cmd = Command::new(hubferry_bin());
        cmd.args(["--workers", &workers.to_string()])
            .args(["--listen", &plain])
            .args(["--tls-listen", &secure])
            .arg("--tls-cert")
            .arg(&tls.cert)
            .arg("--tls-key")
            .arg(&tls.key)
            .args(["--admin-listen", &admin])
            .args(["--registry", upstream.registry_url])
            .args(["--auth", &world.issuer_url])
            .args(["--index", &world.issuer_url])
            // The test world's CDN is on 127.0.0.1.
            .args(["--allow-private-redirects", "true"]);
        // hubferry refuses unknown HUBFERRY_* variables (the world's HUBFERRY_KEEP_WORLD).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HUBFERRY_") {
                cmd.env_remove(key);
            }
        }
        // Default log level (info): one access line per request, as deployed.
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(|e| format!("create log: {e}"))?);
        let mut child = world::spawn_child(cmd);
        if wait_both(&plain, &secure) && child.try_wait().ok().flatten().is_none() {
            return Ok(Contender {
                kind: Kind::Hubferry,
                plain: format!("http://{plain}"),
                tls: Some(format!("https://{secure}")),
                admin: Some(admin),
                process: Some(Process::Hubferry(child)),
            });
        }
    }
    Err(format!(
        "hubferry did not start; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    ))
}

/// wharf's release binary (`bin`) with its plain and TLS listeners in one process, as hubferry
/// and nginx-config have theirs, pointed at `upstream` and at the world's token issuer.
/// `behind_proxy = true` because otherwise, with HTTPS on, wharf's plain listener only redirects
/// to HTTPS; in wharf's source that setting changes nothing else. wharf offers HTTP/2 by ALPN
/// and runs one actix worker per core for each listener (it has no setting for either).
/// Default logging (`actix_web=info`), as deployed: wharf writes no line per request.
pub fn wharf(
    world: &World,
    dir: &Path,
    tls: &TlsFiles,
    bin: &Path,
    upstream: &Upstream,
) -> Result<Contender, String> {
    let config = dir.join(format!("wharf{}.toml", upstream.label));
    let log = dir.join(format!("wharf{}.log", upstream.label));
    for _attempt in 0..5 {
        let (plain_port, tls_port) = (world::free_port(), world::free_port());
        let text = format!(
            r#"[server]
http_port = {plain_port}
https_port = {tls_port}
http_enabled = true
https_enabled = true
behind_proxy = true
public_base_url = "https://127.0.0.1:{tls_port}"

[registry]
default = "dockerhub"
upstream_registry = "{registry}"
auth_realm = "{issuer}/token"
auth_service = "{service}"
auto_library_prefix = true

[tls]
cert_path = "{cert}"
key_path = "{key}"
"#,
            registry = upstream.registry_url,
            issuer = world.issuer_url,
            service = world::SERVICE,
            cert = tls.cert.display(),
            key = tls.key.display(),
        );
        std::fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("WHARF_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(|e| format!("create log: {e}"))?);
        let mut child = world::spawn_child(cmd);
        let plain = format!("127.0.0.1:{plain_port}");
        let secure = format!("127.0.0.1:{tls_port}");
        if wait_both(&plain, &secure) && child.try_wait().ok().flatten().is_none() {
            return Ok(Contender {
                kind: Kind::Wharf,
                plain: format!("http://{plain}"),
                tls: Some(format!("https://{secure}")),
                admin: None,
                process: Some(Process::Wharf(child)),
            });
        }
    }
    Err(format!(
        "wharf did not start; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    ))
}

/// The binary cargo built for this bench: the release profile (`[profile.bench]` inherits it);
/// `BENCH_HUBFERRY=PATH` measures another build instead (the static one `make image` packs).
pub fn hubferry_bin() -> PathBuf {
    std::env::var_os("BENCH_HUBFERRY")
        .filter(|p| !p.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_hubferry")),
            PathBuf::from,
        )
}

fn wait_both(a: &str, b: &str) -> bool {
    let timeout = Duration::from_secs(15);
    world::wait_for_port(a, timeout) && world::wait_for_port(b, timeout)
}

/// nginx's master. SIGKILL (what [`ManagedChild`] sends) would orphan the workers, still
/// listening; SIGTERM makes the master stop them first.
struct Nginx {
    child: ManagedChild,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let master = self.child.id();
        let workers: Vec<u32> = crate::procstat::tree(master).into_iter().skip(1).collect();
        // SAFETY: signalling our own unreaped child.
        unsafe { libc::kill(master as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The master hung: kill the workers we saw, then ManagedChild kills the master.
        for w in workers {
            // SAFETY: pids of the master's workers, seen a moment ago while it still lived.
            unsafe { libc::kill(w as libc::pid_t, libc::SIGKILL) };
        }
    }
}
