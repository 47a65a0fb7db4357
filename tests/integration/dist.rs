//! `deploy/dist.sh`, which `make dist` runs on the release build: the archive holds what the
//! README says, its sums check, and the binary in it runs. Packed here with a stand-in binary
//! (the test build's is hundreds of MB of debug information: compressing it took a minute).

use std::{path::Path, process::Command};

use crate::world;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_release_archive_holds_the_binary_unit_config_license_and_readmes_with_their_sums() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    let out = dir.join("dist");
    let binary = dir.join("hubferry");
    std::fs::write(&binary, "#!/bin/sh\necho \"hubferry stand-in $*\"\n").unwrap();
    let archive = run(Command::new("sh")
        .arg(root.join("deploy/dist.sh"))
        .arg(&binary)
        .args(["9.9.9", "x86_64-unknown-linux-test"])
        .arg(&out));
    let name = "hubferry-9.9.9-x86_64-unknown-linux-test";
    assert_eq!(
        archive.trim(),
        out.join(format!("{name}.tar.gz")).to_str().unwrap()
    );
    run(Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{name}.tar.gz.sha256"))
        .current_dir(&out));
    let listing = run(Command::new("tar").arg("-tzvf").arg(archive.trim()));
    for file in [
        "hubferry",
        "install.sh",
        "hubferry.service",
        "hubferry.sysusers",
        "hubferry.toml.example",
        "LICENSE",
        "README.md",
        "README.zh-CN.md",
        "SHA256SUMS",
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!("{name}/{file}")))
            .unwrap_or_else(|| panic!("{file} is not in the archive:\n{listing}"));
        assert!(line.contains("root/root") || line.contains("0/0"), "{line}");
        let executable = line.starts_with("-rwxr-xr-x");
        assert_eq!(
            executable,
            file == "hubferry" || file == "install.sh",
            "{line}"
        );
    }
    run(Command::new("tar")
        .arg("-xzf")
        .arg(archive.trim())
        .current_dir(&dir));
    let unpacked = dir.join(name);
    run(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&unpacked));
    let help = run(Command::new(unpacked.join("hubferry")).arg("--help"));
    assert_eq!(help, "hubferry stand-in --help\n");
    // The example config is the systemd one, whose keys `make validate-deploy` checks.
    let config = std::fs::read_to_string(unpacked.join("hubferry.toml.example")).unwrap();
    assert_eq!(
        config,
        std::fs::read_to_string(root.join("deploy/systemd/hubferry.toml")).unwrap()
    );
}
