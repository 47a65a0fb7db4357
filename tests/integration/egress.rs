//! Reaching the upstream through an egress proxy: Debian's tinyproxy (HTTP: absolute-form
//! requests to the plain world, CONNECT tunnels to the TLS world) and microsocks (SOCKS5, with
//! names resolved by hubferry or by the proxy), each started here on 127.0.0.1 and asked for
//! a login. skopeo pulls through hubferry, and the proxy's own log shows the traffic went
//! through it; `no_proxy`, the conventional variables, an upstream's own `proxy`, a proxy that
//! is down or refuses the login, and the egress policy behind a proxy.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    hubferry::{Hubferry, FOLLOW_LOCAL_REDIRECTS},
    operations::get_text,
    skopeo::{self, assert_blobs_copied},
    world::{self, ManagedChild, World},
};

const USER: &str = "ferry";
/// What tinyproxy's configuration accepts in a password: letters, digits, `-`, `.` and `_`.
const PASSWORD: &str = "s3cret.pass";

struct ProxyServer {
    _child: ManagedChild,
    port: u16,
    log: PathBuf,
}

impl ProxyServer {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls the proxy's log for `needle` (a proxy may log a request just after serving it).
    fn wait_for_log(&self, needle: &str) -> String {
        world::wait_for(Duration::from_secs(10), || {
            let text = self.log_text();
            text.contains(needle).then_some(text)
        })
        .unwrap_or_else(|| {
            panic!(
                "the proxy's log never showed {needle:?}:\n{}",
                self.log_text()
            )
        })
    }
}

fn scratch() -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    dir
}

/// tinyproxy on 127.0.0.1, asking for `USER`/`PASSWORD` when `login`; CONNECT to any port.
fn tinyproxy(login: bool) -> ProxyServer {
    let dir = scratch();
    let port = world::free_port();
    let log = dir.join("tinyproxy.log");
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\n\
         MaxClients 64\nAllow 127.0.0.1\nDisableViaHeader Yes\n",
        log.display()
    );
    if login {
        conf.push_str(&format!("BasicAuth {USER} {PASSWORD}\n"));
    }
    let file = dir.join("tinyproxy.conf");
    std::fs::write(&file, conf).unwrap();
    let mut cmd = Command::new(world::require_tool("tinyproxy"));
    cmd.arg("-d")
        .arg("-c")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("tinyproxy.stderr")).unwrap());
    let child = world::spawn_child(cmd);
    assert!(
        world::wait_for_port(("127.0.0.1", port), Duration::from_secs(10)),
        "tinyproxy did not start: {}",
        std::fs::read_to_string(dir.join("tinyproxy.stderr")).unwrap_or_default()
    );
    ProxyServer {
        _child: child,
        port,
        log,
    }
}

/// microsocks on 127.0.0.1, asking for `USER`/`PASSWORD`; it logs each connection it makes.
fn microsocks() -> ProxyServer {
    let dir = scratch();
    let port = world::free_port();
    let log = dir.join("microsocks.log");
    let mut cmd = Command::new(world::require_tool("microsocks"));
    cmd.args([
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-u",
        USER,
        "-P",
        PASSWORD,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    let child = world::spawn_child(cmd);
    assert!(
        world::wait_for_port(("127.0.0.1", port), Duration::from_secs(10)),
        "microsocks did not start"
    );
    ProxyServer {
        _child: child,
        port,
        log,
    }
}

fn through(hf: &Hubferry) -> skopeo::Registry<'_> {
    skopeo::Registry {
        host: &hf.addr,
        ca_file: None,
    }
}

/// skopeo pulls `library/nginx` through `hf`: the manifest as pushed (not one the registry made
/// up for a client whose `Accept` lines were lost on the way) and every blob.
fn pull_nginx(w: &World, hf: &Hubferry) {
    let nginx = w.image("library/nginx");
    let dir = skopeo::pull(&through(hf), &nginx.reference(), &[]);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        nginx.manifest,
        "not the manifest pushed"
    );
    assert_blobs_copied(&dir, &nginx.blobs);
}

