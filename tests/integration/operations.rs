//! Running well: the admin listener (health, readiness, metrics that move with real traffic),
//! graceful shutdown with downloads in flight, and the JSON access log.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use sha2::{Digest, Sha256};

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    fakes,
    hubferry::{Hubferry, RawDownload},
    skopeo,
    world::{self},
};

pub fn get_text(url: &str) -> (u16, String) {
    actix_rt::System::new().block_on(async {
        let mut res = world::client(None).get(url).send().await.unwrap();
        let body = res.body().await.unwrap();
        (
            res.status().as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    })
}

/// The value of one sample line of the exposition, 0 when absent.
pub fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn health_readiness_and_metrics_move_with_a_pull() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &FOLLOW_LOCAL_REDIRECTS);
    let admin = hf.admin_url.clone().unwrap();
    assert_eq!(
        get_text(&format!("{admin}/healthz")),
        (200, "ok\n".to_owned())
    );
    assert_eq!(get_text(&format!("{admin}/readyz")).0, 200);
    // The admin endpoints are not on the mirror's port.
    assert_ne!(get_text(&format!("{}/metrics", hf.url)).0, 200);

    let nginx = w.image("library/nginx");
    let registry = skopeo::Registry {
        host: &hf.addr,
        ca_file: None,
    };
    skopeo::pull(&registry, &nginx.reference(), &[]);

    // A request is counted once its response is done, which may be just after skopeo has read
    // it: wait for the last blob's bytes to be counted.
    let blob_bytes: u64 = nginx.blobs.iter().map(|b| b.size).sum();
    let mut metrics = String::new();
    world::wait_until(Duration::from_secs(10), || {
        let (status, text) = get_text(&format!("{admin}/metrics"));
        assert_eq!(status, 200);
        metrics = text;
        sample(&metrics, "hubferry_response_body_bytes_total") >= blob_bytes as f64
    });
    assert!(
        sample(
            &metrics,
            r#"hubferry_requests_total{route="registry",status="2xx"}"#
        ) >= 3.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            r#"hubferry_requests_total{route="token",status="2xx"}"#
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            r#"hubferry_requests_total{route="registry",status="4xx"}"#
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "hubferry_response_body_bytes_total") >= blob_bytes as f64,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "hubferry_redirects_followed_total") >= nginx.blobs.len() as f64,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            r#"hubferry_upstream_response_seconds_count{upstream="registry",registry="docker.io"}"#
        ) >= 1.0
    );
    assert!(
        sample(
            &metrics,
            r#"hubferry_upstream_response_seconds_count{upstream="blob CDN",registry="docker.io"}"#
        ) >= 1.0
    );
    assert!(
        sample(
            &metrics,
            r#"hubferry_upstream_response_seconds_count{upstream="auth",registry="docker.io"}"#
        ) >= 1.0
    );
    assert_eq!(sample(&metrics, "hubferry_streams_in_flight"), 0.0);
}

#[test]
fn upstream_errors_and_docker_rate_limits_are_counted() {
    let upstream = fakes::upstream();
    let dead = format!("http://127.0.0.1:{}", world::free_port());
    let hf = Hubferry::start(&["--registry".into(), upstream, "--auth".into(), dead]);
    let admin = hf.admin_url.clone().unwrap();
    assert_eq!(
        get_text(&format!("{}/v2/library/nginx/manifests/latest", hf.url)).0,
        200
    );
    assert_eq!(get_text(&format!("{}/token?service=x", hf.url)).0, 502);
    assert_eq!(get_text(&format!("{}/v2/loop/manifests/a", hf.url)).0, 502);
    let (_, metrics) = get_text(&format!("{admin}/metrics"));
    assert_eq!(
        sample(&metrics, "hubferry_docker_ratelimit_limit"),
        100.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "hubferry_docker_ratelimit_remaining"),
        76.0
    );
    assert_eq!(
        sample(&metrics, "hubferry_docker_ratelimit_window_seconds"),
        21600.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"hubferry_upstream_errors_total{upstream="auth",registry="docker.io",kind="connect"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"hubferry_upstream_errors_total{upstream="registry",registry="docker.io",kind="redirect"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            r#"hubferry_requests_total{route="token",status="5xx"}"#
        ) >= 1.0
    );
}

