//! The upstream of the proxy-bound manifest scenario: nginx answering one manifest from a file
//! with the headers the registry sends with it, so that what limits the requests/s is the
//! proxy, not the registry (which used most of the machine in the registry-bound scenario).

use std::path::Path;
use std::time::Duration;

use crate::world::{self, ManagedChild};

pub struct StaticUpstream {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Stopped (SIGKILL, one process) when dropped.
    _child: ManagedChild,
}

/// nginx serving `manifest` at `path` (and 404 elsewhere) with the registry's headers for it:
/// Content-Type, Docker-Content-Digest, Docker-Distribution-Api-Version, ETag (the digest,
/// quoted, as distribution sends it, instead of nginx's own) and Content-Length. One process
/// (`master_process off`, as the world's CDN), no access log: the cheapest answer nginx can give.
pub fn start(
    dir: &Path,
    path: &str,
    manifest: &[u8],
    media_type: &str,
    digest: &str,
) -> Result<StaticUpstream, String> {
    let nginx = world::require_tool("nginx");
    let prefix = dir.join("static-upstream");
    let root = prefix.join("root");
    let file = root.join(path.trim_start_matches('/'));
    let parent = file.parent().ok_or("manifest path has no parent")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    std::fs::create_dir_all(prefix.join("tmp")).map_err(|e| format!("create tmp: {e}"))?;
    std::fs::write(&file, manifest).map_err(|e| format!("write {}: {e}", file.display()))?;
    let conf = prefix.join("nginx.conf");
    let error_log = prefix.join("error.log");
    for _attempt in 0..5 {
        let addr = format!("127.0.0.1:{}", world::free_port());
        std::fs::write(&conf, config(&prefix, &root, &addr, media_type, digest))
            .map_err(|e| format!("write nginx.conf: {e}"))?;
        let mut child = world::spawn_nginx(&nginx, &conf, &prefix, &error_log);
        if world::wait_for_port(&addr, Duration::from_secs(10))
            && child.try_wait().ok().flatten().is_none()
        {
            return Ok(StaticUpstream {
                url: format!("http://{addr}"),
                _child: child,
            });
        }
    }
    Err(format!(
        "the static upstream did not start; error log:\n{}",
        std::fs::read_to_string(&error_log).unwrap_or_default()
    ))
}

/// `keepalive_requests` is raised from nginx's 1000 so that the proxies' pooled upstream
/// connections are not closed every thousand requests, as the registry does not close them.
fn config(prefix: &Path, root: &Path, addr: &str, media_type: &str, digest: &str) -> String {
    let p = |path: &Path| path.display().to_string();
    let tmp = p(&prefix.join("tmp"));
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {error_log} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    server {{
        listen {addr};
        server_name _;
        root {root};
        location /v2/ {{
            types {{ }}
            default_type {media_type};
            etag off;
            add_header Docker-Content-Digest {digest};
            add_header Docker-Distribution-Api-Version registry/2.0;
            add_header ETag '"{digest}"';
        }}
        location / {{ return 404; }}
    }}
}}
"#,
        pid = p(&prefix.join("nginx.pid")),
        error_log = p(&prefix.join("error.log")),
        root = p(root),
    )
}
