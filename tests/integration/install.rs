//! `deploy/install.sh` into a scratch root (`DESTDIR`): the binary, the unit, the user (through
//! systemd-sysusers), a config made from the options that hubferry itself accepts, the service
//! enabled; `systemd-analyze verify` on the result; a second run upgrades the binary and keeps
//! the config; `--uninstall` takes back what it put there. From the source tree with the test
//! build's binary, and from a release archive.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use crate::world;

fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Runs install.sh (the one at `script`) into `destdir`; its stdout, or a panic with both
/// streams.
fn install(script: &Path, destdir: &Path, args: &[&str]) -> String {
    let out = Command::new("sh")
        .arg(script)
        .args(args)
        .env("DESTDIR", destdir)
        .output()
        .expect("run install.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh {args:?} failed:\n{text}");
    text
}

fn scratch() -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    dir
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `systemd-analyze verify` of the installed unit: every directive known and valid, and
/// ExecStart's binary executable. systemd-analyze looks for the binary on this machine's own
/// file system (its `--root` wants a whole bootable tree), so the copy it checks names the one
/// in the scratch root; nothing else is changed.
fn verify(destdir: &Path) {
    let unit = read(destdir.join("etc/systemd/system/hubferry.service"));
    let binary = destdir.join("usr/local/bin/hubferry");
    let exec = "ExecStart=/usr/local/bin/hubferry ";
    assert!(unit.contains(exec), "{unit}");
    let checked = scratch().join("hubferry.service");
    std::fs::write(
        &checked,
        unit.replace(exec, &format!("ExecStart={} ", binary.display())),
    )
    .unwrap();
    let out = Command::new(world::require_tool("systemd-analyze"))
        .args(["--man=no", "verify"])
        .arg(&checked)
        .output()
        .expect("run systemd-analyze");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "systemd-analyze verify:\n{report}"
    );
}

#[test]
fn install_sh_installs_upgrades_and_uninstalls_into_a_scratch_root() {
    let root = root_dir();
    let script = root.join("deploy/install.sh");
    let destdir = scratch();
    let binary = env!("CARGO_BIN_EXE_hubferry");
    let said = install(
        &script,
        &destdir,
        &[
            "--binary",
            binary,
            "--domain",
            "mirror.example.com",
            "--domain",
            "hub.example.com",
            "--email",
            "ops@example.com",
        ],
    );
    assert!(said.contains("wrote"), "{said}");

    let installed = destdir.join("usr/local/bin/hubferry");
    assert_eq!(
        installed.metadata().unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        read(destdir.join("etc/systemd/system/hubferry.service")),
        read(root.join("deploy/systemd/hubferry.service"))
    );
    assert!(read(destdir.join("etc/passwd")).contains("hubferry:x:"));
    // Enabled: the symlink names the unit as the installed system will see it.
    let wanted = destdir.join("etc/systemd/system/multi-user.target.wants/hubferry.service");
    assert_eq!(
        std::fs::read_link(&wanted).unwrap(),
        Path::new("/etc/systemd/system/hubferry.service")
    );
    let config = read(destdir.join("etc/hubferry/hubferry.toml"));
    for line in [
        "listen = \"0.0.0.0:80\"",
        "public_url = \"https://mirror.example.com\"",
        "domains = [\"mirror.example.com\", \"hub.example.com\"]",
        "email = \"ops@example.com\"",
        "cache_dir = \"/var/lib/hubferry/acme\"",
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "{line} not in:\n{config}"
        );
    }
    // The config is one hubferry starts with.
    let check = Command::new(binary)
        .arg("--config")
        .arg(destdir.join("etc/hubferry/hubferry.toml"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    verify(&destdir);

    // Again, with another binary and other options: an upgrade. The binary is replaced, the
    // config (with the operator's edit) kept.
    let edited = format!("{config}# edited by the operator\n");
    std::fs::write(destdir.join("etc/hubferry/hubferry.toml"), &edited).unwrap();
    let newer = scratch().join("hubferry");
    std::fs::copy(binary, &newer).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&newer)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\0newer"))
        .unwrap();
    let said = install(
        &script,
        &destdir,
        &[
            "--binary",
            newer.to_str().unwrap(),
            "--public-url",
            "https://x.example.com",
        ],
    );
    assert!(said.contains("keeping"), "{said}");
    assert_eq!(read(destdir.join("etc/hubferry/hubferry.toml")), edited);
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&newer).unwrap()
    );
    let users = read(destdir.join("etc/passwd"));
    assert_eq!(
        users.lines().filter(|l| l.starts_with("hubferry:")).count(),
        1
    );
    verify(&destdir);

    // Uninstalled: what it put there is gone, the config and state stay; --purge takes those.
    install(&script, &destdir, &["--uninstall"]);
    for gone in [
        "usr/local/bin/hubferry",
        "etc/systemd/system/hubferry.service",
        "etc/systemd/system/multi-user.target.wants/hubferry.service",
        "etc/sysusers.d/hubferry.conf",
    ] {
        assert!(
            std::fs::symlink_metadata(destdir.join(gone)).is_err(),
            "{gone} is still there"
        );
    }
    for file in ["etc/passwd", "etc/group"] {
        let text = read(destdir.join(file));
        assert!(!text.lines().any(|l| l.starts_with("hubferry:")), "{text}");
    }
    assert!(destdir.join("etc/hubferry/hubferry.toml").exists());
    install(&script, &destdir, &["--uninstall", "--purge"]);
    assert!(!destdir.join("etc/hubferry").exists());
}