/// The first line of hubferry's log `pred` accepts, waiting for it to be written.
fn wait_for_log_line(hf: &Hubferry, pred: impl Fn(&str) -> bool) -> String {
    world::wait_for(Duration::from_secs(5), || {
        hf.log_text().lines().find(|l| pred(l)).map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no such line in hubferry's log:\n{}", hf.log_text()))
}

/// hubferry for `registry` (the world's registry on another name, say) with `--egress-proxy
/// proxy_url` and `extra`, following redirects to the world's CDN on 127.0.0.1.
fn via_proxy(w: &World, registry: &str, proxy_url: &str, extra: &[&str]) -> Hubferry {
    let args = [
        &["--egress-proxy", proxy_url][..],
        extra,
        &FOLLOW_LOCAL_REDIRECTS,
    ]
    .concat();
    Hubferry::for_registry(w, registry, &args)
}

fn with_login(scheme: &str, port: u16) -> String {
    format!("{scheme}://{USER}:{PASSWORD}@127.0.0.1:{port}")
}

#[test]
fn skopeo_pulls_through_an_http_proxy_in_absolute_form() {
    let w = world::plain();
    let proxy = tinyproxy(true);
    let proxy_url = with_login("http", proxy.port);
    let hf = via_proxy(w, &w.registry_url, &proxy_url, &[]);
    pull_nginx(w, &hf);
    // The registry, the token issuer and the CDN the blobs were redirected to: every one of
    // them was asked through the proxy, with the whole URL as the request target.
    proxy.wait_for_log(&format!("GET {}/v2/", w.registry_url));
    proxy.wait_for_log(&format!("GET {}/token", w.issuer_url));
    proxy.wait_for_log(&format!("GET {}/", w.cdn_url));
    let log = hf.log_text();
    assert!(
        !log.contains(PASSWORD),
        "the proxy's password was logged:\n{log}"
    );
}

#[test]
fn skopeo_pulls_from_https_upstreams_through_connect_tunnels() {
    let w = world::tls();
    let proxy = tinyproxy(true);
    let proxy_url = with_login("http", proxy.port);
    let hf = via_proxy(w, &w.registry_url, &proxy_url, &[]);
    pull_nginx(w, &hf);
    proxy.wait_for_log(&format!("CONNECT {}", w.registry_host()));
    proxy.wait_for_log(&format!("CONNECT {}", w.cdn_host()));
}

#[test]
fn skopeo_pulls_through_socks5_with_names_resolved_by_either_side() {
    let w = world::plain();
    let proxy = microsocks();
    for scheme in ["socks5", "socks5h"] {
        let proxy_url = with_login(scheme, proxy.port);
        // `localhost`: a name, so that socks5h hands it to the proxy and socks5 resolves it.
        let registry = w.registry_url.replace("127.0.0.1", "localhost");
        let hf = via_proxy(w, &registry, &proxy_url, &[]);
        pull_nginx(w, &hf);
    }
    let log = proxy.wait_for_log(&format!(
        "connected to localhost:{}",
        port_of(&w.registry_url)
    ));
    // socks5: hubferry resolved the name and handed the proxy an address.
    assert!(
        log.contains(&format!(
            "connected to 127.0.0.1:{}",
            port_of(&w.registry_url)
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("connected to 127.0.0.1:{}", port_of(&w.cdn_url))),
        "{log}"
    );
}

fn port_of(url: &str) -> &str {
    url.rsplit(':').next().unwrap().trim_end_matches('/')
}

#[test]
fn no_proxy_destinations_go_direct() {
    let w = world::plain();
    let proxy = tinyproxy(false);
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let hf = via_proxy(
        w,
        &w.registry_url,
        &proxy_url,
        &["--no-proxy", "127.0.0.0/8"],
    );
    pull_nginx(w, &hf);
    let log = proxy.log_text();
    assert!(!log.contains("GET http"), "went through the proxy:\n{log}");
}

#[test]
fn the_conventional_variables_choose_the_proxy() {
    let w = world::plain();
    let proxy = tinyproxy(true);
    let proxy_url = with_login("http", proxy.port);
    let mut args = Hubferry::world_args(w, &w.registry_url);
    args.extend(FOLLOW_LOCAL_REDIRECTS.iter().map(|s| s.to_string()));
    let hf = Hubferry::start_with_env(&args, &[("http_proxy", proxy_url.as_str())]);
    pull_nginx(w, &hf);
    proxy.wait_for_log(&format!("GET {}/v2/", w.registry_url));
    // NO_PROXY takes it back.
    let hf = Hubferry::start_with_env(
        &args,
        &[
            ("HTTP_PROXY", proxy_url.as_str()),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ],
    );
    let before = proxy.log_text().len();
    pull_nginx(w, &hf);
    let after = proxy.log_text();
    assert!(
        !after[before..].contains("GET http"),
        "NO_PROXY was not honoured:\n{}",
        &after[before..]
    );
}

#[test]
fn an_upstream_has_its_own_proxy_or_none() {
    let w = world::plain();
    let proxy = tinyproxy(false);
    let down = format!("http://127.0.0.1:{}", world::free_port());
    // The default proxy is down; docker.io goes direct.
    let file = world::config_file("[[upstreams]]\nname = \"docker.io\"\nproxy = \"none\"\n");
    let hf = Hubferry::for_world(
        w,
        &[
            &[
                "--egress-proxy",
                down.as_str(),
                "--config",
                file.to_str().unwrap(),
            ][..],
            &FOLLOW_LOCAL_REDIRECTS,
        ]
        .concat(),
    );
    pull_nginx(w, &hf);
    // No default proxy; docker.io, and the CDN its blobs are redirected to, through tinyproxy.
    let file = world::config_file(&format!(
        "[[upstreams]]\nname = \"docker.io\"\nproxy = \"http://127.0.0.1:{}\"\n",
        proxy.port
    ));
    let hf = Hubferry::for_world(
        w,
        &[
            &["--config", file.to_str().unwrap()][..],
            &FOLLOW_LOCAL_REDIRECTS,
        ]
        .concat(),
    );
    pull_nginx(w, &hf);
    proxy.wait_for_log(&format!("GET {}/v2/", w.registry_url));
    proxy.wait_for_log(&format!("GET {}/", w.cdn_url));
}

/// The answer to a manifest GET through hubferry: status and body.
fn manifest_answer(hf: &Hubferry) -> (u16, String) {
    get_text(&format!("{}/v2/library/nginx/manifests/latest", hf.url))
}

#[test]
fn a_proxy_that_is_down_or_refuses_the_login_is_named_in_a_502() {
    let w = world::plain();
    let tls = world::tls();
    let refusing = tinyproxy(true);
    let socks = microsocks();
    let down_port = world::free_port();
    let cases: Vec<(&World, String, &str)> = vec![
        (
            w,
            format!("http://127.0.0.1:{down_port}"),
            "cannot be reached",
        ),
        (
            w,
            format!("socks5h://127.0.0.1:{down_port}"),
            "cannot be reached",
        ),
        // Absolute form: the proxy's 407 answer.
        (
            w,
            format!("http://127.0.0.1:{}", refusing.port),
            "asks for credentials",
        ),
        // CONNECT: its 407 to the tunnel.
        (
            tls,
            format!("http://127.0.0.1:{}", refusing.port),
            "asks for credentials",
        ),
        (
            w,
            format!("socks5://{USER}:wrong@127.0.0.1:{}", socks.port),
            "refused the user name and password",
        ),
        (
            w,
            format!("socks5://127.0.0.1:{}", socks.port),
            "asks for credentials",
        ),
    ];
    for (world, proxy_url, reason) in cases {
        let hf = Hubferry::for_world(world, &["--egress-proxy", proxy_url.as_str()]);
        let (status, body) = manifest_answer(&hf);
        assert_eq!(status, 502, "{proxy_url}: {body}");
        assert!(body.contains("UNAVAILABLE"), "{body}");
        assert!(body.contains("egress proxy"), "{proxy_url}: {body}");
        assert!(
            !body.contains("127.0.0.1"),
            "an address of the mirror's network: {body}"
        );
        let shown = proxy_url.replace(":wrong@", ":***@");
        let line = wait_for_log_line(&hf, |line| {
            line.contains("egress proxy") && line.contains(reason)
        });
        assert!(
            line.contains(&shown),
            "the log does not name {shown}: {line}"
        );
        assert!(!line.contains("wrong"), "the password was logged: {line}");
    }
}

#[test]
fn redirects_to_private_addresses_stay_refused_behind_a_proxy() {
    let w = world::plain();
    let tinyproxy = tinyproxy(false);
    let socks = microsocks();
    let blob = w
        .image("library/nginx")
        .layers()
        .next()
        .unwrap()
        .digest
        .clone();
    for proxy_url in [
        format!("http://127.0.0.1:{}", tinyproxy.port),
        with_login("socks5h", socks.port),
        with_login("socks5", socks.port),
    ] {
        // No FOLLOW_LOCAL_REDIRECTS: the CDN on 127.0.0.1 is a private address. The proxy could
        // reach it; hubferry must not ask it to.
        let hf = Hubferry::for_world(w, &["--egress-proxy", proxy_url.as_str()]);
        let token = w.token(&["repository:library/nginx:pull"]);
        let (status, body) = actix_rt::System::new().block_on(async {
            let mut res = world::client(None)
                .get(format!("{}/v2/library/nginx/blobs/{blob}", hf.url))
                .insert_header(("Authorization", format!("Bearer {token}")))
                .send()
                .await
                .unwrap();
            let body = res.body().await.unwrap();
            (
                res.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            )
        });
        assert_eq!(status, 502, "{proxy_url}: {body}");
        wait_for_log_line(&hf, |line| {
            line.contains("refusing to connect to 127.0.0.1")
        });
    }
    let log = tinyproxy.log_text();
    assert!(
        !log.contains(&format!("GET {}", w.cdn_url)),
        "the proxy was sent to the CDN on a private address:\n{log}"
    );
    let log = socks.log_text();
    assert!(
        !log.contains(&format!("127.0.0.1:{}", port_of(&w.cdn_url))),
        "the SOCKS proxy was sent to the CDN on a private address:\n{log}"
    );
}

/// pebble-challtestsrv (Let's Encrypt's test DNS server) on 127.0.0.1, answering every A query
/// with 127.0.0.1: names only it knows. Its other servers are switched off.
pub fn dns_server() -> (ManagedChild, u16) {
    let port = world::free_port();
    let management = world::free_port();
    let mut cmd = Command::new(world::require_tool("pebble-challtestsrv"));
    cmd.args([
        "-dns01",
        &format!("127.0.0.1:{port}"),
        "-management",
        &format!("127.0.0.1:{management}"),
        "-defaultIPv4",
        "127.0.0.1",
        "-defaultIPv6",
        "",
        "-http01",
        "",
        "-https01",
        "",
        "-tlsalpn01",
        "",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = world::spawn_child(cmd);
    // Its TCP listener answers with the UDP one.
    assert!(
        world::wait_for_port(("127.0.0.1", port), Duration::from_secs(10)),
        "pebble-challtestsrv did not start"
    );
    (child, port)
}

#[test]
fn a_registry_name_only_the_given_dns_server_knows_resolves() {
    let w = world::plain();
    let (_dns, port) = dns_server();
    let server = format!("127.0.0.1:{port}");
    let registry = w
        .registry_url
        .replace("127.0.0.1", "registry.hubferry.test");
    let hf = Hubferry::for_registry(
        w,
        &registry,
        &[&["--dns", server.as_str()][..], &FOLLOW_LOCAL_REDIRECTS].concat(),
    );
    pull_nginx(w, &hf);
    // Through a SOCKS5 proxy that is handed addresses, the names are resolved by that server
    // too.
    let proxy = microsocks();
    let proxy_url = with_login("socks5", proxy.port);
    let hf = via_proxy(w, &registry, &proxy_url, &["--dns", server.as_str()]);
    pull_nginx(w, &hf);
    proxy.wait_for_log(&format!(
        "connected to 127.0.0.1:{}",
        port_of(&w.registry_url)
    ));
}