#[test]
fn sigterm_lets_a_download_finish_and_refuses_new_connections() {
    let w = world::plain();
    let mut hf = Hubferry::for_world(
        w,
        &[&["--shutdown-grace", "60s"], &FOLLOW_LOCAL_REDIRECTS[..]].concat(),
    );
    let admin = hf.admin_url.clone().unwrap();
    let big = w.big_layer();
    let bearer = format!("Bearer {}", w.token(&["repository:library/big:pull"]));

    let path = format!("/v2/library/big/blobs/{}", big.digest);
    let mut download = RawDownload::start(&hf.addr, &path, &[("Authorization", &bearer)]);
    download.read_some(1 << 20);

    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(hf.child.id() as i32, libc::SIGTERM) };
    // Draining: not ready any more, and no new connections.
    assert!(
        world::wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(&hf.addr).is_err()
        }),
        "still accepting connections after SIGTERM"
    );
    assert_eq!(get_text(&format!("{admin}/readyz")).0, 503);

    // The download started before the signal completes, byte for byte.
    let res = download.finish();
    assert_eq!(res.body.len() as u64, big.size);
    assert_eq!(
        format!("sha256:{:x}", Sha256::digest(&res.body)),
        big.digest
    );

    // Then the process exits by itself.
    assert!(
        world::wait_until(Duration::from_secs(20), || {
            hf.child.try_wait().unwrap().is_some()
        }),
        "hubferry did not exit after the drain"
    );
    assert!(hf.log_text().contains("shutting down"));
}

#[test]
fn json_access_log_is_one_object_per_line() {
    let upstream = fakes::upstream();
    let hf = Hubferry::start(&[
        "--registry".into(),
        upstream,
        "--log-format".into(),
        "json".into(),
    ]);
    assert_eq!(
        get_text(&format!(
            "{}/v2/relative/x/manifests/start?ns=docker.io",
            hf.url
        ))
        .0,
        200
    );
    // The access record is written once the response is done, which may be just after the
    // client has read it.
    world::wait_until(Duration::from_secs(10), || {
        hf.log_text().contains("\"type\":\"access\"")
    });
    let log = hf.log_text();
    let mut access = None;
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if value["type"] == "access" {
            access = Some(value);
        }
    }
    let access = access.expect("an access record");
    assert_eq!(access["method"], "GET");
    assert_eq!(
        access["path"],
        "/v2/relative/x/manifests/start?ns=docker.io"
    );
    assert_eq!(access["status"], 200);
    assert_eq!(access["upstream"], "registry");
    assert_eq!(access["redirects"], 1);
    assert!(access["bytes"].as_u64().unwrap() > 0);
    assert!(access["duration_ms"].is_number() && access["time"].is_string());
}

/// Requests on one keep-alive connection that stop at the first one not answered within the
/// socket's read timeout: how many were answered.
fn keep_alive_gets(addr: &str, path: &str, count: usize, each_within: Duration) -> usize {
    use std::io::{BufRead, BufReader, Read, Write};
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(each_within)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    for answered in 0..count {
        if writer.write_all(request.as_bytes()).is_err() {
            return answered;
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return answered,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return answered;
        }
    }
    count
}

/// A log output nobody reads (a stuck log shipper, a full pipe) never stalls the mirror:
/// hubferry's stderr is a pipe that is never read, shrunk to one page, and thousands of
/// requests (more log lines than the pipe and hubferry's log queue hold together) are still
/// answered, each promptly; the lines that did not fit are counted as dropped.
#[test]
fn an_unread_log_pipe_never_stalls_requests() {
    use std::os::fd::AsRawFd;
    let hf = Hubferry::start_with_stderr_unread(&["--workers".into(), "1".into()]);
    let pipe = hf.child.stderr.as_ref().unwrap().as_raw_fd();
    // SAFETY: an fcntl on a pipe this process holds; the smallest size Linux allows.
    let resized = unsafe { libc::fcntl(pipe, libc::F_SETPIPE_SZ, 4096) };
    assert!(
        resized >= 4096,
        "F_SETPIPE_SZ: {}",
        std::io::Error::last_os_error()
    );
    // The first requests fill the pipe; a logger that waited for it would stall from then on.
    let requests = 6000;
    let answered = keep_alive_gets(&hf.addr, "/v2/_catalog", requests, Duration::from_secs(10));
    assert_eq!(
        answered,
        requests,
        "request {} got no answer within 10s: the worker is stuck writing its log",
        answered + 1
    );
    // Each request is counted once its response is done, which may be just after it was read.
    let admin = hf.admin_url.clone().unwrap();
    let mut metrics = String::new();
    world::wait_until(Duration::from_secs(10), || {
        metrics = get_text(&format!("{admin}/metrics")).1;
        sample(
            &metrics,
            r#"hubferry_requests_total{route="catalog",status="4xx"}"#,
        ) >= requests as f64
    });
    assert!(
        sample(&metrics, "hubferry_log_lines_dropped_total") > 0.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            r#"hubferry_requests_total{route="catalog",status="4xx"}"#
        ) >= requests as f64,
        "{metrics}"
    );
}

