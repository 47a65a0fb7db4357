//! `GET /` from a browser: a page that says what this mirror is, how to point Docker,
//! containerd, podman and Kubernetes nodes at it (filled in with its own public URL), and how
//! it is doing. Registry clients never ask for `text/html`, so they still get what the nginx
//! config hubferry replaces gave them for `/` (the registry's answer, through `registry::other`).
//!
//! Everything is rendered here at request time: no JavaScript, no template engine, no external
//! assets (the mirror may be the only thing its users can reach). Every inserted value is
//! HTML-escaped, and the URL shown is `origin::public_base`'s answer, never an unchecked `Host`
//! when `public_url` or `server_names` is set.

use std::{fmt::Write as _, time::Duration};

use actix_web::{
    guard::{self, GuardContext},
    http::header,
    web, HttpRequest, HttpResponse, Resource,
};

use super::forward::public_base;
use crate::{
    metrics::{RateLimitSeen, Status},
    upstream::endpoints::EndpointState,
    worker::Worker,
};

/// The `/` resource for browsers; anything else falls through to the default service.
pub fn resource() -> Resource {
    web::resource("/")
        .guard(guard::Get())
        .guard(guard::fn_guard(wants_html))
        .to(page)
}

fn wants_html(ctx: &GuardContext) -> bool {
    ctx.head()
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(accepts_html)
}

/// Whether an `Accept` value names `text/html` (not refused with `q=0`). `*/*` does not count:
/// registry clients send it.
fn accepts_html(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        media.eq_ignore_ascii_case("text/html") && !refused
    })
}

async fn page(req: HttpRequest, worker: web::Data<Worker>) -> HttpResponse {
    let config = &worker.config;
    let view = View {
        base: public_base(&req, config),
        registries: config
            .registries
            .all()
            .iter()
            .map(|u| (u.name.as_str(), u.registry.as_str().trim_end_matches('/')))
            .collect(),
        auth: config.docker_hub.auth.as_str().trim_end_matches('/'),
        index: config.docker_hub.index.as_str().trim_end_matches('/'),
        status: worker.metrics.status(),
        endpoints: worker.breakers.states(),
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // Belt and braces over the escaping: nothing on this page may load or run anything.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(render(&view))
}

/// What the page is made of.
struct View<'a> {
    /// `scheme://host[:port]`, as clients should use it.
    base: String,
    /// Every upstream mirrored: its name and registry URL.
    registries: Vec<(&'a str, &'a str)>,
    auth: &'a str,
    index: &'a str,
    status: Status,
    /// Every endpoint of the registries with several, and whether it is in use.
    endpoints: Vec<EndpointState>,
}

impl View<'_> {
    /// `host[:port]`: how Docker names an insecure registry and podman a mirror location.
    fn host(&self) -> &str {
        self.base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, host)| host)
    }

    fn plain_http(&self) -> bool {
        self.base.starts_with("http://")
    }
}

const STYLE: &str = "\
body{font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1c2430;background:#f5f7fa}\
main{max-width:860px;margin:0 auto;padding:32px 24px 48px}\
h1{font-size:28px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 8px;border-bottom:1px solid #d8dee6;padding-bottom:4px}\
.lead{color:#4a5566;margin:0 0 16px}code{font:14px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}\
.url{font-size:20px;background:#fff;border:1px solid #c9d2dd;border-radius:6px;padding:8px 12px;display:inline-block}\
pre{background:#16202c;color:#e6edf3;padding:14px 16px;border-radius:6px;overflow-x:auto}\
table{border-collapse:collapse;background:#fff;border:1px solid #d8dee6;border-radius:6px}\
td,th{padding:6px 14px;text-align:left;border-bottom:1px solid #e6eaf0}th{color:#4a5566;font-weight:600}\
.note{color:#4a5566;font-size:14px}footer{margin-top:40px;color:#6b7686;font-size:13px}";

