//! containerd's own client (`ctr`, with a private containerd daemon) pulling through hubferry
//! as the `hosts.toml` mirror of two registries: every request carries `?ns=<registry>`.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    hubferry::Hubferry,
    world::{self, ManagedChild},
};

/// A containerd daemon of its own (root, state and socket in `dir`; no CRI), for `ctr`.
fn containerd(dir: &Path) -> (ManagedChild, String) {
    let socket = dir.join("containerd.sock");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(world::require_tool("containerd"));
    cmd.arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap());
    let child = world::spawn_child(cmd);
    assert!(
        world::wait_until(Duration::from_secs(20), || socket.exists()),
        "containerd did not start: {}",
        std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
    );
    (child, socket.display().to_string())
}

fn hosts_toml(hosts: &Path, registry: &str, mirror: &str) {
    let dir = hosts.join(registry);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"https://{registry}\"\n\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
}

#[test]
fn ctr_pulls_two_registries_through_one_mirror() {
    if not_root() {
        return;
    }
    let w = world::plain();
    let second = world::second();
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    let file = dir.join("hubferry.toml");
    std::fs::write(
        &file,
        format!(
            "[[upstreams]]\nname = \"ghcr.io\"\nregistry = \"{}\"\n",
            second.url
        ),
    )
    .unwrap();
    let hf = Hubferry::for_world(
        w,
        &[
            &["--config", file.to_str().unwrap()],
            &FOLLOW_LOCAL_REDIRECTS[..],
        ]
        .concat(),
    );
    let hosts = dir.join("certs.d");
    hosts_toml(&hosts, "docker.io", &hf.addr);
    hosts_toml(&hosts, "ghcr.io", &hf.addr);
    let (_daemon, socket) = containerd(&dir);

    for (reference, digest) in [
        (
            "docker.io/library/nginx:latest",
            w.image("library/nginx").digest.clone(),
        ),
        (
            "ghcr.io/owner/image:v1",
            second.image("owner/image").digest.clone(),
        ),
    ] {
        let out = Command::new(world::require_tool("ctr"))
            .args(["--address", &socket, "--namespace", "hubferry-test"])
            .args([
                "content",
                "fetch",
                "--platform",
                "linux/amd64",
                "--hosts-dir",
            ])
            .arg(&hosts)
            .arg(reference)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr content fetch {reference}: {}\n{}\nhubferry:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            hf.log_text()
        );
        let listed = Command::new(world::require_tool("ctr"))
            .args(["--address", &socket, "--namespace", "hubferry-test"])
            .args(["content", "ls", "-q"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&listed.stdout).contains(&digest),
            "{reference}: {digest} not in the content store"
        );
    }
    // containerd named the registry on every request, and each registry got its own.
    assert!(w
        .registry_requests()
        .iter()
        .any(|r| r.uri == "/v2/library/nginx/manifests/latest?ns=docker.io"));
    assert!(second
        .registry_requests()
        .iter()
        .any(|r| r.uri.starts_with("/v2/owner/image/") && r.uri.ends_with("?ns=ghcr.io")));
}

/// Managed auth with containerd's own token client: with `--user` it asks
/// hubferry's `/token` with the OAuth2 password form, and hubferry pulls Docker Hub with its
/// own account and the second registry (no account) with anonymous tokens from the realm that
/// registry names.
#[test]
fn ctr_logs_in_to_a_managed_mirror() {
    if not_root() {
        return;
    }
    let _one = crate::managed_auth::one_managed_mirror_at_a_time();
    let w = world::plain();
    let second = world::second();
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    let hash = bcrypt::hash("ctr-client-pw", 5).unwrap();
    std::fs::write(dir.join("htpasswd"), format!("ctruser:{hash}\n")).unwrap();
    std::fs::write(dir.join("upstream-password"), world::PASSWORD).unwrap();
    let file = dir.join("hubferry.toml");
    std::fs::write(
        &file,
        format!(
            "[auth]\nmode = \"managed\"\nanonymous = false\nhtpasswd = \"{htpasswd}\"\n\
             [upstream]\nusername = \"{user}\"\npassword_file = \"{password}\"\n\
             [[upstreams]]\nname = \"ghcr.io\"\nregistry = \"{second}\"\n",
            htpasswd = dir.join("htpasswd").display(),
            user = world::USERNAME,
            password = dir.join("upstream-password").display(),
            second = second.url,
        ),
    )
    .unwrap();
    let hf = Hubferry::for_world(
        w,
        &[
            &["--config", file.to_str().unwrap()],
            &FOLLOW_LOCAL_REDIRECTS[..],
        ]
        .concat(),
    );
    let hosts = dir.join("certs.d");
    hosts_toml(&hosts, "docker.io", &hf.addr);
    hosts_toml(&hosts, "ghcr.io", &hf.addr);
    let (_daemon, socket) = containerd(&dir);
    let fetch = |reference: &str, user: &str| {
        Command::new(world::require_tool("ctr"))
            .args(["--address", &socket, "--namespace", "hubferry-managed"])
            .args([
                "content",
                "fetch",
                "--platform",
                "linux/amd64",
                "--user",
                user,
            ])
            .arg("--hosts-dir")
            .arg(&hosts)
            .arg(reference)
            .output()
            .unwrap()
    };
    for reference in ["docker.io/private/secret:latest", "ghcr.io/owner/image:v1"] {
        let out = fetch(reference, "ctruser:ctr-client-pw");
        assert!(
            out.status.success(),
            "ctr content fetch {reference}: {}\n{}\nhubferry:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            hf.log_text()
        );
    }
    let log = hf.log_text();
    assert!(log.contains("issued a token to user:ctruser"), "{log}");
    // containerd with credentials uses the OAuth2 form (grant_type=password).
    assert!(log.contains("\"POST /token HTTP/1.1\" 200"), "{log}");
    assert!(!log.contains(world::PASSWORD) && !log.contains("ctr-client-pw"));
    let refused = fetch("docker.io/library/nginx:latest", "ctruser:wrong");
    assert!(!refused.status.success(), "a wrong password pulled");
}

/// containerd needs root (its content store and mounts); elsewhere this test says so and passes.
fn not_root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        eprintln!("skipping: containerd needs root");
    }
    !root
}
