//! The container image, used as a user would: `make image` with a Docker daemon of the test's
//! own (Debian's dockerd, vfs storage, no bridge or iptables, nothing shared with any other
//! daemon on the machine), `docker run IMAGE --help`, then hubferry in the image as that
//! daemon's `registry-mirrors` entry: its health check turns healthy, `docker pull` gets the
//! test world's images through it (as the mirror and by name), `docker search` searches through
//! it, and `docker stop` ends it cleanly.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use crate::hubferry::{Hubferry, FOLLOW_LOCAL_REDIRECTS};
use crate::world::{self, ManagedChild};

const IMAGE: &str = "hubferry:integration-test";

/// A dockerd with its state, runtime files and socket under `dir`, whose only registry mirror
/// is `mirror`. Stopped with SIGTERM on drop, so that it stops its containers and containerd.
struct Dockerd {
    child: ManagedChild,
    host: String,
    dir: PathBuf,
}

impl Dockerd {
    fn start(dir: &Path, mirror: &str) -> Dockerd {
        let socket = dir.join("docker.sock");
        let host = format!("unix://{}", socket.display());
        let log = dir.join("dockerd.log");
        let mut cmd = Command::new(world::require_tool("dockerd"));
        cmd.args([
            "--storage-driver",
            "vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ])
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("dockerd.pid"))
        .args(["--host", &host, "--registry-mirror", mirror])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        let daemon = Dockerd {
            child: world::spawn_child(cmd),
            host,
            dir: dir.to_owned(),
        };
        assert!(
            world::wait_until(Duration::from_secs(60), || daemon
                .docker(&["info"])
                .status
                .success()),
            "dockerd did not start:\n{}",
            daemon.log()
        );
        daemon
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(world::require_tool("docker"));
        cmd.env("DOCKER_HOST", &self.host)
            // The client's own settings (credential helpers, contexts) stay out of the test.
            .env("DOCKER_CONFIG", self.dir.join("client"));
        cmd
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// `docker ARGS`, which must succeed; its standard output, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `docker inspect -f FORMAT OBJECT` (an image or a container), which must succeed.
    fn inspect(&self, format: &str, object: &str) -> String {
        self.ok(&["inspect", "-f", format, object])
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = self.docker(&["rm", "--force", "--volumes", "hubferry-image-test"]);
        // SIGTERM: dockerd then stops the containerd it started; SIGKILL (ManagedChild's own
        // drop, after a deadline) would leave that behind.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = world::wait_until(Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
    }
}

#[test]
fn the_image_runs_hubferry_as_a_docker_daemons_registry_mirror() {
    if !is_root() {
        eprintln!("skipping: dockerd needs root");
        return;
    }
    let w = world::plain();
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    let listen = format!("127.0.0.1:{}", world::free_port());
    let admin = format!("127.0.0.1:{}", world::free_port());
    let daemon = Dockerd::start(&dir, &format!("http://{listen}"));

    // The build fetches nothing: there is no registry to fetch from here.
    let mut make = Command::new("make");
    make.args(["-C", env!("CARGO_MANIFEST_DIR"), "image"])
        .arg(format!("IMAGE={IMAGE}"));
    // cargo gives this test its own CARGO_* variables and OUT_DIR. ring's build script asks to
    // be run again when those change, so a build under them would not be the one `make test`
    // made before the tests (image-binary), and would compile it all again beside the tests.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let cargos = key == "CARGO" || key.starts_with("CARGO_");
        if (cargos && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR") || key == "OUT_DIR" {
            make.env_remove(&*key);
        }
    }
    let build = make
        .env("DOCKER_HOST", &daemon.host)
        .env("DOCKER_CONFIG", dir.join("client"))
        .output()
        .expect("run make image");
    assert!(
        build.status.success(),
        "make image failed:\n{}\n{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let help = daemon.ok(&["run", "--rm", IMAGE, "--help"]);
    assert!(help.contains("--acme-domain"), "{help}");
    assert_eq!(daemon.inspect("{{.Config.User}}", IMAGE), "65532:65532");

    // As compose.yaml runs it (read-only root, no capabilities), on the host's network so it
    // reaches the test world on 127.0.0.1; the health check's own command, polled every second
    // instead of every 30.
    let mut run = vec![
        "run",
        "--detach",
        "--name",
        "hubferry-image-test",
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "--health-interval",
        "1s",
        IMAGE,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
    ];
    let upstream = Hubferry::world_args(w, &w.registry_url);
    run.extend(upstream.iter().map(String::as_str));
    run.extend(FOLLOW_LOCAL_REDIRECTS);
    daemon.ok(&run);
    let healthy = world::wait_until(Duration::from_secs(60), || {
        daemon
            .docker(&[
                "inspect",
                "-f",
                "{{.State.Health.Status}}",
                "hubferry-image-test",
            ])
            .stdout
            .starts_with(b"healthy")
    });
    assert!(
        healthy,
        "the container never turned healthy:\n{}\nhubferry:\n{}",
        daemon.inspect("{{json .State}}", "hubferry-image-test"),
        container_log(&daemon)
    );

    // `docker pull nginx`: the daemon asks its mirror, which is the image's hubferry; were it
    // to fail, the daemon would go to Docker Hub, which does not resolve here.
    let expected = &w.image("library/nginx").digest;
    let pulled = daemon.docker(&["pull", "nginx:latest"]);
    assert!(
        pulled.status.success(),
        "docker pull through the image's hubferry: {}\n{}\nhubferry:\n{}",
        String::from_utf8_lossy(&pulled.stdout),
        String::from_utf8_lossy(&pulled.stderr),
        container_log(&daemon)
    );
    assert_eq!(
        daemon.inspect("{{index .RepoDigests 0}}", "nginx:latest"),
        format!("nginx@{expected}")
    );
    assert!(
        w.registry_requests()
            .iter()
            .any(|r| r.uri == "/v2/library/nginx/manifests/latest"),
        "the world's registry was not asked for the manifest"
    );

    // By name, without the daemon's mirror setting: `docker pull mirror/someorg/tool:1.0`
    // (127.0.0.0/8 is an insecure registry to dockerd by default, so plain HTTP is fine).
    let by_name = format!("{listen}/someorg/tool:1.0");
    daemon.ok(&["pull", &by_name]);
    assert_eq!(
        daemon.inspect("{{index .RepoDigests 0}}", &by_name),
        format!("{listen}/someorg/tool@{}", w.image("someorg/tool").digest)
    );
    // `docker search mirror/nginx`: the daemon asks the mirror's /v1/search, which hubferry
    // takes to the search index.
    let found = daemon.ok(&[
        "search",
        "--format",
        "{{.Name}}",
        &format!("{listen}/nginx"),
    ]);
    assert!(
        found.lines().any(|name| name.ends_with("nginx")),
        "docker search found: {found}\nhubferry:\n{}",
        container_log(&daemon)
    );

    // SIGTERM from `docker stop`: hubferry shuts down by itself, well inside the grace period.
    daemon.ok(&["stop", "--time", "20", "hubferry-image-test"]);
    assert_eq!(
        daemon.inspect("{{.State.ExitCode}}", "hubferry-image-test"),
        "0",
        "{}",
        container_log(&daemon)
    );
    let _ = daemon.docker(&["image", "rm", "--force", IMAGE, "nginx:latest", &by_name]);
}

fn container_log(daemon: &Dockerd) -> String {
    let out = daemon.docker(&["logs", "hubferry-image-test"]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}
