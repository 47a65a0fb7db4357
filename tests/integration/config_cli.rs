//! Invalid configuration stops start-up with one readable line naming the key.

use std::process::Command;

fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubferry"));
    cmd.args(args).args(["--listen", "127.0.0.1:0"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run hubferry");
    assert_eq!(out.status.code(), Some(2), "should refuse {args:?} {env:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line please: {stderr}"
    );
    stderr
}

#[test]
fn bad_settings_are_named() {
    assert!(refused(&["--workers", "0"], &[]).contains("workers"));
    assert!(refused(&["--workers", "many"], &[]).contains("workers"));
    assert!(
        refused(&[], &[("HUBFERRY_UPSTREAM__REGISTRY", "not a url")]).contains("upstream.registry")
    );
    assert!(refused(&["--index", "ftp://x"], &[]).contains("upstream.index"));
    assert!(refused(&["--idle-timeout", "forever"], &[]).contains("timeouts.body_idle"));
    assert!(
        refused(&[], &[("HUBFERRY_REDIRECT__ALLOW_PRIVATE", "maybe")])
            .contains("redirect.allow_private")
    );
    assert!(refused(&["--config", "/nonexistent.toml"], &[]).contains("--config"));
    assert!(
        refused(&["--server-name", "https://mirror.example.com"], &[]).contains("server_names")
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hubferry.toml");
    std::fs::write(&file, "[upstream]\nregistri = \"http://x\"\n").unwrap();
    assert!(refused(&["--config", file.to_str().unwrap()], &[]).contains("registri"));
}

/// Three bad settings, from a flag, the environment and the file: the one line names all
/// three, so that one edit fixes them rather than one restart per mistake.
#[test]
fn every_bad_setting_is_named_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hubferry.toml");
    std::fs::write(&file, "[timeouts]\nconnect = \"soon\"\n").unwrap();
    let line = refused(
        &["--config", file.to_str().unwrap(), "--workers", "0"],
        &[("HUBFERRY_LOG_FORMAT", "xml")],
    );
    for key in ["workers: ", "timeouts.connect: ", "log_format: "] {
        assert!(line.contains(key), "{key} missing: {line}");
    }
}

/// Kubernetes gives every pod of a namespace with a Service called `hubferry` variables such as
/// `HUBFERRY_SERVICE_HOST` and `HUBFERRY_PORT`: they must not stop start-up. Each is named in a
/// warning and left out; a misspelt key in the file is still refused (above).
#[test]
fn kubernetes_service_variables_do_not_stop_start_up() {
    let hf = crate::hubferry::Hubferry::start_with_env(
        &[],
        &[
            ("HUBFERRY_SERVICE_HOST", "10.96.0.12"),
            ("HUBFERRY_SERVICE_PORT", "5000"),
            ("HUBFERRY_PORT", "tcp://10.96.0.12:5000"),
            ("HUBFERRY_PORT_5000_TCP", "tcp://10.96.0.12:5000"),
        ],
    );
    let log = hf.log_text();
    assert!(
        log.contains(
            "ignoring environment variables that name no setting: HUBFERRY_PORT, \
             HUBFERRY_PORT_5000_TCP, HUBFERRY_SERVICE_HOST, HUBFERRY_SERVICE_PORT"
        ),
        "{log}"
    );
}

#[test]
fn help_lists_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_hubferry"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config",
        "--listen",
        "--workers",
        "--public-url",
        "--server-name",
        "--registry",
        "--auth",
        "--index",
        "--ca-file",
        "--connect-timeout",
        "--response-timeout",
        "--idle-timeout",
        "--max-redirects",
        "--allow-private-redirects",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn check_validates_and_exits_without_serving() {
    // A port that is taken: --check must not try to bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_hubferry"))
        .args(["--check", "--listen", &addr])
        .output()
        .expect("run hubferry");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hubferry: the configuration is valid"
    );
    let problem = refused(
        &[
            "--check",
            "--tls-listen",
            "127.0.0.1:5443",
            "--acme-domain",
            "*.example.com",
        ],
        &[],
    );
    assert!(problem.contains("tls.acme.domains"), "{problem}");
}