#[test]
fn install_sh_installs_from_a_release_archive() {
    let root = root_dir();
    let work = scratch();
    // A stand-in binary: packing the test build's takes a minute (debug information).
    let binary = work.join("hubferry");
    std::fs::write(&binary, "#!/bin/sh\necho \"hubferry stand-in $*\"\n").unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("sh")
        .arg(root.join("deploy/dist.sh"))
        .arg(&binary)
        .args(["9.9.9", "x86_64-unknown-linux-test"])
        .arg(work.join("dist"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let archive = String::from_utf8(out.stdout).unwrap();
    let destdir = work.join("root");
    // The archive's own install.sh, as a user runs it: unpacked, then `sh install.sh`.
    let said = install(
        &root.join("deploy/install.sh"),
        &destdir,
        &[
            "--archive",
            archive.trim(),
            "--public-url",
            "https://mirror.example.com",
        ],
    );
    assert!(said.contains("wrote"), "{said}");
    assert_eq!(
        std::fs::read(destdir.join("usr/local/bin/hubferry")).unwrap(),
        std::fs::read(&binary).unwrap()
    );
    let config = read(destdir.join("etc/hubferry/hubferry.toml"));
    assert!(config.contains("listen = \"127.0.0.1:5000\""), "{config}");
    assert!(
        config.contains("public_url = \"https://mirror.example.com\""),
        "{config}"
    );

    // A damaged archive is refused before anything is installed.
    let unpacked = work.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = |args: &[&str], dir: &Path| {
        let status = Command::new("tar")
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success());
    };
    tar(&["-xzf", archive.trim()], &unpacked);
    let name = "hubferry-9.9.9-x86_64-unknown-linux-test";
    std::fs::write(
        unpacked.join(name).join("hubferry"),
        "#!/bin/sh\necho evil\n",
    )
    .unwrap();
    tar(&["-czf", "../bad.tar.gz", name], &unpacked);
    let out = Command::new("sh")
        .arg(root.join("deploy/install.sh"))
        .args(["--archive", work.join("bad.tar.gz").to_str().unwrap()])
        .env("DESTDIR", work.join("other-root"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match SHA256SUMS"),
        "{out:?}"
    );
    assert!(!work.join("other-root/usr/local/bin/hubferry").exists());
}