/// hubferry with exactly `args` (and `env`), its log in a file: no listener chosen for it.
fn start_as_given(args: &[&str], env: &[(&str, &str)]) -> (world::ManagedChild, PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    let log = dir.join("hubferry.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubferry"));
    cmd.args(args)
        .env_remove("HUBFERRY_KEEP_WORLD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (key, value) in env {
        cmd.env(key, value);
    }
    (world::spawn_child(cmd), log)
}

/// Waits for hubferry's mirror port (its admin listener is bound before it), or says why not.
fn wait_until_serving(listen: &str, log: &Path) {
    assert!(
        world::wait_for_port(listen, Duration::from_secs(20)),
        "hubferry did not start; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// On a host that runs node_exporter (on 9100, its port), hubferry starts with its defaults and
/// serves /healthz on its own default admin port.
#[test]
fn the_default_admin_listener_starts_beside_node_exporter() {
    // node_exporter's port, held for the test (unless something already holds it).
    let _node_exporter = TcpListener::bind("127.0.0.1:9100");
    assert!(
        TcpStream::connect("127.0.0.1:9100").is_ok(),
        "port 9100 should be held"
    );
    let admin = hubferry::config::DEFAULT_ADMIN_LISTEN;
    assert!(
        TcpListener::bind(admin).is_ok(),
        "{admin} is taken on this machine: the test needs the default admin port free"
    );
    let listen = format!("127.0.0.1:{}", world::free_port());
    let (_hf, log) = start_as_given(
        &[
            "--listen",
            &listen,
            "--registry",
            "http://127.0.0.1:9",
            "--workers",
            "1",
        ],
        &[],
    );
    wait_until_serving(&listen, &log);
    let (status, body) = get_text(&format!("http://{admin}/healthz"));
    assert_eq!(status, 200, "{body}");
}

/// `docker run IMAGE --admin-listen ADDR`: the image's entrypoint and environment (read from
/// deploy/Dockerfile), then the user's flags. The image must set the admin address in the
/// environment, which a flag overrides; as a flag it would be given twice, which is refused.
#[test]
fn the_images_admin_address_gives_way_to_a_flag() {
    let dockerfile = include_str!("../../deploy/Dockerfile");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let entrypoint = instructions
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> =
        serde_json::from_str(entrypoint).expect("ENTRYPOINT in exec form");
    assert_eq!(entrypoint[0], "/usr/local/bin/hubferry");
    let env: Vec<(&str, &str)> = instructions
        .iter()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let image_admin = env
        .iter()
        .find(|(k, _)| *k == "HUBFERRY_ADMIN_LISTEN")
        .expect("the image sets HUBFERRY_ADMIN_LISTEN");
    assert!(
        image_admin.1.parse::<SocketAddr>().is_ok(),
        "{image_admin:?}"
    );

    let listen = format!("127.0.0.1:{}", world::free_port());
    let admin = format!("127.0.0.1:{}", world::free_port());
    let mut args: Vec<&str> = entrypoint[1..].iter().map(String::as_str).collect();
    args.extend([
        "--admin-listen",
        &admin,
        "--listen",
        &listen,
        "--registry",
        "http://127.0.0.1:9",
        "--workers",
        "1",
    ]);
    let (_hf, log) = start_as_given(&args, &env);
    wait_until_serving(&listen, &log);
    let (status, body) = get_text(&format!("http://{admin}/healthz"));
    assert_eq!(status, 200, "{body}");
}

/// `hubferry --healthcheck` (the image's and compose.yaml's health check, with no curl in the
/// image) asks the running hubferry's admin listener: 0 while it answers, 1 once it is gone.
#[test]
fn healthcheck_asks_the_running_admin_listener() {
    let hf = Hubferry::start_with(&[]);
    let admin = hf
        .admin_url
        .clone()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let healthcheck = |admin: &str| {
        Command::new(env!("CARGO_BIN_EXE_hubferry"))
            .args(["--healthcheck", "--admin-listen", admin])
            .output()
            .unwrap()
    };
    let out = healthcheck(&admin);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // On all interfaces, as in the image: asked on loopback.
    let port = admin.rsplit(':').next().unwrap();
    let out = healthcheck(&format!("0.0.0.0:{port}"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    drop(hf);
    let out = healthcheck(&admin);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unhealthy"),
        "{out:?}"
    );
}
