//! Docker Hub's pull budget in view: an nginx in front of the test world's registry answers as
//! Docker Hub does, with `ratelimit-limit`, `ratelimit-remaining` and
//! `docker-ratelimit-source` on every answer, a budget the test lowers by touching a file, and
//! 429 `TOOMANYREQUESTS` with `Retry-After` once it is spent. The same nginx answers 503 on
//! demand for the failover tests.

use std::{path::PathBuf, time::Duration};

use crate::{
    hubferry::{raw_get, Hubferry, FOLLOW_LOCAL_REDIRECTS},
    operations::{get_text, sample},
    world::{self, ManagedChild, World},
};

const SOURCE: &str = "203.0.113.7";

/// The nginx in front of a registry; `dir` holds the switch files `low`, `spent` and
/// `unavailable` (503).
pub struct Hub {
    _child: ManagedChild,
    pub url: String,
    dir: PathBuf,
}

impl Hub {
    /// Turns a behaviour on (`low`, `spent`, `unavailable`).
    pub fn switch(&self, name: &str) {
        std::fs::write(self.dir.join(name), b"").unwrap();
    }

    /// Turns it off again.
    pub fn unswitch(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// How many requests reached this nginx so far.
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

/// Docker Hub's face on `registry` (a URL).
pub fn hub(registry: &str) -> Hub {
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    let nginx = world::require_tool("nginx");
    let port = world::free_port();
    let p = |name: &str| dir.join(name).display().to_string();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {error_log} warn;
events {{ worker_connections 256; }}
http {{
    access_log {access_log};
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $status $retry_after {{ 429 "60"; default ""; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            set $remaining "76;w=21600";
            if (-f {low}) {{ set $remaining "5;w=21600"; }}
            if (-f {unavailable}) {{
                return 503 '{{"errors":[{{"code":"UNAVAILABLE","message":"service unavailable"}}]}}';
            }}
            if (-f {spent}) {{
                return 429 '{{"errors":[{{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}}]}}';
            }}
            default_type application/json;
            add_header ratelimit-limit "100;w=21600" always;
            add_header ratelimit-remaining $remaining always;
            add_header docker-ratelimit-source "{SOURCE}" always;
            add_header Retry-After $retry_after always;
            proxy_pass {registry};
            proxy_http_version 1.1;
            proxy_buffering off;
        }}
    }}
}}
"#,
        pid = p("nginx.pid"),
        error_log = p("error.log"),
        tmp = p("tmp"),
        low = p("low"),
        spent = p("spent"),
        unavailable = p("unavailable"),
        access_log = p("access.log"),
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf).unwrap();
    let child = world::spawn_nginx(&nginx, &file, &dir, &dir.join("error.log"));
    assert!(
        world::wait_for_port(("127.0.0.1", port), Duration::from_secs(10)),
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
    Hub {
        _child: child,
        url: format!("http://127.0.0.1:{port}"),
        dir,
    }
}

/// A manifest GET through hubferry with a token: status, `Retry-After`, body.
pub fn get_manifest(w: &World, hf: &Hubferry) -> (u16, Option<String>, String) {
    let token = w.token(&["repository:library/nginx:pull"]);
    actix_rt::System::new().block_on(async {
        let mut res = world::client(None)
            .get(format!("{}/v2/library/nginx/manifests/latest", hf.url))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .insert_header((
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            ))
            .send()
            .await
            .unwrap();
        let body = res.body().await.unwrap();
        let retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (
            res.status().as_u16(),
            retry_after,
            String::from_utf8_lossy(&body).into_owned(),
        )
    })
}

fn warnings(hf: &Hubferry) -> usize {
    hf.log_text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("pulls left"))
        .count()
}

#[test]
fn the_pull_budget_is_exported_shown_and_warned_about_and_a_429_reaches_the_client() {
    let w = world::plain();
    let hub = hub(&w.registry_url);
    let hf = Hubferry::for_registry(w, &hub.url, &FOLLOW_LOCAL_REDIRECTS);
    let admin = hf.admin_url.clone().unwrap();
    let series = |name: &str| {
        let (_, metrics) = get_text(&format!("{admin}/metrics"));
        sample(
            &metrics,
            &format!(r#"{name}{{registry="docker.io",source="{SOURCE}"}}"#),
        )
    };

    assert_eq!(get_manifest(w, &hf).0, 200);
    assert_eq!(series("hubferry_upstream_ratelimit_limit"), 100.0);
    assert_eq!(series("hubferry_upstream_ratelimit_remaining"), 76.0);
    let page = String::from_utf8(raw_get(&hf.addr, "/", &[("Accept", "text/html")]).body).unwrap();
    assert!(
        page.contains("76 of 100 pulls left per 6 h"),
        "the landing page does not show the budget:\n{page}"
    );
    assert!(page.contains(SOURCE), "{page}");
    assert_eq!(warnings(&hf), 0);

    // Below a tenth of the limit: one warning, however many manifests follow.
    hub.switch("low");
    for _ in 0..3 {
        assert_eq!(get_manifest(w, &hf).0, 200);
    }
    assert_eq!(series("hubferry_upstream_ratelimit_remaining"), 5.0);
    let warned = world::wait_for(Duration::from_secs(5), || {
        (warnings(&hf) > 0).then(|| warnings(&hf))
    });
    assert_eq!(warned, Some(1), "{}", hf.log_text());

    // Spent: Docker Hub's 429 reaches the client as it was, with its Retry-After.
    hub.switch("spent");
    let (status, retry_after, body) = get_manifest(w, &hf);
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("60"));
    assert!(body.contains("TOOMANYREQUESTS"), "{body}");
}