fn render(view: &View) -> String {
    let base = escape(&view.base);
    let host = escape(view.host());
    let mut html = String::with_capacity(8 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Docker Hub mirror at {host}</title><style>{STYLE}</style></head><body><main>\
<h1>Docker Hub mirror</h1>\
<p class=\"lead\">A pull-through mirror of Docker Hub, run with hubferry. Images stream from \
Docker Hub to your machines as they pull; nothing is stored here. Point your container runtime \
at this address:</p><p><code class=\"url\" id=\"mirror-url\">{base}</code></p>"
    );

    html.push_str("<h2>Status</h2><table>");
    let status = &view.status;
    row(&mut html, "Up for", &duration_text(status.uptime));
    row(&mut html, "Served", &bytes_text(status.bytes_served));
    if status.budgets.is_empty() {
        row(
            &mut html,
            "Pull budget",
            "not seen yet (Docker Hub states it on manifest requests)",
        );
    }
    for budget in &status.budgets {
        row(&mut html, &budget_label(budget), &budget_text(budget));
    }
    row(&mut html, "Docker Hub token issuer", view.auth);
    row(&mut html, "Docker Hub search index", view.index);
    for (name, registry) in &view.registries {
        row(&mut html, &format!("Registry {name}"), registry);
    }
    for endpoint in &view.endpoints {
        let state = match (endpoint.up, endpoint.failures_in_a_row) {
            (true, 0) => "up".to_owned(),
            (true, n) => format!("up ({n} failures in a row)"),
            (false, n) => format!("down: skipped after {n} failures in a row"),
        };
        row(
            &mut html,
            &format!("Endpoint of {}: {}", endpoint.registry, endpoint.endpoint),
            &state,
        );
    }
    html.push_str("</table>");

    let insecure = view.plain_http();
    html.push_str("<h2>Docker</h2><p>In <code>/etc/docker/daemon.json</code>, then <code>sudo systemctl restart docker</code>:</p>");
    let (raw_base, raw_host) = (view.base.as_str(), view.host());
    let mut daemon = format!("{{\n  \"registry-mirrors\": [\"{raw_base}\"]");
    if insecure {
        let _ = write!(daemon, ",\n  \"insecure-registries\": [\"{raw_host}\"]");
    }
    daemon.push_str("\n}");
    code(&mut html, "setup-docker", &daemon);
    let _ = write!(
        html,
        "<p class=\"note\">Every <code>docker pull</code> of a Docker Hub image then goes through \
this mirror. Without changing the daemon: <code>docker pull {host}/library/alpine:latest</code>.</p>"
    );

    html.push_str("<h2>containerd</h2><p>In <code>/etc/containerd/certs.d/docker.io/hosts.toml</code> \
(containerd 1.x needs <code>config_path = \"/etc/containerd/certs.d\"</code> in the registry section \
of <code>/etc/containerd/config.toml</code>; 2.x reads that directory by default). No restart is needed:</p>");
    code(
        &mut html,
        "setup-containerd",
        &format!(
            "server = \"https://registry-1.docker.io\"\n\n[host.\"{raw_base}\"]\n  capabilities = [\"pull\", \"resolve\"]"
        ),
    );

    html.push_str(
        "<h2>podman, skopeo, CRI-O</h2><p>In <code>/etc/containers/registries.conf</code>:</p>",
    );
    let mut podman = format!(
        "[[registry]]\nprefix = \"docker.io\"\nlocation = \"registry-1.docker.io\"\n\n[[registry.mirror]]\nlocation = \"{raw_host}\""
    );
    if insecure {
        podman.push_str("\ninsecure = true");
    }
    code(&mut html, "setup-podman", &podman);

    html.push_str("<h2>Kubernetes nodes</h2><p>The kubelet pulls through the node's containerd: put \
the <code>hosts.toml</code> above on every node (node image, cloud-init, or a DaemonSet that writes \
it). On k3s and RKE2, in <code>/etc/rancher/k3s/registries.yaml</code> \
(<code>/etc/rancher/rke2/registries.yaml</code>), then restart the service:</p>");
    code(
        &mut html,
        "setup-kubernetes",
        &format!("mirrors:\n  docker.io:\n    endpoint:\n      - \"{raw_base}\""),
    );

    let _ = writeln!(
        html,
        "<footer>hubferry {}</footer></main></body></html>",
        escape(env!("CARGO_PKG_VERSION"))
    );
    html
}

/// A copy-paste block; `text` is escaped here, whole.
fn code(html: &mut String, id: &str, text: &str) {
    let _ = write!(html, "<pre id=\"{id}\"><code>{}</code></pre>", escape(text));
}

fn row(html: &mut String, name: &str, value: &str) {
    let _ = write!(
        html,
        "<tr><th>{}</th><td>{}</td></tr>",
        escape(name),
        escape(value)
    );
}

/// For element content and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `3 d 4 h`, `4 h 5 min`, `6 h`, `5 min`, `12 s`: the two largest units.
fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, minutes) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// Binary units, one decimal: `1.5 GiB`.
fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// "Pull budget, docker.io" and, when the upstream named it, whose budget it is.
fn budget_label(seen: &RateLimitSeen) -> String {
    match seen.source.as_str() {
        "unknown" => format!("Pull budget, {}", seen.registry),
        source => format!("Pull budget, {} ({source})", seen.registry),
    }
}

