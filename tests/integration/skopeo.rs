//! skopeo, the real client: copies between a registry (the world's, or hubferry) and `dir:`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use sha2::{Digest, Sha256};

use crate::world;

/// Where skopeo talks to: `host` is `HOST:PORT`; `ca_file` trusts a test CA (HTTPS), else the
/// registry is plain HTTP.
pub struct Registry<'a> {
    pub host: &'a str,
    pub ca_file: Option<&'a Path>,
}

/// A fresh temp dir with an accept-anything signature policy, removed at exit.
fn workdir() -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    write_policy(&dir).unwrap();
    dir
}

fn write_policy(dir: &Path) -> std::io::Result<()> {
    std::fs::write(
        dir.join("policy.json"),
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
}

fn tls_args(cmd: &mut Command, side: &str, registry: &Registry, dir: &Path) {
    match registry.ca_file {
        Some(ca) => {
            let certs = dir.join(format!("{side}-certs"));
            std::fs::create_dir_all(&certs).unwrap();
            std::fs::copy(ca, certs.join("ca.crt")).unwrap();
            cmd.arg(format!("--{side}-cert-dir")).arg(certs);
        }
        None => {
            cmd.arg(format!("--{side}-tls-verify=false"));
        }
    }
}

fn run(cmd: Command, what: &str) {
    if let Err(output) = try_run(cmd) {
        panic!("skopeo {what} failed:\n{output}");
    }
}

/// Runs skopeo; on failure, its stdout and stderr.
fn try_run(mut cmd: Command) -> Result<(), String> {
    let out = cmd.output().expect("run skopeo");
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn skopeo(dir: &Path) -> Command {
    let mut cmd = Command::new(world::require_tool("skopeo"));
    cmd.arg("--policy").arg(dir.join("policy.json"));
    // Pin the platform so the child picked from an index does not depend on the host.
    cmd.args(["--override-os", "linux", "--override-arch", "amd64"]);
    cmd
}

/// `skopeo copy docker://HOST/reference dir:...`; returns the `dir:` path.
pub fn pull(registry: &Registry, reference: &str, extra: &[&str]) -> PathBuf {
    try_pull(registry, reference, extra, &workdir()).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`pull`], into `dir/image` of a directory the caller owns (and cleans up), returning
/// a failure instead of panicking: for the soak's pull loops.
pub fn try_pull(
    registry: &Registry,
    reference: &str,
    extra: &[&str],
    dir: &Path,
) -> Result<PathBuf, String> {
    write_policy(dir).map_err(|e| format!("write policy.json: {e}"))?;
    let out_dir = dir.join("image");
    let mut cmd = skopeo(dir);
    cmd.arg("copy");
    tls_args(&mut cmd, "src", registry, dir);
    cmd.args(extra)
        .arg(format!("docker://{}/{reference}", registry.host))
        .arg(format!("dir:{}", out_dir.display()));
    let out = cmd.output().map_err(|e| format!("run skopeo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "skopeo copy {reference} from {} failed:\n{}\n{}",
            registry.host,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out_dir)
}

/// `skopeo copy dir:... docker://HOST/reference`.
pub fn push(source: &Path, registry: &Registry, reference: &str, extra: &[&str]) {
    let dir = workdir();
    let mut cmd = skopeo(&dir);
    cmd.arg("copy");
    tls_args(&mut cmd, "dest", registry, &dir);
    cmd.args(extra)
        .arg(format!("dir:{}", source.display()))
        .arg(format!("docker://{}/{reference}", registry.host));
    run(cmd, &format!("copy {reference} to {}", registry.host));
}

pub fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    format!("sha256:{:x}", hasher.finalize())
}

/// skopeo's `dir:` layout stores blobs under their hex digest: each must hash to its name.
pub fn assert_blobs_copied(dir: &Path, blobs: &[world::Blob]) {
    if let Err(e) = check_blobs_copied(dir, blobs) {
        panic!("{e}");
    }
}

/// As [`assert_blobs_copied`], returning the first blob that is missing or wrong.
pub fn check_blobs_copied(dir: &Path, blobs: &[world::Blob]) -> Result<(), String> {
    for blob in blobs {
        let hex = blob.digest.strip_prefix("sha256:").unwrap();
        let path = dir.join(hex);
        let mut file =
            std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| format!("{}: {e}", path.display()))?;
        let got = format!("sha256:{:x}", hasher.finalize());
        if got != blob.digest {
            return Err(format!("{} hashes to {got}", path.display()));
        }
    }
    Ok(())
}