fn budget_text(seen: &RateLimitSeen) -> String {
    let window = match seen.window_seconds {
        0 => String::new(),
        w => format!(" per {}", duration_text(Duration::from_secs(w as u64))),
    };
    format!(
        "{} of {} pulls left{window}, as of {} ago",
        seen.remaining,
        seen.limit,
        duration_text(seen.ago)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(base: &str) -> View<'static> {
        View {
            base: base.into(),
            registries: vec![
                ("docker.io", "https://registry-1.docker.io"),
                ("ghcr.io", "https://ghcr.io"),
            ],
            auth: "https://auth.docker.io",
            index: "https://index.docker.io",
            status: Status {
                uptime: Duration::from_secs(3 * 3600 + 120),
                bytes_served: 3 << 29,
                budgets: vec![RateLimitSeen {
                    registry: "docker.io",
                    source: "203.0.113.7".into(),
                    limit: 100,
                    remaining: 76,
                    window_seconds: 21600,
                    seen_at: 0,
                    ago: Duration::from_secs(90),
                }],
            },
            endpoints: vec![EndpointState {
                registry: "docker.io",
                endpoint: "https://mirror.gcr.io".into(),
                up: false,
                failures_in_a_row: 3,
            }],
        }
    }

    #[test]
    fn browsers_ask_for_html_registry_clients_do_not() {
        assert!(accepts_html(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(accepts_html("TEXT/HTML"));
        assert!(accepts_html("application/json, text/html;q=0.5"));
        assert!(!accepts_html("*/*"));
        assert!(!accepts_html("text/html;q=0"));
        assert!(!accepts_html(
            "application/vnd.oci.image.index.v1+json, */*"
        ));
        assert!(!accepts_html("text/htmlx"));
        assert!(!accepts_html(""));
    }

    #[test]
    fn the_page_is_filled_in_with_the_mirror_and_its_status() {
        let html = render(&view("https://mirror.example.com"));
        for text in [
            "<code class=\"url\" id=\"mirror-url\">https://mirror.example.com</code>",
            "&quot;registry-mirrors&quot;: [&quot;https://mirror.example.com&quot;]",
            "[host.&quot;https://mirror.example.com&quot;]",
            "location = &quot;mirror.example.com&quot;",
            "- &quot;https://mirror.example.com&quot;",
            "docker pull mirror.example.com/library/alpine:latest",
            "<td>3 h 2 min</td>",
            "<td>1.5 GiB</td>",
            "<td>76 of 100 pulls left per 6 h, as of 1 min ago</td>",
            "<th>Registry docker.io</th><td>https://registry-1.docker.io</td>",
            "<th>Registry ghcr.io</th><td>https://ghcr.io</td>",
            "<th>Endpoint of docker.io: https://mirror.gcr.io</th><td>down: skipped after 3 failures in a row</td>",
        ] {
            assert!(html.contains(text), "missing {text} in\n{html}");
        }
        assert!(!html.contains("insecure"));
        assert!(!html.contains("<script") && !html.contains("http-equiv"));
        // No external assets: the only URLs are the ones shown as text.
        assert!(!html.contains("src=") && !html.contains("href="));
    }

    #[test]
    fn a_plain_http_mirror_is_marked_insecure() {
        let html = render(&view("http://10.0.0.5:5000"));
        assert!(html.contains("&quot;insecure-registries&quot;: [&quot;10.0.0.5:5000&quot;]"));
        assert!(html.contains("insecure = true"));
        assert!(html.contains("[host.&quot;http://10.0.0.5:5000&quot;]"));
    }

    #[test]
    fn inserted_text_cannot_become_markup() {
        let html = render(&view("http://evil<script>alert(1)</script>\"'&"));
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("evil&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(duration_text(Duration::from_secs(12)), "12 s");
        assert_eq!(duration_text(Duration::from_secs(300)), "5 min");
        assert_eq!(
            duration_text(Duration::from_secs(2 * 86_400 + 5 * 3600)),
            "2 d 5 h"
        );
        assert_eq!(bytes_text(0), "0 bytes");
        assert_eq!(bytes_text(2048), "2.0 KiB");
        assert_eq!(bytes_text(5 << 40), "5.0 TiB");
        let mut seen = view("http://m").status.budgets.remove(0);
        assert_eq!(
            budget_text(&seen),
            "76 of 100 pulls left per 6 h, as of 1 min ago"
        );
        assert_eq!(budget_label(&seen), "Pull budget, docker.io (203.0.113.7)");
        seen.source = "unknown".into();
        assert_eq!(budget_label(&seen), "Pull budget, docker.io");
    }
}
